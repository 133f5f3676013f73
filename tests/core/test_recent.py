"""The bounded map behind the service's caches (parsed states, stored rows, sessions)."""

from __future__ import annotations

from connector_core.recent import Recent


def test_a_write_beyond_the_size_lets_the_least_recently_used_go() -> None:
    recent: Recent[str, int] = Recent(2)
    recent.put("a", 1)
    recent.put("b", 2)
    assert recent.get("a") == 1  # read: a is now the most recent
    recent.put("c", 3)
    assert recent.get("b") is None
    assert (recent.get("a"), recent.get("c"), len(recent)) == (1, 3, 2)


def test_a_rewritten_entry_is_the_most_recent_and_pop_takes_any_key() -> None:
    recent: Recent[str, int] = Recent(2)
    recent.put("a", 1)
    recent.put("b", 2)
    recent.put("a", 10)
    recent.put("c", 3)
    assert (recent.get("a"), recent.get("b")) == (10, None)
    recent.pop("a")
    recent.pop("never there")
    assert (recent.get("a"), len(recent)) == (None, 1)
