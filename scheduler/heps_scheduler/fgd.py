"""Fragmentation Gradient Descent (Weng et al., "Beware of Fragmentation", USENIX ATC 2023),
as its published simulator computes it (hkust-adsl/kubernetes-scheduler-simulator).

Target workload: the most common exact task specs (cpu, GPUs, share of each GPU, allowed
GPU models) that together cover 95% of the tasks, CPU-only tasks included, with their
frequencies renormalised. For one task class m, a node's free GPU capacity is a fragment
unless m fits there (enough cpu, an allowed GPU model, `gpus` GPUs each with `gpu_milli`
free); when it fits, the GPUs with less free than `gpu_milli` are still fragments. A
CPU-only class counts all free GPU capacity as fragment. The expected fragment of a node
is the frequency-weighted sum over the classes; memory plays no part, as in the paper.

The score of a node is the decrease of that expected fragment when the pod lands there,
squashed as the paper's code does: int(sigmoid(decrease / 1000) * 100). A GPU share tries
every GPU that fits and keeps the best (the first on ties); whole GPUs go to the first free
ones. Equal scores go to the node whose name sorts first (`Profile.tie_break`).

A node's score for a pod depends only on the node's state and the pod's cpu and GPU
request, so scores are kept per request shape and node, and recomputed only for the nodes
whose state changed since that shape was last scored: in a replay, a few dozen nodes per
decision instead of the whole cluster. The pod's cpu matters only through the interval
of class cpu requests the node's remaining cpu falls in, so shapes that differ in cpu
alone share one table per GPU request and interval (`GpuFragmentation._lookup`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from heps_scheduler.cycle import CycleState
from heps_scheduler.model import Pod
from heps_scheduler.snapshot import Floats, Ints, Snapshot

COVERAGE = 0.95
"""Share of tasks the target workload's most common specs must cover (the paper's 95%)."""
FULL = 1000
"""Thousandths in a whole GPU: the most a GPU can have free."""
DISTINCT_ABOVE = 256
"""Nodes a share is scored on at once above which each distinct node state is computed
once (at 512 nodes, a quarter of the time; at 256, about even)."""


@dataclass(frozen=True)
class TaskClass:
    """One task spec of the target workload, with its share of the tasks."""

    cpu_milli: float
    gpus: int
    gpu_milli: int
    """Thousandths of each GPU; 0 for a CPU-only task."""
    weight: float
    gpu_models: tuple[str, ...] = ()
    """Allowed GPU models (empty: any)."""


def typical_pods(pods: list[Pod], coverage: float = COVERAGE) -> list[TaskClass]:
    """The most frequent exact specs covering `coverage` of `pods`, as the paper's code picks
    them (descending count; equal counts by descending spec), frequencies renormalised."""
    counts = Counter(
        (pod.cpu_milli, pod.gpu_milli if pod.gpus else 0, pod.gpus, pod.gpu_models) for pod in pods
    )
    ranked = sorted(counts.items(), key=lambda item: (item[1], item[0]), reverse=True)
    chosen, covered = [], 0
    for spec, count in ranked:
        if covered >= coverage * len(pods):
            break
        chosen.append((spec, count))
        covered += count
    return [
        TaskClass(float(cpu), gpus, milli, count / covered, models)
        for (cpu, milli, gpus, models), count in chosen
    ]


def whole_gpu_share(classes: list[TaskClass]) -> float:
    """The share of the target workload's GPU demand that tasks of one whole GPU make."""
    demand = [
        (c.weight * c.gpus * c.gpu_milli, c.gpus == 1 and c.gpu_milli >= 1000) for c in classes
    ]
    total = sum(d for d, _ in demand)
    return sum(d for d, whole in demand if whole) / total if total else 0.0


