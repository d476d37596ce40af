"""A spawn's phase log: the pending page's events and the hub's one line per spawn,
read back as bench/spawn.py reads it."""

from __future__ import annotations

import pytest

from heps_hub import phases


def test_events_follow_the_phases_and_the_line_reads_back() -> None:
    log = phases.PhaseLog()
    for name in phases.PHASES:
        log.enter(name)
    events = [log.event(i) for i in range(len(log.marks))]
    assert [e["phase"] for e in events] == list(phases.PHASES)
    progress = [int(str(e["progress"])) for e in events]
    assert progress == sorted(progress) and progress[-1] < 100  # 100 is the hub's "ready"
    assert str(events[1]["message"]).startswith("Preparing your account, home and data folders")
    text = f"[I 2026-12-04 hub] {log.line('alice')}\n[I other line]\n"
    read = phases.parse(text)
    assert list(read) == ["alice"]
    assert list(read["alice"]) == list(phases.PHASES)
    assert read["alice"]["answered"] == pytest.approx(log.marks[-1][1], abs=1e-3)


def test_the_last_spawn_of_a_user_counts_and_unknown_phases_are_refused() -> None:
    text = "heps-spawn bob requested=1.000 user-init=2.000\nheps-spawn bob requested=5.000\n"
    assert phases.parse(text) == {"bob": {"requested": 5.0}}
    with pytest.raises(ValueError, match="unknown spawn phase 'warp'"):
        phases.PhaseLog().enter("warp")
