"""Sipuni's API client: the signature, the requests it sends, the errors it classifies, the
history CSV it reads; and the sandbox that answers like Sipuni (signature included)."""

from __future__ import annotations

import asyncio
import hashlib
import sys
from datetime import datetime

import aiohttp
import pytest
from yarl import URL

from connector_core.errors import AuthError, InvalidRequestError, TransientError
from connector_core.simulator import scenarios as sc
from connector_core.simulator.sipuni_sandbox import SipuniSandbox
from connector_core.sipuni_api import (
    SIPUNI_TZ,
    Direction,
    SipuniApi,
    SipuniScheme,
    parse_history,
    signature,
)
from tests.http_mock import Mocked as aioresponses

KEY = "0.k3y-SECRET-9f2a"
BASE = "https://sipuni.example/api"


def test_the_signature_is_the_references_worked_example() -> None:
    # §3: md5("0+79031234567+0+101+012345+<secret>"): antiaon, phone, reverse, sipnumber, user.
    params = {
        "user": "012345",
        "sipnumber": "101",
        "reverse": "0",
        "phone": "79031234567",
        "antiaon": "0",
    }
    written_out = f"0+79031234567+0+101+012345+{KEY}"
    expected = hashlib.md5(written_out.encode(), usedforsecurity=False).hexdigest()
    assert signature(params, KEY) == expected


def test_names_sort_as_sipuni_sorts_them_with_user_among_them() -> None:
    # statistic/export: anonymous, firstTime, from, fromNumber, … type, user.
    params = {"type": "0", "user": "012345", "from": "01.06.2024", "firstTime": "0", "to": "x"}
    written_out = f"0+01.06.2024+x+0+012345+{KEY}"
    assert signature(params, KEY) == hashlib.md5(written_out.encode()).hexdigest()


async def test_call_number_posts_the_signed_form_and_reads_the_callback_id() -> None:
    api = SipuniApi(account="012345", key=KEY, base_url=BASE)
    with aioresponses() as mocked:
        mocked.post(f"{BASE}/callback/call_number", payload={"success": True, "callbackId": "77"})
        async with api:
            started = await api.call_number("+7 (903) 123-45-67", "101")
        [request] = mocked.requests[("POST", URL(f"{BASE}/callback/call_number"))]
    sent = dict(request.kwargs["data"])
    assert sent == {
        "antiaon": "0",
        "phone": "79031234567",
        "reverse": "0",
        "sipnumber": "101",
        "user": "012345",
        "hash": signature({k: v for k, v in sent.items() if k != "hash"}, KEY),
    }
    assert KEY not in str(sent)  # the key signs; it never travels
    assert started.callback_id == "77"


async def test_schemes_and_the_history_are_typed() -> None:
    csv_text = (
        "Тип;Статус;Время;Схема;Откуда;Куда;Кто ответил;Длительность звонка;"
        "Длительность разговора;Время ответа;ID записи;Новый клиент\n"
        "Входящий;Отвечен;01.06.2024 10:00:05;Входящая;79161234567;74951234567;101;200;186;"
        "9;1717225205.1;да\n"
        "Исходящий;Не отвечен;01.06.2024 23:59:00;Исходящая;101;79035550011;;0:30;0:00;0;"
        "1717271940.2;\n"
    )
    api = SipuniApi(account="012345", key=KEY, base_url=BASE)
    with aioresponses() as mocked:
        mocked.post(
            f"{BASE}/schema/list",
            payload={"data": [{"id": 913898, "name": "Входящая", "type": 0, "createdAt": 1}]},
        )
        mocked.post(f"{BASE}/statistic/export", body=csv_text)
        async with api:
            [scheme] = await api.schemes()
            since = datetime(2024, 6, 1, tzinfo=SIPUNI_TZ)
            rows = await api.calls_since(since, datetime(2024, 6, 1, 12, tzinfo=SIPUNI_TZ))
        [export] = mocked.requests[("POST", URL(f"{BASE}/statistic/export"))]
    assert scheme == SipuniScheme("913898", "Входящая", scheme.kind)
    assert scheme.matches("000-913898") and scheme.matches("Входящая")
    assert not scheme.matches("000-913899") and not scheme.matches("входящая")
    assert dict(export.kwargs["data"])["from"] == "01.06.2024"
    [row] = rows  # the 23:59 call is after the window's end
    assert row.record_id == "1717225205.1" and row.direction is Direction.INBOUND
    assert row.started_at == datetime(2024, 6, 1, 10, 0, 5, tzinfo=SIPUNI_TZ)
    assert (row.call_seconds, row.talk_seconds, row.answer_seconds) == (200, 186, 9)
    assert row.answered and row.answered_by == "101" and row.new_client
    [_, late] = parse_history(csv_text)
    assert late.direction is Direction.OUTBOUND and late.call_seconds == 30 and not late.answered


def test_a_history_without_its_columns_says_which_is_missing() -> None:
    with pytest.raises(InvalidRequestError, match="no column 'ID записи'"):
        parse_history("Тип;Время\nВходящий;01.06.2024 10:00:00\n")
    with pytest.raises(InvalidRequestError, match="line 2: unreadable time 'вчера'"):
        parse_history("Время;ID записи\nвчера;1.1\n")