class Workload:
    """The target workload arranged for vectorised fragment computations on a snapshot.

    Classes are grouped by (gpu_milli, gpus): within a group only cpu and the GPU model
    differ, so the weight of a group's classes that a node's free cpu and model admit is
    one lookup in a table [group, model, cpu breakpoint] built once. What a GPU adds to a
    node's statistics depends only on its free thousandths (0..FULL), so that too is a
    lookup, in floats as the fragment is computed (whole numbers, exact)."""

    def __init__(self, classes: list[TaskClass], models: list[str]) -> None:
        self.classes = classes
        gpu_classes = [c for c in classes if c.gpus and c.gpu_milli]
        self.thresholds = sorted({c.gpu_milli for c in gpu_classes})
        groups = sorted({(c.gpu_milli, c.gpus) for c in gpu_classes})
        self.group_threshold = np.array([self.thresholds.index(m) for m, _ in groups], dtype=int)
        self.group_gpus = np.array([g for _, g in groups], dtype=np.float64)
        self.breakpoints = np.array(sorted({c.cpu_milli for c in gpu_classes}))
        weights = np.zeros((len(groups), len(models), len(self.breakpoints) + 1))
        for c in gpu_classes:
            g = groups.index((c.gpu_milli, c.gpus))
            column = int(np.searchsorted(self.breakpoints, c.cpu_milli, side="right"))
            for m, model in enumerate(models):
                if not c.gpu_models or model in c.gpu_models:
                    weights[g, m, column] += c.weight
        self.table = np.cumsum(weights, axis=2)
        values = np.arange(FULL + 1)
        at_least = values >= np.array(self.thresholds, dtype=np.int64)[:, None]
        self.by_free: Floats = np.stack([at_least, at_least * values]).astype(np.float64)
        """[count or usable, threshold, free thousandths]: 1 and the free capacity for a GPU
        with at least the threshold free, else 0."""

    def per_gpu(self, free: npt.NDArray[np.int64]) -> Floats:
        """[count or usable, threshold, node, GPU] for GPUs with `free` thousandths free."""
        result: Floats = self.by_free[:, :, free]
        return result

    def stats(self, free: npt.NDArray[np.int64]) -> tuple[Floats, Floats]:
        """Per threshold t and node: GPUs with at least t free, and their free capacity."""
        count, usable = self.per_gpu(free).sum(axis=-1)
        return count, usable

    def fragment(
        self, total: Floats, cpu_free: Floats, model: Ints, count: Floats, usable: Floats
    ) -> Floats:
        """Expected fragment: free capacity minus what each admitted class could use.

        `count` and `usable` are indexed [threshold, ...] and broadcast with the rest (the
        table lookup broadcasts `model` with the cpu column as numpy indexing does)."""
        column = np.searchsorted(self.breakpoints, cpu_free, "right")
        admitted = self.table[:, model, column]
        group_count = count[self.group_threshold]
        fits = group_count >= self.group_gpus.reshape((-1,) + (1,) * (count.ndim - 1))
        used = (admitted * np.where(fits, usable[self.group_threshold], 0.0)).sum(axis=0)
        result: Floats = total - used
        return result


@dataclass
class _NodeState:
    """Per-node statistics of the state at `version` (the snapshot's node versions)."""

    version: Ints
    count: Floats
    usable: Floats
    fragment: Floats


@dataclass
class _Scores:
    """A request shape's score per node, with the node version it holds for (-1: none)."""

    score: Floats
    version: Ints


@dataclass
class _Table:
    """A GPU request's scores and chosen GPUs per node and cpu interval, with the node
    version each holds for (-1: none)."""

    score: Floats
    gpu: Ints
    version: Ints


def _squash(gain: Floats) -> Floats:
    """The paper code's int(sigmoid(gain / 1000) * 100): whole points, so many nodes tie."""
    result: Floats = np.floor(100.0 / (1.0 + np.exp(gain / -1000.0)))
    return result


