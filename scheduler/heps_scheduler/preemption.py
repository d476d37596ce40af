"""Preemption at PostFilter: when a pod fits no node, evict strictly lower-priority pods
from one node so that it fits (kube-scheduler's DefaultPreemption,
pkg/scheduler/framework/preemption).

A pod's priority is its `spec.priority` first, then its QoS class (args `classPriority`,
by default Guaranteed 2 > Burstable 1 > BestEffort 0): the openb trace's pods carry no
priority, only the class, and a facility's Guaranteed sessions are the ones it promised.

As kube-scheduler does it:

- only pods of strictly lower priority can be victims;
- a node is a candidate when the pod fits once every lower-priority pod on it is gone;
  then, most important first, each is reprieved while the pod still fits without it
  (selectVictimsOnNode), so the victims are few and of the lowest priority;
- among the candidates (kube-scheduler's `minCandidateNodesPercentage` /
  `minCandidateNodesAbsolute` of them) the node whose most important victim is least
  important wins, then fewer victims (pickOneNodeForPreemption);
- the victims are deleted and the pod nominated to the node; it is tried again, on that
  node first, once they are gone, and does not preempt again while they are leaving.

Unlike kube-scheduler:

- `keepAllocatedGpus` (on by default): a node is a candidate only when its victims hold
  no more GPU than the pod asks for, so a preemption never lowers the allocated GPUs;
  within one priority the pods holding more GPU are reprieved first, and among
  candidates fewer victims' GPUs win before fewer victims;
- only resources are freed: a node that fails any other filter (taints, affinity, GPU
  model, anti-affinity, topology spread) is no candidate, and PodDisruptionBudgets,
  `preemptionPolicy` and pods nominated elsewhere are not read;
- the dry run is vectorised: what every node would have free without its lower-priority
  pods (summed from the snapshot's per-kind columns, for the nodes changed since the last
  call) rules nodes out, each pod shape's screen and order of nodes are redone only for
  the nodes changed since its last call, and victims are then chosen exactly on the
  nodes needing the fewest GPUs freed first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import chain

import numpy as np

from heps_scheduler.cycle import ERROR, OK, UNSCHEDULABLE, CycleState, Status
from heps_scheduler.filters import FilterPlugin
from heps_scheduler.model import BEST_EFFORT, BURSTABLE, GUARANTEED, Pod
from heps_scheduler.snapshot import NO_SHARE, Floats, Ints, Mask, Snapshot

Priority = tuple[int, int]
Evictor = Callable[[Pod, Pod, str], Status]
"""Deletes a victim (victim, preemptor, node): the API in `serve`; a replay's drops it."""
ARGS = frozenset(
    {
        "classPriority",
        "keepAllocatedGpus",
        "minCandidateNodesPercentage",
        "minCandidateNodesAbsolute",
    }
)
CLASS_PRIORITY = {GUARANTEED: 2, BURSTABLE: 1, BEST_EFFORT: 0}
RESOLVABLE = "NodeResourcesFit"
"""The one filter whose failures evicting pods can resolve here."""
MAX_CANDIDATES = 1000
"""Most candidate nodes a configuration may ask the dry run to find (a bound on its work)."""
NONE = NO_SHARE
"""More thousandths than any GPU has: no pod, or no way."""
COST_BITS = NONE.bit_length()
PICK_SLICE = 64
"""Nodes taken at a time, in order, for the dry run."""


@dataclass(frozen=True)
class PreemptionArgs:
    class_priority: dict[str, int] = field(default_factory=lambda: dict(CLASS_PRIORITY))
    keep_allocated_gpus: bool = True
    min_candidate_nodes_percentage: float = 10
    min_candidate_nodes_absolute: int = 100

    def candidates(self, nodes: int) -> int:
        """kube-scheduler's calculateNumCandidates."""
        wanted = max(int(nodes * self.min_candidate_nodes_percentage / 100), 1)
        return min(max(wanted, self.min_candidate_nodes_absolute), nodes)


