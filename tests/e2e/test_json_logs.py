"""``[logging] json = true``: every line the real process writes is one JSON object, with the
account, call id and integration of the work it is about, and no secret."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from pathlib import Path

from tests.e2e.process import ServiceProcess, free_port

ACCOUNT = "012345"
TOKEN = "json-logs-token-0123456789"
AMO_TOKEN = "amo-secret-token-0123456789"
CALL = "1717171700.77"
EVENTS = [
    f"event=1&call_id={CALL}&src_num=79160000077&src_type=1&dst_num={ACCOUNT}101&dst_type=2"
    "&short_dst_num=101&timestamp=1717171700",
    f"event=2&call_id={CALL}&src_num=79160000077&src_type=1&dst_num={ACCOUNT}101&dst_type=2"
    "&short_dst_num=101&status=NOANSWER&call_start_timestamp=1717171700&timestamp=1717171710",
]


def test_every_line_of_a_run_is_a_json_object_naming_its_call_and_integration(
    tmp_path: Path,
) -> None:
    port = free_port()
    config = tmp_path / "connector.toml"
    # The stub refuses every hook while a token is set and the subdomain is the placeholder:
    # its dead-letter lines are logged inside the hook call's context.
    config.write_text(f"""
[server]
port = {port}
[storage]
path = "connector.db"
[logging]
level = "DEBUG"
json = true
[accounts.{ACCOUNT}]
token = "{TOKEN}"
[accounts.{ACCOUNT}.integrations.amo]
plugin = "amocrm_stub"
access_token = "{AMO_TOKEN}"
""")
    service = ServiceProcess(config, port=port)
    service.start()
    try:
        for query in EVENTS:
            with urllib.request.urlopen(f"{service.url}/sipuni/{TOKEN}?{query}") as response:
                assert json.loads(response.read()) == {"success": True}
        with socket.create_connection(("127.0.0.1", port)) as raw:  # a malformed request line
            raw.sendall(f"GET /sipuni/{TOKEN} HTTP/9.9\r\n\r\n".encode())
            raw.recv(1024)
        deadline = time.monotonic() + 30
        while service.log_path.read_text(encoding="utf-8").count("dead-lettered") < 2:
            assert time.monotonic() < deadline, "the stub's hook calls were not dead-lettered"
            time.sleep(0.05)
    finally:
        assert service.stop() == 0

    lines = service.log_path.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]  # every line parses, or this raises
    assert len(records) > 10
    for record in records:
        assert set(record) >= {"time", "level", "logger", "account", "call_id", "integration"}
        assert record["level"] in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
    dead = [r for r in records if "dead-lettered" in r["message"]]
    assert {(r["account"], r["call_id"], r["integration"]) for r in dead} == {
        (ACCOUNT, CALL, f"{ACCOUNT}/amo")
    }
    assert any(r["call_id"] == CALL and r["logger"] == "connector_core.worker" for r in records)
    text = "\n".join(lines)
    assert TOKEN not in text and AMO_TOKEN not in text
