"""Fuzz: malformed and hostile webhooks thrown at the real ingest over HTTP.

Hypothesis builds requests of every kind Sipuni could send, and many it never would: GET
query strings (raw, with broken %-escapes and repeated keys), POST forms, multipart bodies,
JSON of every shape (objects, arrays, scalars, deep nesting, repeated keys, NaN, lone
surrogates), bodies that are not what their content type says, unknown charsets, random field
names and values (huge, unicode, control characters, NUL, injection-like strings), random
event numbers, call ids and timestamps, right and wrong tokens. Every answer must be a
well-formed one: no 5xx; a 2xx is exactly ``{"success": true}``; anything else is
``{"success": false, "error": <non-empty text>}``; and the service still answers afterwards.

The requests run against the service in-process (pytest-aiohttp's ``aiohttp_client`` with
``tests.harness.app_for``) on the test's event loop; Hypothesis drives them from a worker
thread, so its synchronous ``@given`` can wait for each answer.

Bugs found here and not fixed yet go in ``KNOWN_BUGS`` with a reproduction marked
``xfail(strict=True)``; the fuzz run then counts (rather than fails on) that bug's wrong
answer. The seven it found so far are fixed; their reproductions stay as regression tests.

Rerun: ``.venv/bin/pytest tests/core/test_ingest_fuzz.py -s`` (``-s`` prints the count);
``FUZZ_EXAMPLES=5000`` tries more inputs, ``FUZZ_RANDOM=1`` other ones on each run.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import os
import string
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yarl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector_core.appkeys import STORE
from connector_core.simulator import scenarios
from tests.harness import TOKEN, app_for, make_config

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "1000"))
MAX_BODY = 65536  # the service's default server.max_body_bytes

SIPUNI_FIELDS = [
    "event", "call_id", "timestamp", "src_num", "src_type", "dst_num", "dst_type",
    "short_src_num", "short_dst_num", "status", "call_start_timestamp",
    "call_answer_timestamp", "call_record_link", "channel", "treeName", "treeNumber",
    "pbxdstnum", "user_id", "last_called", "transfer_from", "callbackId", "is_inner_call",
]  # fmt: skip
HOSTILE = [
    "' OR '1'='1", "1; DROP TABLE inbox;--", "<script>alert(1)</script>", "${jndi:ldap://x/a}",
    "{{7*7}}", "{call_id}", "%s%s%n", "../../../../etc/passwd", "\x00", "a\x00b",
    "\r\nX-Injected: 1", "javascript:alert(1)", "http://127.0.0.1:1/rec.mp3",
    "file:///etc/passwd", "NaN", "Infinity", "-0", "1e309", "0x1F", "١٢٣٤", "²", "𝟙𝟚",
    "\u202eevil", "\ufeff1", "😀" * 10, "Ω" * 600, "9" * 19, "-1", "", " ", "true", "null",
    "[]", "{}", "1717171700.52001\n", "%00", "%zz", "+", "=", "&", "\x7f", "\x1b[31m",
]  # fmt: skip
DIGITS = "0123456789" + "²³¹١٢٣٤٥٦٧٨٩٠߀०𝟘①"
CONTENT_TYPES = [
    "application/json", "application/json; charset=utf-8", "application/json; charset=latin-1",
    "application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=utf-8",
    "multipart/form-data", "multipart/form-data; boundary=xyz", "text/plain", "",
    "application/xml", "application/octet-stream", "application/json; charset=bogus",
    "application/x-www-form-urlencoded; charset=bogus", "text/html; charset=utf-16",
    "application/JSON", "application/json;;;", "*/*",
]  # fmt: skip
HEADER_TEXT = string.ascii_letters + string.digits + " /;=-+.*"

# --- what a request is, and which known bug a 5xx for it would be ------------------------


@dataclass
class Fuzzed:
    method: str
    path: str
    query: str = ""  # raw, already %-encoded
    body: bytes | aiohttp.FormData | None = None
    content_type: str | None = None
    tags: set[str] = field(default_factory=set)  # facts the known-bug checks look at


def _charset(content_type: str | None) -> str | None:
    for part in (content_type or "").split(";")[1:]:
        name, _, value = part.strip().partition("=")
        if name.lower() == "charset":
            return value.strip()
    return None


def _known_charset(name: str) -> bool:
    try:
        codecs.lookup(name)
    except LookupError:
        return False
    return True


def _parsable_content_type(content_type: str | None) -> bool:
    try:
        aiohttp.helpers.parse_content_type(content_type or "")
    except Exception:
        return False
    return True


def _json_strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (k, *_json_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _json_strings(v)]
    return []


def _server_error(status: int, raw: bytes) -> bool:
    return status >= 500


def _router_404(status: int, raw: bytes) -> bool:
    return status == 404 and raw.startswith(b"404: Not Found")


# Each entry: bug -> (does this request belong to it, is this answer that bug's wrong answer).
# Keep them narrow: any other wrong answer fails the run. Remove an entry when its
# reproduction below passes.
# None is open: the seven this fuzz found (see REPRODUCTIONS below) are fixed. A new one goes
# here, narrow, with its reproduction marked xfail(strict=True), until it is fixed.
KNOWN_BUGS: dict[str, tuple[Any, Any]] = {}


def known_bug(request: Fuzzed, status: int, raw: bytes) -> str | None:
    for bug, (belongs, wrong_answer) in KNOWN_BUGS.items():
        if belongs(request) and wrong_answer(status, raw):
            return bug
    return None


# --- strategies ---------------------------------------------------------------------------

names = st.one_of(
    st.sampled_from(SIPUNI_FIELDS),
    st.text(max_size=20),
    st.sampled_from(HOSTILE),
    st.sampled_from(["roistat", "utm_source", "event[]", "call_id[0]", "a" * 200]),
)
values = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(max_size=30),
    st.text(alphabet=DIGITS, min_size=1, max_size=12),
    st.integers(-(10**20), 10**20).map(str),
    st.sampled_from(["1", "2", "3", "4", "5", "12", "0", "01", "1.0", " 2 ", "99999"]),
    st.integers(946_684_700, 4_102_444_900).map(str),
    st.text(min_size=500, max_size=600),
    st.integers(0, 3).map(lambda k: "x" * (10 ** (k + 2))),
)
# The fields that decide what an event is get values aimed at their parsers.
KEY_FIELDS = [
    "event", "call_id", "timestamp", "src_type", "dst_type", "status",
    "call_start_timestamp", "call_answer_timestamp", "call_record_link",
]  # fmt: skip
KEY_VALUES = [
    "1", "2", "3", "4", "5", "12", "0", "-1", "1.0", " 3 ", "0001", "12345", "²", "①", "١",
    "３", "1²", "1e3", "ANSWER", "answer", "NO ANSWER", "https://x/r.mp3", "ftp://x",
    "1717171700", "1717171700.5", "999999999999", "1717171700.52001", "a.b:c_d-e", "x" * 129,
]  # fmt: skip
BODY_KINDS = [
    "form", "json-object", "json-any", "json-dupes", "json-deep", "multipart", "raw-multipart",
    "bytes", "empty",
]  # fmt: skip
key_values = st.one_of(
    st.sampled_from(KEY_VALUES),
    st.text(alphabet=DIGITS, min_size=1, max_size=5),
    st.text(alphabet=string.ascii_letters + string.digits + "._:-/ ", max_size=130),
    values,
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    values,
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(names, children, max_size=4),
    max_leaves=12,
)
surrogates = st.text(alphabet=st.characters(categories=["Cs"]), min_size=1, max_size=3)
tokens = st.one_of(
    st.just(TOKEN),
    st.just(TOKEN),
    st.just(TOKEN),
    st.just(TOKEN),
    st.just(TOKEN),
    st.just(TOKEN[:-1]),
    st.just(TOKEN + "0"),
    st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=1, max_size=40),
    st.text(min_size=1, max_size=30).filter(lambda t: t not in (".", "..")),
)


@st.composite
def field_pairs(draw: st.DrawFn) -> list[tuple[str, str]]:
    """Sipuni-like fields, mutated: a real event with some fields changed, added or dropped."""
    pairs: list[tuple[str, str]] = []
    if draw(st.booleans()):
        kind = draw(st.sampled_from(scenarios.catalogue()))
        event = dict(draw(st.sampled_from(kind.events)))
        for name in draw(st.lists(st.sampled_from(sorted(event)), max_size=3)):
            event.pop(name, None)
        pairs = list(event.items())
    pairs += draw(st.lists(st.tuples(st.sampled_from(KEY_FIELDS), key_values), max_size=3))
    pairs += draw(st.lists(st.tuples(names, values), max_size=6))
    if draw(st.integers(0, 9)) == 0:  # past the limit of unknown fields
        pairs += [(f"extra{i}", "v") for i in range(draw(st.integers(45, 60)))]
    return pairs


def _encode_pairs(pairs: list[tuple[str, str]], *, raw: bool) -> str:
    if raw:  # hand-made, not necessarily valid %-encoding
        return "&".join(f"{k}={v}" if v else k for k, v in pairs)
    return urllib.parse.urlencode(pairs, errors="surrogatepass")


def _query_safe(text: str) -> str:
    """A raw query string the HTTP client can put on the request line as it is."""
    return "".join(c if 0x21 <= ord(c) < 0x7F and c != "#" else "%20" for c in text)


@st.composite
def requests(draw: st.DrawFn) -> Fuzzed:
    token = draw(tokens)
    path = "/sipuni/" + urllib.parse.quote(token, safe="") + draw(st.sampled_from(["", "/"]))
    method = draw(st.sampled_from(["GET", "POST"]))
    request = Fuzzed(method, path)
    if "{" in token or "}" in token:
        request.tags.add("brace")
    pairs = draw(field_pairs())
    tag_pairs(request, pairs)
    kinds = ["none", "encoded", "raw"] if method == "POST" else ["encoded", "encoded", "raw"]
    query_kind = draw(st.sampled_from(kinds))
    if query_kind == "encoded":
        request.query = _encode_pairs(pairs, raw=False)
    elif query_kind == "raw":
        request.query = _query_safe(_encode_pairs(pairs, raw=True))
    request.query = request.query[:4000]  # the request line stays under aiohttp's 8 KB
    if method == "POST":
        draw_body(draw, request)
    return request


def draw_body(draw: st.DrawFn, request: Fuzzed) -> None:
    pairs = draw(field_pairs())
    tag_pairs(request, pairs)
    kind = draw(st.sampled_from(BODY_KINDS))
    any_type = st.one_of(
        st.sampled_from(CONTENT_TYPES), st.text(alphabet=HEADER_TEXT, max_size=40), st.none()
    )
    content_type = draw(any_type)
    if kind == "form":
        text = _encode_pairs(pairs, raw=draw(st.booleans()))
        request.body = text.encode("utf-8", "surrogatepass")
        content_type = draw(st.sampled_from(["application/x-www-form-urlencoded", content_type]))
    elif kind.startswith("json"):
        request.body = draw_json(draw, request, kind, pairs).encode("utf-8", "surrogatepass")
        content_type = draw(st.sampled_from(["application/json", content_type]))
    elif kind == "multipart":
        form = aiohttp.FormData()
        for name, value in pairs:  # aiohttp refuses control characters in part headers
            safe = "".join(c if c.isprintable() else "_" for c in name)
            form.add_field(
                safe.encode("utf-8", "replace").decode(), value.encode("utf-8", "replace").decode()
            )
        request.body, content_type = form, None
    elif kind == "raw-multipart":
        request.body = draw(st.binary(max_size=200))
        multipart = "multipart/form-data"
        content_type = draw(st.sampled_from([multipart, f"{multipart}; boundary=xyz"]))
    elif kind == "bytes":
        sizes = st.integers(MAX_BODY - 10, MAX_BODY + 10)
        request.body = draw(st.binary(max_size=300) | sizes.map(lambda n: b"a=" + b"x" * n))
    else:
        request.body = b""
    request.content_type = content_type
    if kind != "multipart" and (content_type or "").lower().startswith("multipart/form-data"):
        request.tags.add("raw-multipart")  # bytes declared multipart: not a valid multipart body


def draw_json(draw: st.DrawFn, request: Fuzzed, kind: str, pairs: list[tuple[str, str]]) -> str:
    if kind == "json-dupes":  # every key twice
        return "{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in pairs * 2) + "}"
    if kind == "json-deep":
        depth = draw(st.integers(1, 5000))
        opener = draw(st.sampled_from(["[", '{"a":']))
        request.tags.add("deep" if depth > 900 else "shallow")
        return opener * depth + "1" + ("]" if opener == "[" else "}") * depth
    document: Any
    if kind == "json-object":
        document = dict(pairs)
        document.update(draw(st.dictionaries(names, json_values, max_size=4)))
        if draw(st.booleans()):
            document[draw(st.sampled_from(SIPUNI_FIELDS))] = draw(surrogates)
    else:
        document = draw(json_values)
    if any(_has_surrogate(s) for s in _json_strings(document)):
        request.tags.add("surrogate")
    return json.dumps(document, ensure_ascii=draw(st.booleans()))


def _has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)


def tag_pairs(request: Fuzzed, pairs: list[tuple[str, str]]) -> None:
    for name, value in pairs:
        if _has_surrogate(name) or _has_surrogate(value):
            request.tags.add("surrogate")
        text = value.strip()
        if name == "event" and text.isdigit() and not text.isdecimal():
            request.tags.add("nondecimal")


# --- running ------------------------------------------------------------------------------


async def send(client: Any, request: Fuzzed) -> tuple[int, bytes]:
    url = yarl.URL(request.path + ("?" + request.query if request.query else ""), encoded=True)
    headers = {} if request.content_type is None else {"Content-Type": request.content_type}
    async with client.request(request.method, url, data=request.body, headers=headers) as r:
        return r.status, await r.read()


def check_answer(status: int, raw: bytes) -> None:
    assert status < 500, (status, raw[:300])
    body = json.loads(raw)
    if 200 <= status < 300:
        assert body == {"success": True}, body
    else:
        assert body["success"] is False, body
        assert isinstance(body["error"], str) and body["error"].strip(), body
        assert set(body) == {"success", "error"}, body


@pytest.fixture
async def service(tmp_path: Path, test_plugins_dir: Path, aiohttp_client):
    config, host = make_config(tmp_path, '[accounts.012345.integrations.rec]\nplugin = "recorder"')
    app = app_for(config, host)
    return app, await aiohttp_client(app)


@pytest.mark.slow
async def test_hostile_webhooks_never_get_a_5xx_or_a_malformed_answer(
    service, record_property
) -> None:
    app, client = service
    loop = asyncio.get_running_loop()
    tried: Counter[str] = Counter()
    known: Counter[str] = Counter()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=os.environ.get("FUZZ_RANDOM") != "1",  # fixed inputs unless asked
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(requests())
    def fuzz(request: Fuzzed) -> None:
        status, raw = asyncio.run_coroutine_threadsafe(send(client, request), loop).result(30)
        tried[f"{request.method} {status // 100}xx"] += 1
        if (bug := known_bug(request, status, raw)) is not None:
            known[bug] += 1
            return
        check_answer(status, raw)

    started = time.monotonic()
    await asyncio.to_thread(fuzz)
    elapsed = time.monotonic() - started

    total = sum(tried.values())
    assert total >= EXAMPLES  # every example was sent (Hypothesis may add a few more)
    assert tried["GET 2xx"] and tried["POST 2xx"] and tried["GET 4xx"] and tried["POST 4xx"]
    health = await client.get("/healthz")
    assert health.status == 200
    reply = await client.get(f"/sipuni/{TOKEN}", params=scenarios.inbound_answered().events[0])
    assert await reply.json() == {"success": True}  # still takes webhooks
    stats = await app[STORE].stats()
    record_property("fuzz_inputs", total)
    record_property("fuzz_known_bug_answers", dict(known))
    print(
        f"\nfuzz: {total} requests in {elapsed:.1f} s: {dict(sorted(tried.items()))}; "
        f"stored {stats['inbox_total']}, rejected {stats['rejected']}; "
        f"wrong answers from known bugs: {dict(known) or 'none'}"
    )


# --- what the fuzz found (all fixed): one reproduction each, kept as regression tests -----

REPRODUCTIONS = {
    "non-decimal digits in 'event' (int('²') raises ValueError)": Fuzzed(
        "GET", f"/sipuni/{TOKEN}", query="event=%C2%B2&call_id=1"
    ),
    "JSON nested deeper than the recursion limit (RecursionError)": Fuzzed(
        "POST", f"/sipuni/{TOKEN}", body=b"[" * 5000, content_type="application/json"
    ),
    "a charset Python does not know (LookupError)": Fuzzed(
        "POST", f"/sipuni/{TOKEN}", body=b"event=1&call_id=1",
        content_type="application/x-www-form-urlencoded; charset=bogus",
    ),
    "a multipart body aiohttp cannot parse (ValueError / InvalidHeader)": Fuzzed(
        "POST", f"/sipuni/{TOKEN}", body=b"--xyz\r\nnot a header\r\n\r\n1\r\n--xyz--\r\n",
        content_type="multipart/form-data; boundary=xyz",
    ),
    "a lone surrogate in a JSON string (UnicodeEncodeError in the store)": Fuzzed(
        "POST", f"/sipuni/{TOKEN}",
        body=b'{"event": "1", "call_id": "1.2", "timestamp": "1717171700", "roistat": "\\ud800"}',
        content_type="application/json",
    ),
    "a lone surrogate in a form its charset decodes (a serialisation error in the store)": Fuzzed(
        "POST", f"/sipuni/{TOKEN}", body=b"event=1&call_id=1.2&timestamp=1717171700&x=\\ud800",
        content_type="application/x-www-form-urlencoded; charset=unicode_escape",
    ),
    "a token with { or } misses the route: aiohttp's text/plain 404, not JSON": Fuzzed(
        "GET", "/sipuni/%7Btoken%7D", query="event=1"
    ),
    "a Content-Type the stdlib parser chokes on, e.g. ';0*' (IndexError)": Fuzzed(
        "POST", f"/sipuni/{TOKEN}", body=b'{"event": "1"}', content_type="application/json;0*"
    ),
}  # fmt: skip


@pytest.mark.parametrize("bug", list(REPRODUCTIONS))
async def test_inputs_that_once_got_a_500_get_a_clear_4xx(service, bug: str) -> None:
    _, client = service
    status, raw = await send(client, REPRODUCTIONS[bug])
    check_answer(status, raw)
