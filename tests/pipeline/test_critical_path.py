"""Builds on the critical path start first (DESIGN.md: first-run makespan near its bound)."""

from __future__ import annotations

from heps.images.plan import NOT_IN_REGISTRY, PlanEntry
from heps.images.run import critical_first

TREE = {
    "debian-base": (),
    "heps-hub": ("debian-base",),
    "heps-scheduler": ("debian-base",),
    "heps-user-init": ("debian-base",),
    "jupyterlab-base": ("debian-base",),
    "ct-reconstruction": ("jupyterlab-base",),
    "deep-learning": ("jupyterlab-base",),
    "spark-driver": ("jupyterlab-base",),
}


def entries() -> list[PlanEntry]:
    return [
        PlanEntry(n, "1", NOT_IN_REGISTRY, True, "f", bases, f"r/{n}:1", None)
        for n, bases in TREE.items()
    ]


def order(seconds: dict[str, float]) -> list[str]:
    return [e.name for e in critical_first(entries(), seconds)]


def test_without_timings_the_recipe_with_most_dependents_goes_first() -> None:
    # Before: build order broke ties by name, so jupyterlab-base waited for the hub,
    # the scheduler and user-init on a two-slot host.
    assert order({})[:2] == ["debian-base", "jupyterlab-base"]


def test_last_known_seconds_decide_the_longest_chain() -> None:
    seconds = {n: 10.0 for n in TREE} | {"heps-hub": 400.0, "deep-learning": 300.0}
    # hub: 400; jupyterlab-base -> deep-learning: 10 + 300 = 310.
    assert order(seconds)[:3] == ["debian-base", "heps-hub", "jupyterlab-base"]
    seconds["deep-learning"] = 500.0
    assert order(seconds)[:3] == ["debian-base", "jupyterlab-base", "deep-learning"]
