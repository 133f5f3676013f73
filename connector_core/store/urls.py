"""The PostgreSQL URL of ``[storage] url``: what a usable one names, and how it is shown.

Pure: the config validates a URL with :func:`url_problem`, and whatever prints or logs one
(``connector check``, ``StoreInfo.where``) shows :func:`masked_url` instead, so the
database password never reaches a terminal or a log.
"""

from __future__ import annotations

from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit, urlunsplit

SCHEMES = ("postgresql", "postgres")
SHAPE = "postgresql://user:password@host:5432/database"
MASK = "***"


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot name a PostgreSQL database, or ``None`` when it can.

    A usable URL has the ``postgresql://`` (or ``postgres://``) scheme, a host or a socket
    folder (``?host=/run/postgresql``), and a database name. The message never quotes the
    URL: it may hold a password.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return f"not a URL this release can read; write it as {SHAPE}"
    if parts.scheme not in SCHEMES:
        return (
            "only postgresql:// URLs are supported;"
            " leave url out to use the SQLite file at storage.path"
        )
    query = dict(parse_qsl(parts.query))
    if not (parts.hostname or query.get("host")):
        return f"the URL names no host nor socket folder (?host=/run/postgresql); write {SHAPE}"
    if not parts.path.strip("/") and not query.get("dbname"):
        return f"the URL names no database; write {SHAPE}"
    if port == 0:
        return f"port 0 is no PostgreSQL port; write {SHAPE}"
    return None


def url_password(url: str) -> str | None:
    """The password ``url`` holds (in its user part or as ``?password=``), if any."""
    parts = _split(url)
    if parts is None:
        return None
    return parts.password or dict(parse_qsl(parts.query)).get("password") or None


def masked_url(url: str) -> str:
    """``url`` with its password shown as ``***``: what a person may read."""
    parts = _split(url)
    if parts is None:
        return MASK  # nothing in it can be told apart from a password
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}:{MASK}@{host}"
    query = [(k, MASK if k == "password" else v) for k, v in parse_qsl(parts.query, True)]
    text = urlunsplit(parts._replace(netloc=netloc, query=urlencode(query, safe="/*")))
    if not netloc and url.strip().startswith(f"{parts.scheme}://"):
        # A socket-folder URL (postgresql:///db?host=/run/...): urlunsplit drops the "//".
        text = f"{parts.scheme}://" + text.removeprefix(f"{parts.scheme}:")
    return text


def _split(url: str) -> SplitResult | None:
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018  # raises on a port that is not a number
    except ValueError:
        return None
    return parts