class GpuFragmentation:
    """FGD's score: 0..100, higher where the expected fragment grows least."""

    name = "GpuFragmentation"

    def __init__(self, classes: list[TaskClass]) -> None:
        self.classes = classes
        self._snap: Snapshot | None = None
        self._state: _NodeState | None = None
        self._scores: dict[tuple[float, int, int], _Scores] = {}
        self._tables: dict[tuple[int, int], _Table] = {}

    def _bind(self, snap: Snapshot) -> tuple[Workload, Ints]:
        if self._snap is not snap:
            models = sorted({n.gpu_model for n in snap.nodes})
            self._workload = Workload(self.classes, models)
            self._model = np.array([models.index(n.gpu_model) for n in snap.nodes])
            self._snap, self._state, self._scores, self._tables = snap, None, {}, {}
        return self._workload, self._model

    def state(self, snap: Snapshot) -> _NodeState:
        """Statistics of every node's current state, refreshed where the node changed."""
        workload, model = self._bind(snap)
        state = self._state
        if state is None:
            count, usable = workload.stats(snap.gpu_free)
            state = _NodeState(snap.node_version - 1, count, usable, np.zeros(len(snap.nodes)))
            self._state = state
        changed = np.flatnonzero(state.version != snap.node_version)
        if len(changed):
            free, cpu = snap.gpu_free[changed], snap.cpu_cap[changed] - snap.cpu_used[changed]
            count, usable = workload.stats(free)
            state.count[:, changed], state.usable[:, changed] = count, usable
            state.fragment[changed] = workload.fragment(
                free.sum(axis=1), cpu, model[changed], count, usable
            )
            state.version[changed] = snap.node_version[changed]
        return state

    def decrease(self, pod: Pod, snap: Snapshot, nodes: Ints) -> Floats:
        """Per candidate (and, for a GPU share, per GPU: shape nodes x GPUs, -inf where the
        share does not fit) how much the expected fragment shrinks with the pod there.

        The fragments before and after come from one computation: each node's placements
        (one per GPU for a share, else one) and the node as it is (the last) are its cases,
        along the last axis. A placement changes only its GPUs' share of the node's
        statistics, so a share's case is the node's statistics less its GPU's as it is
        plus its GPU's as it would be."""
        workload, model = self._bind(snap)
        free = snap.gpu_free[nodes]
        per_gpu = workload.per_gpu(free)
        now = per_gpu.sum(axis=-1)
        if pod.shares_gpu:
            fits = free >= pod.gpu_milli
            # where the share does not fit, the GPU is left as it is; that case is dropped
            left = workload.per_gpu(np.where(fits, free - pod.gpu_milli, free))
            after = now[..., None] - per_gpu + left
            taken = pod.gpu_milli
        else:
            whole = np.array([pod.gpus, pod.gpus * FULL], dtype=np.float64)
            after = now[..., None] - whole[:, None, None, None]  # whole GPUs: at every threshold
            taken = pod.gpus * FULL
        cases = np.concatenate([after, now[..., None]], axis=-1)
        take = np.full(cases.shape[-1], taken, dtype=np.int64)
        take[-1] = 0
        cpu = snap.cpu_cap[nodes] - snap.cpu_used[nodes]
        fragment = workload.fragment(
            free.sum(axis=1)[:, None] - take,
            cpu[:, None] - np.where(take > 0, pod.cpu_milli, 0),
            model[nodes][:, None],
            cases[0],
            cases[1],
        )
        gain = fragment[:, -1:] - fragment[:, :-1]
        result: Floats = np.where(fits, gain, -np.inf) if pod.shares_gpu else gain[:, 0]
        return result

    def _compute(self, pod: Pod, snap: Snapshot, nodes: Ints) -> tuple[Floats, Ints]:
        """Scores and chosen GPUs (a share: the best GPU, the first on ties) on `nodes`.

        A node's result depends only on its GPUs' free thousandths, its GPU model and the
        cpu intervals its free cpu falls in before and after the pod: where a share (a case
        per GPU) is scored on many nodes at once (a cluster of a few node types, mostly
        empty), each distinct state is computed once. Whole GPUs (one case per node) cost
        less computed outright."""
        if pod.shares_gpu and len(nodes) > DISTINCT_ABOVE:
            workload, model = self._bind(snap)
            cpu = snap.cpu_cap[nodes] - snap.cpu_used[nodes]
            state = np.column_stack(
                [
                    snap.gpu_free[nodes],
                    model[nodes],
                    np.searchsorted(workload.breakpoints, cpu, "right"),
                    np.searchsorted(workload.breakpoints, cpu - pod.cpu_milli, "right"),
                ]
            )
            _, first, inverse = np.unique(state, axis=0, return_index=True, return_inverse=True)
            if len(first) < len(nodes):
                each, gpus = self._compute(pod, snap, nodes[first])
                inverse = inverse.reshape(-1)
                return each[inverse], gpus[inverse]
        gain = self.decrease(pod, snap, nodes)
        if gain.ndim == 2:
            per_gpu = np.where(np.isfinite(gain), _squash(gain), -1.0)
            best: Ints = np.argmax(per_gpu, axis=1)
            scores: Floats = per_gpu.max(axis=1)
            return scores, best
        return _squash(gain), np.zeros(len(nodes), dtype=np.int64)

    def _lookup(self, pod: Pod, snap: Snapshot, nodes: Ints) -> tuple[Floats, Ints]:
        """Scores and chosen GPUs on `nodes`, from the pod's GPU request's table.

        The pod's cpu matters only through the cpu breakpoint interval the node's free cpu
        falls in once the pod is there (which task classes the node still admits), so one
        table per GPU request (GPUs, share) holds a score per node and interval, computed
        on demand and valid while the node's version stays: shapes that differ only in
        cpu share the work."""
        workload, _ = self._bind(snap)
        gpu_request = (pod.gpus, pod.gpu_milli if pod.shares_gpu else 0)
        table = self._tables.get(gpu_request)
        if table is None:
            shape = (len(snap.nodes), len(workload.breakpoints) + 1)
            table = _Table(np.zeros(shape), np.zeros(shape, dtype=np.int64), np.full(shape, -1))
            self._tables[gpu_request] = table
        version = snap.node_version[nodes]
        cpu = snap.cpu_cap[nodes] - snap.cpu_used[nodes] - pod.cpu_milli
        column = np.searchsorted(workload.breakpoints, cpu, "right")
        missing = table.version[nodes, column] != version
        if missing.any():
            todo, where = nodes[missing], column[missing]
            table.score[todo, where], table.gpu[todo, where] = self._compute(pod, snap, todo)
            table.version[todo, where] = version[missing]
        return table.score[nodes, column], table.gpu[nodes, column]

    def _memo(self, pod: Pod, snap: Snapshot, nodes: Ints) -> Floats:
        """The pod's request shape's scores per node, brought up to date on `nodes`: only
        the nodes changed since the shape last scored them are looked up again."""
        self._bind(snap)
        shape = (float(pod.cpu_milli), pod.gpus, pod.gpu_milli if pod.shares_gpu else 0)
        memo = self._scores.get(shape)
        if memo is None:
            if len(self._scores) >= 4096:  # a live cluster's shapes are unbounded
                self._scores.clear()
                self._tables.clear()
            n = len(snap.nodes)
            memo = _Scores(np.zeros(n), np.full(n, -1))
            self._scores[shape] = memo
        version = snap.node_version
        stale = nodes[memo.version[nodes] != version[nodes]]
        if len(stale):
            memo.score[stale], _ = self._lookup(pod, snap, stale)
            memo.version[stale] = version[stale]
        return memo.score

    def score(self, state: CycleState, pod: Pod, snap: Snapshot, nodes: Ints) -> Floats:
        result: Floats = self._memo(pod, snap, nodes)[nodes]
        return result

    def select_gpu(self, pod: Pod, snap: Snapshot, node: int) -> int:
        """The GPU a share takes on `node`: the best score, the lowest index on ties."""
        return int(self._lookup(pod, snap, np.array([node]))[1][0])

    def cluster_fragment(self, snap: Snapshot) -> float:
        """The cluster's expected fragment (thousandths of a GPU), the paper's frag amount."""
        return float(self.state(snap).fragment.sum())