def parse_args(where: str, args: dict[str, object]) -> PreemptionArgs:
    """The plugin's pluginConfig args; ValueError naming the field and the fix."""
    unknown = sorted(set(args) - ARGS)
    if unknown:
        known = ", ".join(sorted(ARGS))
        raise ValueError(f"{where}: unknown args {', '.join(unknown)}; known: {known}")
    classes = args.get("classPriority", CLASS_PRIORITY)
    if not isinstance(classes, dict) or set(classes) - set(CLASS_PRIORITY):
        raise ValueError(
            f"{where}: classPriority: map QoS classes ({', '.join(CLASS_PRIORITY)}) to integers"
        )
    for name, value in classes.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1000:
            raise ValueError(f"{where}: classPriority: {name}: {value!r}; give an integer 0..1000")
    keep = args.get("keepAllocatedGpus", True)
    if not isinstance(keep, bool):
        raise ValueError(f"{where}: keepAllocatedGpus: {keep!r}; use true or false")
    percentage = args.get("minCandidateNodesPercentage", 10)
    absolute = args.get("minCandidateNodesAbsolute", 100)
    if isinstance(percentage, bool) or not isinstance(percentage, int | float):
        percentage = -1
    if not 0 <= percentage <= 100:
        raise ValueError(f"{where}: minCandidateNodesPercentage: give a number 0..100")
    if isinstance(absolute, bool) or not isinstance(absolute, int):
        absolute = -1
    if not 0 <= absolute <= MAX_CANDIDATES:
        raise ValueError(f"{where}: minCandidateNodesAbsolute: give an integer 0..{MAX_CANDIDATES}")
    if not percentage and not absolute:  # as kube-scheduler's validation
        raise ValueError(
            f"{where}: minCandidateNodesPercentage and minCandidateNodesAbsolute are both 0; "
            "give one of them"
        )
    return PreemptionArgs(
        {**CLASS_PRIORITY, **{str(k): int(v) for k, v in classes.items()}},
        keep,
        float(percentage),
        absolute,
    )


@dataclass
class _Lower:
    """Per node, what pods of lower priority than one preemptor's hold."""

    version: Ints
    """The node versions these rows were computed at."""
    cpu: Floats
    mem: Floats
    eph: Floats
    gpu: Ints
    """Thousandths of each GPU."""
    smallest: Ints
    """The smallest thousandths of each GPU one of those pods holds (NONE: no pod)."""
    held: Ints
    """Thousandths of GPUs they hold in all."""
    whole: Ints
    """GPUs wholly free without them."""
    widest: Ints
    """The largest free share of one GPU without them."""
    cost: Ints
    """Column k: the fewest thousandths of GPU held on k + 1 GPUs that can be wholly
    freed (NONE where too few can)."""


@dataclass
class _Candidate:
    node: int
    victims: list[Pod]
    rank: tuple[Priority, int, int, int]


@dataclass
class _Tried:
    """Per node, what one pod shape's dry runs found, at the node versions they looked at:
    a node unchanged since gives the same answer (pods of one JupyterHub profile, or of
    one trace task, share their shape)."""

    version: Ints
    """The node versions victims were chosen at (-1: never)."""
    screened: Ints
    """The node versions `room` was computed at (-1: never)."""
    room: Mask
    """Whether the pod would fit with every lower-priority pod gone, resources only; off
    as well where victims were sought and none found."""
    cost: Ints
    """The fewest thousandths of GPU its victims would hold (NONE: no way)."""
    rank: Ints
    """The order of candidates, packed: cpu or memory short, then cost, then the GPU
    lower-priority pods hold."""
    found: dict[int, _Candidate] = field(default_factory=dict)


Shape = tuple[Priority, int, int, int, int, int]
MAX_SHAPES = 256
"""Pod shapes whose dry runs are remembered (the least recently used are forgotten)."""


