"""Two `heps platform up` at once agree on one set of secrets: made once under the
platform's lock and written whole, raced here by real processes (forked, released
together by a barrier), as `up` makes them."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from typing import Any

from heps.core.settings import Settings
from heps.platform import stack

ROUNDS, RACERS = 15, 4


def _racer(cfg: Settings, name: str, start: Any, out: Path) -> None:
    folder = stack.state_dir(cfg, name)
    folder.mkdir(parents=True, exist_ok=True)
    start.wait()
    with stack._lock(cfg, name):
        made = stack._secrets(folder)
    out.write_text(json.dumps(made))


def test_racing_ups_agree_on_one_set_of_secrets(tmp_path: Path) -> None:
    cfg = Settings(repo=tmp_path, state_dir=tmp_path / "state")
    fork = multiprocessing.get_context("fork")
    for round_ in range(ROUNDS):
        name, start = f"race{round_}", fork.Barrier(RACERS)
        outs = [tmp_path / f"{name}-{i}.json" for i in range(RACERS)]
        racers = [fork.Process(target=_racer, args=(cfg, name, start, o)) for o in outs]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join(30)
        assert [r.exitcode for r in racers] == [0] * RACERS, f"round {round_}: a racer crashed"
        seen = {o.read_text() for o in outs}
        assert len(seen) == 1, f"round {round_}: {len(seen)} different sets of secrets"
        kept = stack.state_dir(cfg, name) / "secrets.json"
        assert kept.read_text() == seen.pop() and kept.stat().st_mode & 0o777 == 0o600
        assert not list(kept.parent.glob(".secrets.*"))  # no partial file left behind
