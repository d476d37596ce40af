"""One scheduling cycle, kube-scheduler style: filter, score, normalize, pick, reserve.

Binding is the caller's (the Kubernetes adapter binds through the API; the simulator
binds at once); a failed bind calls `unreserve`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from heps_scheduler.filters import FilterPlugin
from heps_scheduler.model import Pod
from heps_scheduler.scores import ScorePlugin, pick_gpus
from heps_scheduler.snapshot import Snapshot


class GpuSelector(Protocol):
    def select_gpu(self, pod: Pod, snap: Snapshot, node: int) -> int: ...


@dataclass(frozen=True)
class Profile:
    name: str
    filters: list[FilterPlugin]
    scores: list[tuple[ScorePlugin, float]]
    """Plugins with their weights."""
    best_fit_gpu: bool = True
    """Within a node, give a GPU share the fullest GPU that fits (else the first)."""
    percentage_of_nodes_to_score: float = 0
    """0: kube-scheduler's adaptive default; otherwise a fixed percentage (1..100)."""
    tie_break: str = "random"
    """Among equal best scores: "random" (kube-scheduler) or "name" (the node whose name
    sorts first, as the FGD paper's simulator patches its scheduler to do)."""
    gpu_selector: GpuSelector | None = None
    """Chooses the GPU of a share on the chosen node; None: best or first fit."""


@dataclass
class Decision:
    pod: Pod
    node: str | None
    gpu_slots: tuple[int, ...] = ()
    reasons: dict[str, int] = field(default_factory=dict)
    """For an unschedulable pod: nodes dropped per filter reason."""
    seconds: float = 0.0

    def message(self, total: int) -> str:
        """kube-scheduler's FailedScheduling wording."""
        parts = ", ".join(f"{count} {reason}" for reason, count in sorted(self.reasons.items()))
        return f"0/{total} nodes are available: {parts}."


def nodes_to_find(total: int, percentage: float) -> int:
    """kube-scheduler's numFeasibleNodesToFind."""
    if total < 100 or percentage >= 100:
        return total
    if percentage <= 0:
        percentage = max(5.0, 50 - total / 125)
    return max(100, int(total * percentage / 100))


class Scheduler:
    def __init__(self, snapshot: Snapshot, profile: Profile, seed: int = 0) -> None:
        self.snap = snapshot
        self.profile = profile
        self.rng = np.random.default_rng(seed)
        self._start = 0  # kube-scheduler rotates where the feasible-node search begins
        self.all_nodes = np.arange(len(snapshot.nodes))
        self.name_rank = np.argsort(np.argsort([n.name for n in snapshot.nodes], kind="stable"))

    def feasible(self, pod: Pod) -> tuple[np.ndarray, dict[str, int]]:
        candidates = self.all_nodes
        reasons: dict[str, int] = {}
        for plugin in self.profile.filters:
            ok = plugin.filter(pod, self.snap, candidates)
            dropped = int(len(candidates) - ok.sum())
            if dropped:
                reasons[plugin.reason] = reasons.get(plugin.reason, 0) + dropped
                candidates = candidates[ok]
            if not len(candidates):
                break
        return candidates, reasons

    def schedule(self, pod: Pod) -> Decision:
        """Place `pod`: the chosen node is reserved in the snapshot before this returns."""
        started = time.perf_counter()
        candidates, reasons = self.feasible(pod)
        if not len(candidates):
            return Decision(pod, None, (), reasons, time.perf_counter() - started)
        limit = nodes_to_find(len(self.snap.nodes), self.profile.percentage_of_nodes_to_score)
        if len(candidates) > limit:
            offset = int(np.searchsorted(candidates, self._start)) % len(candidates)
            candidates = np.roll(candidates, -offset)[:limit]
            self._start = int(candidates[-1]) + 1
        total = np.zeros(len(candidates))
        for plugin, weight in self.profile.scores:
            total += weight * plugin.score(pod, self.snap, candidates)
        best = np.flatnonzero(total >= total.max() - 1e-9)
        if len(best) == 1:
            node = int(candidates[best[0]])
        elif self.profile.tie_break == "name":
            node = int(candidates[best[np.argmin(self.name_rank[candidates[best]])]])
        else:
            node = int(candidates[self.rng.choice(best)])
        slots = self.gpu_slots(pod, node)
        self.reserve(pod, node, slots)
        return Decision(pod, self.snap.nodes[node].name, slots, {}, time.perf_counter() - started)

    def gpu_slots(self, pod: Pod, node: int) -> tuple[int, ...]:
        free = self.snap.gpu_free[node : node + 1]
        if pod.shares_gpu and self.profile.gpu_selector is not None:
            return (self.profile.gpu_selector.select_gpu(pod, self.snap, node),)
        if pod.shares_gpu:
            return (int(pick_gpus(pod, free, self.profile.best_fit_gpu)[0]),)
        if pod.gpus:
            return tuple(int(i) for i in np.flatnonzero(free[0] == 1000)[: pod.gpus])
        return ()

    def reserve(self, pod: Pod, node: int, slots: tuple[int, ...]) -> None:
        self.snap.assume(pod, node, slots)

    def unreserve(self, pod: Pod) -> None:
        self.snap.forget(pod.key)