class ClassPreemption:
    """kube-scheduler's DefaultPreemption over priority, then QoS class (module docstring)."""

    name = "ClassPreemption"

    def __init__(
        self,
        args: PreemptionArgs,
        filters: Callable[[], list[FilterPlugin]],
        evictor: Callable[[], Evictor | None],
    ) -> None:
        self.args = args
        self.filters = filters
        self.evictor = evictor
        self._lower: dict[Priority, _Lower] = {}
        self._tried: OrderedDict[Shape, _Tried] = OrderedDict()
        self._snap: Snapshot | None = None
        self.pending: dict[str, tuple[str, frozenset[str]]] = {}
        """Preemptor key -> (nominated node, keys of its victims not yet seen gone)."""

    def priority(self, pod: Pod) -> Priority:
        return (pod.priority, self.args.class_priority.get(pod.qos, 0))

    def post_filter(
        self, state: CycleState, pod: Pod, snap: Snapshot, reasons: dict[str, int]
    ) -> tuple[Status, str | None]:
        waiting = self._still_leaving(pod, snap)
        if waiting is not None:
            return waiting
        if state.rejected is not None:
            return Status(UNSCHEDULABLE, "preemption: rejected at PreFilter"), None
        prio = self.priority(pod)
        classes = self.args.class_priority
        if not any(n and (p, classes.get(q, 0)) < prio for (p, q), n in snap.kinds.items()):
            return Status(UNSCHEDULABLE, "preemption: no pod of lower priority"), None
        lower = self._lower_than(prio, snap)
        tried = self._tried_for(pod, prio, snap)
        possible = self._possible(state, pod, snap, lower, tried)
        if not len(possible):
            message = "preemption: no node where evicting lower-priority pods makes it fit"
            if self.args.keep_allocated_gpus:
                message += " without lowering the allocated GPUs"
            return Status(UNSCHEDULABLE, message), None
        best = self._pick(pod, prio, snap, possible, tried)
        if best is None:
            message = "preemption: no node where evicting lower-priority pods makes it fit"
            return Status(UNSCHEDULABLE, message), None
        node = snap.nodes[best.node].name
        evict = self.evictor()
        for victim in best.victims:
            status = OK if evict is None else evict(victim, pod, node)
            if evict is None:
                snap.forget(victim.key)
            if not status.ok:
                return Status(ERROR, f"preemption: {status.message}", cause=status.cause), None
        left = frozenset(v.key for v in best.victims if v.key in snap.placements)
        if left:
            self.pending[pod.key] = (node, left)
        return OK, node

    def _still_leaving(self, pod: Pod, snap: Snapshot) -> tuple[Status, str | None] | None:
        """kube-scheduler's PodEligibleToPreemptOthers: a pod whose victims are still on its
        nominated node waits for them instead of preempting again. Entries whose victims
        are all gone are dropped (their preemptor may have been deleted meanwhile)."""
        self.pending = {
            key: (node, left)
            for key, (node, victims) in self.pending.items()
            if (left := frozenset(k for k in victims if k in snap.placements))
        }
        if pod.key not in self.pending:
            return None
        node, left = self.pending[pod.key]
        message = f"preemption: waiting for {len(left)} victim(s) to leave {node}"
        return Status(UNSCHEDULABLE, message), node

    def _tried_for(self, pod: Pod, prio: Priority, snap: Snapshot) -> _Tried:
        shape = (prio, pod.cpu_milli, pod.memory_mib, pod.ephemeral_mib, pod.gpus, pod.gpu_milli)
        tried = self._tried.get(shape)
        if tried is None:
            n = len(snap.nodes)
            never = np.full(n, -1, dtype=np.int64)
            zero = np.zeros(n, dtype=np.int64)
            tried = _Tried(never, never.copy(), np.zeros(n, dtype=bool), zero, zero.copy())
            self._tried[shape] = tried
            if len(self._tried) > MAX_SHAPES:
                self._tried.popitem(last=False)
        self._tried.move_to_end(shape)
        return tried

    def _lower_than(self, prio: Priority, snap: Snapshot) -> _Lower:
        """The rows of every node changed since the last call, from the snapshot's per-kind
        columns (kept as pods are assumed and forgotten)."""
        if snap is not self._snap:  # a new snapshot (serve rebuilds it): nothing carries over
            self._snap, self._lower = snap, {}
            self._tried.clear()
        n = len(snap.nodes)
        lower = self._lower.get(prio)
        if lower is None:
            lower = _Lower(
                np.full(n, -1, dtype=np.int64),
                np.zeros(n),
                np.zeros(n),
                np.zeros(n),
                np.zeros((n, snap.max_gpus), dtype=np.int64),
                np.full((n, snap.max_gpus), NONE, dtype=np.int64),
                np.zeros(n, dtype=np.int64),
                np.zeros(n, dtype=np.int64),
                np.zeros(n, dtype=np.int64),
                np.zeros((n, snap.max_gpus), dtype=np.int64),
            )
            self._lower[prio] = lower
        changed = np.flatnonzero(snap.node_version != lower.version)
        if not len(changed):
            return lower
        classes = self.args.class_priority
        kinds = [h for (p, q), h in snap.held.items() if (p, classes.get(q, 0)) < prio]
        cpu, mem, eph = np.zeros(len(changed)), np.zeros(len(changed)), np.zeros(len(changed))
        gpu = np.zeros((len(changed), snap.max_gpus), dtype=np.int64)
        smallest = np.full_like(gpu, NONE)
        for held in kinds:
            cpu += held.cpu[changed]
            mem += held.mem[changed]
            eph += held.eph[changed]
            gpu += held.gpu[changed]
            np.minimum(smallest, held.smallest[changed], out=smallest)
        lower.cpu[changed], lower.mem[changed], lower.eph[changed] = cpu, mem, eph
        lower.gpu[changed], lower.smallest[changed] = gpu, smallest
        used = snap.gpu_free[changed]
        free = used + gpu
        whole = free == 1000
        lower.held[changed], lower.whole[changed] = gpu.sum(axis=1), whole.sum(axis=1)
        lower.widest[changed] = free.max(axis=1)
        cheapest = np.sort(np.where(whole, 1000 - used, NONE), axis=1)
        lower.cost[changed] = np.minimum(np.cumsum(cheapest, axis=1), NONE)
        lower.version[changed] = snap.node_version[changed]
        return lower

    def _possible(
        self, state: CycleState, pod: Pod, snap: Snapshot, lower: _Lower, tried: _Tried
    ) -> Ints:
        """Nodes where the pod would fit with every lower-priority pod gone: first those
        with the cpu and memory it needs, then those needing the fewest GPUs freed, then
        those where lower-priority pods hold the least GPU."""
        held_bits = (snap.max_gpus * 1000).bit_length()  # what lower-priority pods may hold
        stale = np.flatnonzero(tried.screened != snap.node_version)
        if len(stale):  # only the nodes changed since this shape's last screen
            tried.room[stale] = _room(pod, snap, lower, stale)
            cost = _cost(pod, snap, lower, stale, self.args.keep_allocated_gpus)
            cpu_free = snap.cpu_cap[stale] - snap.cpu_used[stale]
            mem_free = snap.mem_cap[stale] - snap.mem_used[stale]
            # cpu or memory to free as well: more victims, perhaps holding GPUs
            short = (cpu_free < pod.cpu_milli) | (mem_free < pod.memory_mib)
            tried.cost[stale] = cost
            tried.rank[stale] = (
                short.astype(np.int64) << COST_BITS | cost
            ) << held_bits | lower.held[stale]
            tried.screened[stale] = snap.node_version[stale]
        filters = self.filters()
        names = [plugin.name for plugin in filters]
        if RESOLVABLE in names:  # the nodes that passed every filter before it, this cycle
            reached = state.seen.get(RESOLVABLE)
            if not isinstance(reached, np.ndarray):
                return np.zeros(0, dtype=np.int64)  # another filter ruled out every node
            candidates = reached[tried.room[reached]]
            filters = filters[names.index(RESOLVABLE) + 1 :]
        else:
            candidates = np.flatnonzero(tried.room)
        for plugin in filters:
            if plugin.name != RESOLVABLE and len(candidates):
                candidates = candidates[plugin.filter(state, pod, snap, candidates)]
        if pod.shares_gpu:
            candidates = candidates[tried.cost[candidates] < NONE]
        rank = tried.rank[candidates]
        node_bits = len(snap.nodes).bit_length()
        if 1 + COST_BITS + held_bits + node_bits > 63:  # a cluster beyond any seen: lexsort
            order = np.lexsort((candidates, rank))
            return candidates[order]
        # one sort of one key (short, cost, held, node): several times a lexsort's speed
        result: Ints = np.sort(rank << node_bits | candidates) & ((1 << node_bits) - 1)
        return result

    def _pick(
        self, pod: Pod, prio: Priority, snap: Snapshot, nodes: Ints, tried: _Tried
    ) -> _Candidate | None:
        """Victims chosen exactly on nodes in order until enough candidates are found
        (kube-scheduler's dry run); the best of them."""
        wanted = self.args.candidates(len(snap.nodes))
        found: list[_Candidate] = []
        # in slices: a dozen nodes usually suffice of the thousands in order
        slices = (nodes[i : i + PICK_SLICE].tolist() for i in range(0, len(nodes), PICK_SLICE))
        for node in chain.from_iterable(slices):
            version = int(snap.node_version[node])
            if tried.version[node] == version:
                candidate = tried.found.get(node)
            else:
                candidate = self._victims(pod, prio, snap, node)
                tried.version[node] = version
                if candidate is None:  # not screened again until the node changes
                    tried.room[node] = False
                    tried.found.pop(node, None)
                else:
                    tried.found[node] = candidate
            if candidate is not None:
                found.append(candidate)
                if len(found) >= wanted:
                    break
        return min(found, key=lambda c: c.rank, default=None)

    def _victims(self, pod: Pod, prio: Priority, snap: Snapshot, node: int) -> _Candidate | None:
        """kube-scheduler's selectVictimsOnNode: every lower-priority pod removed, then each
        put back, most important first, while the pod still fits."""
        cpu = float(snap.cpu_cap[node] - snap.cpu_used[node])
        mem = float(snap.mem_cap[node] - snap.mem_used[node])
        eph = float(snap.eph_cap[node] - snap.eph_used[node])
        gpu: list[int] = snap.gpu_free[node].tolist()
        classes, placements = self.args.class_priority, snap.placements
        potential = []
        for key, placed in snap.pods_on[node].items():
            rank = (placed.priority, classes.get(placed.qos, 0))
            if rank < prio:
                cpu, mem = cpu + placed.cpu_milli, mem + placed.memory_mib
                eph += placed.ephemeral_mib
                slots = placements[key].gpu_slots
                share = placed.gpu_milli if placed.shares_gpu else 1000
                for slot in slots:
                    gpu[slot] += share
                # most important first: priority, then more GPU held, then the older
                potential.append((rank, share * len(slots), -placed.created, placed, share, slots))
        fits = _gpu_fit(pod)
        if cpu < pod.cpu_milli or mem < pod.memory_mib or eph < pod.ephemeral_mib or not fits(gpu):
            return None
        potential.sort(key=lambda p: p[:3], reverse=True)
        victims: list[Pod] = []
        top: Priority = (0, 0)
        gpus = 0
        for rank, held, _, placed, share, slots in potential:
            kept = (cpu - placed.cpu_milli, mem - placed.memory_mib, eph - placed.ephemeral_mib)
            if (
                kept[0] >= pod.cpu_milli
                and kept[1] >= pod.memory_mib
                and kept[2] >= pod.ephemeral_mib
            ):
                for slot in slots:
                    gpu[slot] -= share
                if fits(gpu):
                    cpu, mem, eph = kept
                    continue
                for slot in slots:
                    gpu[slot] += share
            top = rank if not victims else max(top, rank)
            gpus += held
            victims.append(placed)
        if not victims or (self.args.keep_allocated_gpus and gpus > pod.gpu_demand_milli):
            return None  # no victims: another filter than resources keeps the pod out
        return _Candidate(node, victims, (top, gpus, len(victims), node))


