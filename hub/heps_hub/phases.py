"""A spawn's phases with their times: what the pending page shows the scientist while
she waits, and one log line per spawn that says where the seconds went.

The hub logs `heps-spawn USER requested=T user-init=T container=T jupyterlab=T
answered=T` (Unix times, the hub's clock): `bench/spawn.py` reads it to print each
phase's share, operators read it to see which part of a slow spawn was slow.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

PHASES: dict[str, tuple[int, str]] = {
    # name: (progress in %, what the pending page says while this phase runs)
    "requested": (5, "Your request reached the hub"),
    "user-init": (15, "Preparing your account, home and data folders"),
    "container": (35, "Starting your environment"),
    "jupyterlab": (55, "Waiting for JupyterLab to start (a few seconds)"),
    "answered": (95, "JupyterLab answers; opening it"),
}
LINE = re.compile(r"heps-spawn (?P<user>\S+) (?P<marks>(?:[a-z-]+=[0-9.]+ ?)+)")


@dataclass
class PhaseLog:
    """The phases one spawn has entered so far, in order, with the time of each."""

    marks: list[tuple[str, float]] = field(default_factory=list)

    def enter(self, phase: str) -> None:
        if phase not in PHASES:
            raise ValueError(f"unknown spawn phase {phase!r}; known: {', '.join(PHASES)}")
        self.marks.append((phase, time.time()))

    def event(self, index: int) -> dict[str, object]:
        """The pending page's event for the index-th phase entered."""
        phase, at = self.marks[index]
        progress, message = PHASES[phase]
        elapsed = at - self.marks[0][1]
        return {"progress": progress, "message": f"{message} ({elapsed:.1f} s)", "phase": phase}

    def line(self, user: str) -> str:
        return f"heps-spawn {user} " + " ".join(f"{p}={t:.3f}" for p, t in self.marks)


def parse(text: str) -> dict[str, dict[str, float]]:
    """{user: {phase: Unix time}} of every spawn line in a hub log (the last per user)."""
    found = {}
    for match in LINE.finditer(text):
        pairs = (pair.split("=") for pair in match.group("marks").split())
        found[match.group("user")] = {name: float(value) for name, value in pairs}
    return found
