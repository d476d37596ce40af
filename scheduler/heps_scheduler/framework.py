"""kube-scheduler's scheduling framework: a profile's plugins at each extension point.

One scheduling cycle (`Scheduler.schedule`), as kube-scheduler runs it
(pkg/scheduler/schedule_one.go): PreFilter (a plugin may narrow the nodes, reject the
pod, or Skip its own Filter), Filter (a pod nominated to a node by an earlier
preemption tries that node alone first: evaluateNominatedNode), PostFilter when no node
fits (preemption.py's plugin evicts and nominates there), PreScore (Skip drops the
plugin's Score), Score, each plugin's NormalizeScore, then the 0..100 check and the
weights, host selection, assume, Reserve (a failure runs every Unreserve in reverse order
and forgets the pod), Permit (Unschedulable rejects; Wait holds the pod reserved until
each waiting plugin allows it, one rejects it, or the shortest timeout passes). The binding cycle
(`Scheduler.bind`) waits on Permit, then runs the Bind plugins in order until one does
not Skip; any failure unreserves.

Unlike kube-scheduler, Filter and Score take every candidate node at once (numpy arrays),
and a cycle with one feasible node skips PreScore and Score as kube-scheduler does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from heps_scheduler.cycle import (
    ERROR,
    OK,
    SKIP,
    UNSCHEDULABLE,
    WAIT,
    CycleState,
    Status,
)
from heps_scheduler.fgd import TaskClass
from heps_scheduler.filters import FilterPlugin
from heps_scheduler.model import Pod
from heps_scheduler.preemption import Evictor
from heps_scheduler.scores import MAX_SCORE, ScorePlugin, pick_gpus
from heps_scheduler.snapshot import Floats, Ints, Snapshot

MAX_PERMIT_TIMEOUT = 15 * 60.0
"""kube-scheduler's maxTimeout for a Permit plugin's Wait, in seconds."""


class PreFilterPlugin(Protocol):
    name: str

    def pre_filter(self, state: CycleState, pod: Pod, snap: Snapshot) -> tuple[Status, Ints | None]:
        """A status, and the only nodes the pod may use (None: all)."""
        ...


class PostFilterPlugin(Protocol):
    name: str

    def post_filter(
        self, state: CycleState, pod: Pod, snap: Snapshot, reasons: dict[str, int]
    ) -> tuple[Status, str | None]:
        """Called when no node fits: a status and a nominated node (preemption's answer)."""
        ...


class PreScorePlugin(Protocol):
    name: str

    def pre_score(self, state: CycleState, pod: Pod, snap: Snapshot, nodes: Ints) -> Status: ...


class ReservePlugin(Protocol):
    name: str

    def reserve(self, state: CycleState, pod: Pod, node: str) -> Status: ...

    def unreserve(self, state: CycleState, pod: Pod, node: str) -> None: ...


class PermitPlugin(Protocol):
    name: str

    def permit(self, state: CycleState, pod: Pod, node: str) -> tuple[Status, float]:
        """A status (Success, Wait or Unschedulable) and, for Wait, the timeout in seconds."""
        ...


class BindPlugin(Protocol):
    name: str

    def bind(self, state: CycleState, pod: Pod, node: str) -> Status: ...


class GpuSelector(Protocol):
    def select_gpu(self, pod: Pod, snap: Snapshot, node: int) -> int: ...


Binder = Callable[[Pod, str], Status]
"""Binds a pod to a node in the cluster (the Binding API); a replay has none."""


@dataclass
class WaitingPod:
    """A pod a Permit plugin holds: reserved on `node` until allowed, rejected or timed out
    (kube-scheduler's framework.WaitingPod)."""

    pod: Pod
    node: str
    pending: set[str]
    deadline: float
    rejected: Status | None = None

    def allow(self, plugin: str) -> None:
        self.pending.discard(plugin)

    def reject(self, plugin: str, message: str) -> None:
        self.rejected = Status(UNSCHEDULABLE, message, plugin)


@dataclass
class Handle:
    """What plugins get at construction (kube-scheduler's framework.Handle): the learned
    target workload, the metrics settings, the cluster binder, the profile's filters (for
    preemption's dry run), the evictor and the waiting pods."""

    classes: list[TaskClass]
    max_age: float = 60.0
    unknown_load: float = 0.5
    binder: Binder | None = None
    filters: list[FilterPlugin] = field(default_factory=list)
    evictor: Evictor | None = None
    """Deletes preemption's victims in the cluster; None (a replay): they leave the snapshot."""
    waiting: dict[str, WaitingPod] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic


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
    pre_filters: list[PreFilterPlugin] = field(default_factory=list)
    post_filters: list[PostFilterPlugin] = field(default_factory=list)
    pre_scores: list[PreScorePlugin] = field(default_factory=list)
    reserves: list[ReservePlugin] = field(default_factory=list)
    permits: list[PermitPlugin] = field(default_factory=list)
    binders: list[BindPlugin] = field(default_factory=list)
    handle: Handle = field(default_factory=lambda: Handle([]))


@dataclass
class Decision:
    pod: Pod
    node: str | None
    gpu_slots: tuple[int, ...] = ()
    reasons: dict[str, int] = field(default_factory=dict)
    """For an unschedulable pod: nodes dropped per filter reason."""
    seconds: float = 0.0
    status: Status = OK
    """Why the cycle ended without a node (a plugin's status), or Wait (Permit holds it)."""
    state: CycleState = field(default_factory=CycleState)
    nominated: str | None = None
    """The node a PostFilter plugin nominated for the pod's next attempt."""

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


class FrameworkError(RuntimeError):
    """A plugin broke the framework's contract (a score outside 0..100 after normalizing)."""


class Scheduler:
    def __init__(self, snapshot: Snapshot, profile: Profile, seed: int = 0) -> None:
        self.snap = snapshot
        self.profile = profile
        self.rng = np.random.default_rng(seed)
        self._start = 0  # kube-scheduler rotates where the feasible-node search begins
        self.all_nodes = np.arange(len(snapshot.nodes))
        self.name_rank = np.argsort(np.argsort([n.name for n in snapshot.nodes], kind="stable"))

    # --- the scheduling cycle ----------------------------------------------------------------

    def pre_filter(self, state: CycleState, pod: Pod) -> tuple[Ints, Status]:
        candidates: Ints = self.all_nodes
        for plugin in self.profile.pre_filters:
            status, allowed = plugin.pre_filter(state, pod, self.snap)
            if status.code == SKIP:
                state.skip_filter.add(plugin.name)
            elif not status.ok:
                return candidates[:0], _named(status, plugin.name)
            elif allowed is not None:
                candidates = np.intersect1d(candidates, allowed)
        return candidates, OK

    def feasible(
        self, pod: Pod, state: CycleState | None = None, nominated: str | None = None
    ) -> tuple[Ints, dict[str, int]]:
        """The nodes that pass every filter; only the nominated node when it does."""
        state = state or CycleState()
        candidates, status = self.pre_filter(state, pod)
        if not status.ok:
            state.rejected = status
            return candidates, {status.message or status.code: len(self.snap.nodes)}
        if nominated in self.snap.index:
            first = candidates[candidates == self.snap.index[nominated]]
            if len(first) and len(self._filter(state, pod, first, {})):
                return first, {}
        reasons: dict[str, int] = {}
        if len(candidates) < len(self.snap.nodes):  # PreFilter's narrowing is a reason too
            reasons["node(s) were not among the PreFilter result"] = len(self.snap.nodes) - len(
                candidates
            )
        return self._filter(state, pod, candidates, reasons), reasons

    def _filter(
        self, state: CycleState, pod: Pod, candidates: Ints, reasons: dict[str, int]
    ) -> Ints:
        """The Filter plugins in order, counting what each drops in `reasons`."""
        for plugin in self.profile.filters:
            if plugin.name in state.skip_filter:
                continue
            state.seen[plugin.name] = candidates
            ok = plugin.filter(state, pod, self.snap, candidates)
            dropped = int(len(candidates) - ok.sum())
            if dropped:
                reasons[plugin.reason] = reasons.get(plugin.reason, 0) + dropped
                candidates = candidates[ok]
            if not len(candidates):
                break
        return candidates

    def post_filter(
        self, state: CycleState, pod: Pod, reasons: dict[str, int]
    ) -> tuple[Status, str | None]:
        """Until one plugin makes the pod schedulable (a nominated node) or errs; else
        Unschedulable with every plugin's reasons, named after the first, and the last
        node one of them named (kube-scheduler's RunPostFilterPlugins)."""
        messages, rejector, named = [], "", None
        for plugin in self.profile.post_filters:
            status, nominated = plugin.post_filter(state, pod, self.snap, reasons)
            if status.ok or status.code == ERROR:
                return _named(status, plugin.name), nominated
            messages += [status.message] if status.message else []
            rejector, named = rejector or plugin.name, nominated or named
        return Status(UNSCHEDULABLE, "; ".join(messages), rejector), named

    def score(self, state: CycleState, pod: Pod, candidates: Ints) -> Floats | Status:
        """PreScore, Score and NormalizeScore, weighted and summed per candidate."""
        for pre in self.profile.pre_scores:
            status = pre.pre_score(state, pod, self.snap, candidates)
            if status.code == SKIP:
                state.skip_score.add(pre.name)
            elif not status.ok:
                return _named(status, pre.name)
        total: Floats | None = None
        for plugin, weight in self.profile.scores:
            if plugin.name in state.skip_score:
                continue
            scores = plugin.score(state, pod, self.snap, candidates)
            normalize = getattr(plugin, "normalize_score", None)
            if normalize is not None:
                normalize(state, pod, scores)
                if len(scores) and not 0 <= scores.min() <= scores.max() <= MAX_SCORE:
                    raise FrameworkError(
                        f"plugin {plugin.name} returns scores outside 0..{MAX_SCORE:g} "
                        "after normalizing"
                    )
            if total is None:
                total = weight * scores
            else:
                total += weight * scores
        return np.zeros(len(candidates)) if total is None else total

    def schedule(self, pod: Pod, nominated: str | None = None) -> Decision:
        """Place `pod` (nominated to a node by an earlier preemption: that node first): the
        chosen node is assumed in the snapshot and reserved (or held by Permit, status
        Wait) before this returns."""
        started = time.perf_counter()
        state = CycleState()
        candidates, reasons = self.feasible(pod, state, nominated)
        if not len(candidates):
            status, nominated = self.post_filter(state, pod, reasons)
            if not status.ok and state.rejected is not None:
                status = state.rejected
            return Decision(
                pod, None, (), reasons, time.perf_counter() - started, status, state, nominated
            )
        limit = nodes_to_find(len(self.snap.nodes), self.profile.percentage_of_nodes_to_score)
        if len(candidates) > limit:
            offset = int(np.searchsorted(candidates, self._start)) % len(candidates)
            candidates = np.roll(candidates, -offset)[:limit]
            self._start = int(candidates[-1]) + 1
        node = int(candidates[0])
        if len(candidates) > 1:
            total = self.score(state, pod, candidates)
            if isinstance(total, Status):
                return Decision(pod, None, (), {}, time.perf_counter() - started, total, state)
            node = self.select(candidates, total)
        slots = self.gpu_slots(pod, node)
        name = self.snap.nodes[node].name
        self.snap.assume(pod, node, slots)
        status = self.reserve(state, pod, name)
        if status.ok:
            status = self.permit(state, pod, name)
        elapsed = time.perf_counter() - started
        if status.ok or status.code == WAIT:
            return Decision(pod, name, slots, {}, elapsed, status, state)
        return Decision(pod, None, (), {status.message: 1}, elapsed, status, state)

    def select(self, candidates: Ints, total: Floats) -> int:
        best = np.flatnonzero(total >= total.max() - 1e-9)
        if len(best) == 1:
            return int(candidates[best[0]])
        if self.profile.tie_break == "name":
            return int(candidates[best[np.argmin(self.name_rank[candidates[best]])]])
        return int(candidates[self.rng.choice(best)])

    def gpu_slots(self, pod: Pod, node: int) -> tuple[int, ...]:
        free = self.snap.gpu_free[node : node + 1]
        if pod.shares_gpu and self.profile.gpu_selector is not None:
            return (self.profile.gpu_selector.select_gpu(pod, self.snap, node),)
        if pod.shares_gpu:
            return (int(pick_gpus(pod, free, self.profile.best_fit_gpu)[0]),)
        if pod.gpus:
            return tuple(int(i) for i in np.flatnonzero(free[0] == 1000)[: pod.gpus])
        return ()

    def reserve(self, state: CycleState, pod: Pod, node: str) -> Status:
        """Reserve plugins in order; on a failure, undo (every Unreserve, reverse order)."""
        for plugin in self.profile.reserves:
            status = plugin.reserve(state, pod, node)
            if not status.ok:
                self.unreserve(state, pod, node)
                return _named(status, plugin.name)
        return OK

    def permit(self, state: CycleState, pod: Pod, node: str) -> Status:
        pending, timeout = set(), MAX_PERMIT_TIMEOUT
        for plugin in self.profile.permits:
            status, wait = plugin.permit(state, pod, node)
            if status.code == WAIT:
                pending.add(plugin.name)
                timeout = min(timeout, max(0.0, wait))
            elif not status.ok:
                self.unreserve(state, pod, node)
                return _named(
                    Status(UNSCHEDULABLE, status.message, cause=status.cause), plugin.name
                )
        if pending:
            deadline = self.profile.handle.clock() + timeout
            self.profile.handle.waiting[pod.key] = WaitingPod(pod, node, pending, deadline)
            return Status(WAIT, f"waiting on {', '.join(sorted(pending))}")
        return OK

    def unreserve(self, state: CycleState, pod: Pod, node: str) -> None:
        """Every Reserve plugin's Unreserve in reverse order, then the pod leaves the cache."""
        self.profile.handle.waiting.pop(pod.key, None)
        for plugin in reversed(self.profile.reserves):
            plugin.unreserve(state, pod, node)
        self.snap.forget(pod.key)

    # --- the binding cycle -------------------------------------------------------------------

    def bind(self, decision: Decision, now: float | None = None) -> Status:
        """Wait on Permit (Wait while plugins still hold the pod before its deadline; `now`
        math.inf: a replay, where no time passes, times the wait out), then the Bind
        plugins in order until one does not Skip. A failure unreserves the pod."""
        pod, node, state = decision.pod, decision.node, decision.state
        if node is None:
            return decision.status
        waiting = self.profile.handle.waiting.get(pod.key)
        if waiting is not None:
            now = self.profile.handle.clock() if now is None else now
            if waiting.rejected is not None:
                self.unreserve(state, pod, node)
                return waiting.rejected
            if waiting.pending and now < waiting.deadline:
                return Status(WAIT, f"waiting on {', '.join(sorted(waiting.pending))}")
            if waiting.pending:
                self.unreserve(state, pod, node)
                late = ", ".join(sorted(waiting.pending))
                return Status(
                    UNSCHEDULABLE, "rejected due to timeout after waiting on permit", late
                )
            del self.profile.handle.waiting[pod.key]
        for plugin in self.profile.binders:
            status = plugin.bind(state, pod, node)
            if status.code == SKIP:
                continue
            if not status.ok:
                self.unreserve(state, pod, node)
            return _named(status, plugin.name)
        return OK


def _named(status: Status, plugin: str) -> Status:
    if status.plugin:
        return status
    return Status(status.code, status.message, plugin, status.cause)