def _room(pod: Pod, snap: Snapshot, lower: _Lower, nodes: Ints) -> Mask:
    """Whether the pod would fit on each of `nodes` with every lower-priority pod gone."""
    cpu = snap.cpu_cap[nodes] - snap.cpu_used[nodes] + lower.cpu[nodes]
    mem = snap.mem_cap[nodes] - snap.mem_used[nodes] + lower.mem[nodes]
    ok: Mask = (cpu >= pod.cpu_milli) & (mem >= pod.memory_mib)
    if pod.ephemeral_mib:
        ok &= snap.eph_cap[nodes] - snap.eph_used[nodes] + lower.eph[nodes] >= pod.ephemeral_mib
    if pod.shares_gpu:
        ok &= lower.widest[nodes] >= pod.gpu_milli
    elif pod.gpus:
        ok &= lower.whole[nodes] >= pod.gpus
    return ok


def _cost(pod: Pod, snap: Snapshot, lower: _Lower, nodes: Ints, keep_gpus: bool) -> Ints:
    """Per node, the fewest thousandths of GPU the pod's victims hold there (NONE: no way)."""
    if pod.shares_gpu:
        # a GPU to share: at least what it lacks, and at least its smallest victim
        free = snap.gpu_free[nodes]
        need = np.where(
            free < pod.gpu_milli,
            np.maximum(pod.gpu_milli - free, lower.smallest[nodes]),
            0,
        )
        usable = free + lower.gpu[nodes] >= pod.gpu_milli
        if keep_gpus:
            usable &= need <= pod.gpu_milli
        cost: Ints = np.where(usable, need, NONE).min(axis=1)
        return cost
    if pod.gpus:  # whole GPUs: every pod on a GPU to free goes
        whole: Ints = lower.cost[nodes, pod.gpus - 1]
        return whole
    return np.zeros(len(nodes), dtype=np.int64)


def _gpu_fit(pod: Pod) -> Callable[[list[int]], bool]:
    """Whether one node's free thousandths of each GPU hold the pod's GPUs."""
    if pod.shares_gpu:
        return lambda gpu: max(gpu) >= pod.gpu_milli
    if pod.gpus:
        return lambda gpu: gpu.count(1000) >= pod.gpus
    return lambda gpu: True