@pytest.mark.parametrize(
    ("answer", "kind", "words"),
    [
        ({"exception": aiohttp.ClientConnectionError("refused")}, TransientError, "cannot connect"),
        ({"exception": TimeoutError()}, TransientError, "did not answer"),
        ({"status": 401, "body": "no"}, AuthError, "check the account number and sipuni_api_key"),
        (
            {"payload": {"success": False, "message": f"Неверный hash для {KEY}"}},
            AuthError,
            "«Настройки» → «API»",
        ),
        ({"status": 400, "payload": {"message": "bad phone"}}, InvalidRequestError, "bad phone"),
        ({"status": 429, "headers": {"Retry-After": "7"}}, TransientError, "rate-limited"),
        ({"status": 502, "body": "<html>Bad Gateway</html>"}, TransientError, "server error"),
        ({"body": "<html>hello</html>"}, InvalidRequestError, "is sipuni_api_url Sipuni's API?"),
        (
            {"status": 404, "body": "404: Not Found"},
            InvalidRequestError,
            "is sipuni_api_url Sipuni's API (https://sipuni.com/api)?",
        ),
    ],
)
async def test_failures_are_classified_with_a_message_to_act_on_and_never_the_key(
    answer: dict[str, object], kind: type[Exception], words: str
) -> None:
    api = SipuniApi(account="012345", key=KEY, base_url=BASE)
    with aioresponses() as mocked:
        mocked.post(f"{BASE}/schema/list", **answer)  # type: ignore[arg-type]
        async with api:
            with pytest.raises(kind) as caught:
                await api.schemes()
    message = str(caught.value)
    assert words in message and KEY not in message and KEY not in repr(api)
    if answer.get("status") == 429:
        assert caught.value.retry_after == 7.0  # type: ignore[attr-defined]
    if "exception" in answer:
        assert caught.value.unanswered  # type: ignore[attr-defined]


# --- the sandbox --------------------------------------------------------------------------------


async def test_the_sandbox_refuses_a_bad_hash_like_sipuni() -> None:
    sandbox = SipuniSandbox(key=KEY)
    async with sandbox.serve() as url:
        async with SipuniApi(account="012345", key="0.wrong-key-123", base_url=url) as wrong:
            with pytest.raises(AuthError, match="HTTP 401"):
                await wrong.schemes()
        async with aiohttp.ClientSession() as session:
            right = SipuniApi(account="012345", key=KEY, base_url=url, session=session)
            tampered = right.signed({"type": ""}) | {"type": "1"}
            async with session.post(f"{url}/schema/list", data=tampered) as response:
                assert response.status == 401
            # The same request unaltered passes, by POST form or GET query.
            async with session.get(f"{url}/schema/list", params=right.signed({"type": ""})) as ok:
                assert ok.status == 200 and len((await ok.json())["data"]) == 4
    assert sandbox.refused == 2


async def test_the_sandbox_lists_its_schemes_and_exports_the_calls_it_played() -> None:
    sandbox = SipuniSandbox(key=KEY, schemes=[SipuniScheme("100", "Распределитель")])
    day = int(datetime(2024, 6, 1, 9, tzinfo=SIPUNI_TZ).timestamp())
    answered = sc.inbound_answered(start=day, call_id=f"{day}.1")
    missed = sc.inbound_missed(start=day + 60, call_id=f"{day + 60}.2", client="79035550011")
    other_day = sc.outbound_answered(start=day + 86400, call_id=f"{day + 86400}.3")
    async with sandbox.serve() as url:
        for call in (answered, missed, other_day):
            sandbox.play(call, delivery="none")  # Sipuni knows them; nobody heard of them
        async with SipuniApi(account="012345", key=KEY, base_url=url) as api:
            assert [s.name for s in await api.schemes()] == ["Распределитель"]
            since = datetime.fromtimestamp(day - 3600, SIPUNI_TZ)
            rows = await api.calls_since(since, since.replace(hour=23))
            missed_only = await api.calls_since(since, since.replace(hour=23), missed_only=True)
    assert [r.record_id for r in rows] == [answered.call_id, missed.call_id]
    first, second = rows
    assert first.answered_by == "101" and first.talk_seconds == answered.expected["talk_seconds"]
    assert first.source == "79161234567" and first.scheme == "Входящая"
    assert not second.answered and second.direction is Direction.INBOUND
    assert [r.record_id for r in missed_only] == [missed.call_id]
    assert all(not c.delivered for c in sandbox.calls)


async def test_the_sandbox_refuses_a_click_to_call_for_an_unknown_employee() -> None:
    sandbox = SipuniSandbox(key=KEY, extensions=["101"])
    async with sandbox.serve() as url:
        async with SipuniApi(account="012345", key=KEY, base_url=url) as api:
            with pytest.raises(InvalidRequestError, match="no employee with short number 109"):
                await api.call_number("79031234567", "109")
    assert sandbox.calls == []


async def test_the_sandbox_runs_by_hand_and_prints_the_lines_for_the_config() -> None:
    # An operator trying `connector check` or «Перезвонить» without a Sipuni account starts
    # the sandbox from the shell; it prints where it is and the key it accepts.
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "connector_core.simulator.sipuni_sandbox",
        "--port",
        "0",
        "--key",
        KEY,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        lines = [(await process.stdout.readline()).decode().strip() for _ in range(4)]
        assert lines[0].startswith("Sipuni sandbox on http://127.0.0.1:")
        assert lines[1] == "[accounts.012345] in connector.toml:"
        assert lines[3] == f'sipuni_api_key = "{KEY}"'
        url = lines[2].removeprefix('sipuni_api_url = "').removesuffix('"')
        async with SipuniApi(account="012345", key=KEY, base_url=url) as api:
            names = [scheme.name for scheme in await api.schemes()]
        assert names == ["Входящая", "Исходящая", "Распределитель", "Продажи"]
    finally:
        process.terminate()
        await process.wait()
