"""Each bench script runs with tiny parameters and reports its fields (timings never checked).

The benches live in ``bench/`` (see docs/benchmarks.md). Each is run the way a person would
run it, as ``python -m bench.<name> --quick …`` in its own process; the last line of its
output must be its JSON record with the fields the docs quote.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]


def run_bench(name: str, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", "--quick", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0] == f"== bench.{name} ==", done.stdout[:500]
    record = json.loads(lines[-1])
    assert record["bench"] == name and record["quick"] is True
    assert {"nproc", "cpu", "ram_gib", "python"} <= set(record["machine"])
    return record


def test_ingest_reports_service_and_bare_rates_and_the_open_loop() -> None:
    r = run_bench("ingest", "--generator", "python", "--store-trace")
    assert r["generator"] == "python"
    for level in map(str, r["levels"]):
        for side in ("bare", "service"):
            assert {"rps", "p50_ms", "p99_ms", "failures"} <= set(r[side][level])
            assert r[side][level]["count"] > 0 and r[side][level]["failures"] == 0
        assert level in r["ratio"]
    assert {"p50_ms", "p99_ms", "failures"} <= set(r["open_loop"])
    assert set(r["goals"]) == {"ingest_half_of_bare", "p99_under_10ms_at_rate"}
    # The worker in another process, and everything in one, in the same run; each drained.
    assert set(r["service_one_process"]) == set(r["service"]) == set(map(str, r["levels"]))
    assert {"ratio_best", "ratio_best_one_process"} <= set(r)
    for run in [*r["service"].values(), r["open_loop"], r["open_loop_one_process"]]:
        assert run["drain_s"] >= 0 and run["failures"] == 0
    # Each process's write transactions, timed where it ran: both roles of the split layout.
    assert set(r["store_trace"]["split"]) == {"ingest", "worker"}
    assert set(r["store_trace"]["one"]) == {"all"}
    for trace in [*r["store_trace"]["split"].values(), *r["store_trace"]["one"].values()]:
        assert trace["transactions"] > 0 and trace["writes"] >= trace["transactions"]
        assert {"p50_ms", "p99_ms", "max_ms", "total_s"} <= set(trace)


def test_cpu_reports_cpu_per_event_for_short_and_long_calls() -> None:
    r = run_bench("cpu", "--profile", "--top", "5")
    for run in ("mixed", "long"):
        assert r[run]["events"] > 0 and r[run]["failures"] == 0 and r[run]["us_per_event"] > 0
    assert len(r["profile"]["tottime"]) == 6 and r["profile"]["events"] > 0


def test_hangup_reports_latency_per_kind_and_requests_per_call() -> None:
    r = run_bench("hangup", "--calls", "5")
    assert r["calls_without_comment"] == 0 and r["webhook_failures"] == 0
    assert r["hangup_to_done"]["n"] == 5
    assert {"p50_ms", "p99_ms"} <= set(r["hangup_to_done"])
    assert r["usedesk_requests"]["all"]["mean"] > 0
    assert "hangup_p99_under_500ms" in r["goals"]


def test_hangup_at_the_limit_with_a_given_rate() -> None:
    r = run_bench("hangup", "--mode", "limit", "--calls", "3", "--rate", "2")
    assert r["mode"] == "limit" and r["per_minute"] == 100 and r["hangup_to_done"]["n"] == 3


def test_requests_per_call_by_kind() -> None:
    r = run_bench("requests_per_call", "--calls", "10")
    assert {"new_inbound", "repeat_open_ticket", "repeat_known"} <= set(r["by_kind"])
    assert r["unattributed"] == 0 and r["mix_mean"] > 0
    assert set(r["goals"]) == {"mean_at_most_3", "repeat_open_ticket_at_most_2"}


def test_sustained_usedesk_and_core() -> None:
    r = run_bench("sustained")
    assert {"sustained_calls_per_s", "sandbox_max_per_60s", "within_limit"} <= set(r)
    r = run_bench("sustained", "--mode", "core")
    assert r["steps"] and all(step["failures"] == 0 for step in r["steps"])
    assert "sustained_calls_per_s" in r


def test_memory_reports_rss_for_open_calls_and_a_steady_run() -> None:
    r = run_bench("memory")
    assert r["open"]["webhooks_sent"] == r["open_calls"] and r["open"]["failures"] == 0
    assert {"rss_before_mib", "rss_after_mib", "bytes_per_open_call"} <= set(r["open"])
    assert {"rss_start_mib", "rss_middle_mib", "rss_end_mib"} <= set(r["steady"])


def test_memory_with_usedesk_and_notifications() -> None:
    r = run_bench("memory", "--config", "usedesk", "--open", "300")
    assert r["config"] == "usedesk" and r["open"]["failures"] == 0
    assert "bytes_per_open_call" in r["open"]


def test_card_latency_reports_first_and_complete_card() -> None:
    r = run_bench("card_latency")
    assert r["first_card"]["n"] + r["first_card_missing"] == r["calls"]
    assert {"p50_ms", "p99_ms"} <= set(r["first_card"]) and "complete_card" in r


def test_burst_reports_drain_time_hook_timeouts_and_requests() -> None:
    r = run_bench("burst", "--calls", "3")
    assert r["calls"] == 3 and r["calls_without_comment"] == 0
    assert {"drain_seconds", "limit_needs_seconds", "hook_timeouts", "breaker_trips"} <= set(r)
    # One ticket per new number (its client made with it); no number searched twice.
    assert r["requests_by_path"]["/create/ticket"] == 3 and r["numbers_searched_twice"] == 0
    assert "drain_within_180s_no_hook_timeouts" in r["goals"]


def test_console_reports_server_time_per_page() -> None:
    r = run_bench("console")
    assert r["calls"] == 300 and r["stored"]["dead"] == 3 and r["stored"]["retrying"] == 3
    for page in ("calls", "calls_phone", "calls_dead", "call", "integrations", "setup"):
        assert {"p50_ms", "p90_ms", "max_ms"} <= set(r["pages"][page]["server"])
        assert r["pages"][page]["server"]["n"] == 5
    assert set(r["goals"]) == {"calls_page_under_100ms"}


def test_scale_reports_drain_by_worker_count_and_ingest_against_bare() -> None:
    r = run_bench("scale", "--generator", "python")
    assert r["fsync"] is True and r["integration"] == "amocrm_stub"
    assert [d["processes"] for d in r["drain_postgresql"]] == [1, 2]
    assert [d["role"] for d in r["drain_sqlite"]] == ["worker", "all"]
    for d in [*r["drain_postgresql"], *r["drain_sqlite"]]:
        assert d["events"] == r["events"] and d["quarantined"] == 0 and d["dead"] == 0
        assert {"seconds", "events_per_s", "connector_cpu_s"} <= set(d)
    assert {"ratio_to_1"} <= set(r["drain_postgresql"][1])
    for side in ("bare", "postgresql", "sqlite"):
        assert r["ingest"][side]["count"] > 0 and r["ingest"][side]["failures"] == 0
    assert set(r["ingest"]["ratio"]) == {"postgresql", "sqlite"}
    assert set(r["limits"]) == {"drain_postgres", "drain_sqlite", "ingest"}


def test_parse_reports_us_per_call() -> None:
    r = run_bench("parse")
    assert r["webhooks"] > 0 and r["runs"] == len(r["us_per_call_runs"]) and r["us_per_call"] > 0
