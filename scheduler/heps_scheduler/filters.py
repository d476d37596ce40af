"""Filter plugins: each returns, for the candidate nodes, which ones the pod may use.

Node-static checks (taints, selectors, affinity, GPU model) are cached per pod shape:
pods of one JupyterHub profile share them, so a cycle evaluates them once.
"""

from __future__ import annotations

from collections import Counter
from typing import Protocol

import numpy as np

from heps_scheduler.cycle import CycleState
from heps_scheduler.model import GPU_MODEL_LABEL, Node, Pod, Taint, selector_matches
from heps_scheduler.snapshot import Ints, Mask, Snapshot


class FilterPlugin(Protocol):
    name: str
    reason: str
    """What FailedScheduling says about a node this plugin dropped."""

    def filter(self, state: CycleState, pod: Pod, snap: Snapshot, nodes: Ints) -> Mask: ...


def _tolerated(pod: Pod, taint: Taint) -> bool:
    return any(t.tolerates(taint) for t in pod.tolerations)


class _ConditionFilter:
    """A node condition that Kubernetes mirrors as a NoSchedule taint: it keeps new pods
    away unless they tolerate that taint."""

    name: str
    reason: str
    taint: Taint
    column: str
    """The snapshot's boolean column holding the condition."""

    def filter(self, state: CycleState, pod: Pod, snap: Snapshot, nodes: Ints) -> Mask:
        if _tolerated(pod, self.taint):
            return np.ones(len(nodes), dtype=bool)
        ok: Mask = ~getattr(snap, self.column)[nodes]
        return ok


class NodeUnschedulable(_ConditionFilter):
    name, reason, column = "NodeUnschedulable", "node(s) were unschedulable", "unschedulable"
    taint = Taint("node.kubernetes.io/unschedulable", "", "NoSchedule")


class DiskPressure(_ConditionFilter):
    """The DiskPressure condition, or its taint (folded into the column by the snapshot)."""

    name, reason, column = "DiskPressure", "node(s) had disk pressure", "disk_pressure"
    taint = Taint("node.kubernetes.io/disk-pressure", "", "NoSchedule")


class _StaticFilter:
    """A check that depends only on the node and the pod's shape, cached per shape."""

    def __init__(self) -> None:
        self._cache: dict[tuple[int, object], Mask] = {}

    def shape(self, pod: Pod) -> object:
        raise NotImplementedError

    def allows(self, pod: Pod, node: Node) -> bool:
        raise NotImplementedError

    def filter(self, state: CycleState, pod: Pod, snap: Snapshot, nodes: Ints) -> Mask:
        key = (id(snap), self.shape(pod))
        mask = self._cache.get(key)
        if mask is None:
            mask = np.array([self.allows(pod, node) for node in snap.nodes], dtype=bool)
            self._cache[key] = mask
        selected: Mask = mask[nodes]
        return selected


class TaintToleration(_StaticFilter):
    name, reason = "TaintToleration", "node(s) had untolerated taint"
    _HANDLED = ("node.kubernetes.io/unschedulable", "node.kubernetes.io/disk-pressure")

    def shape(self, pod: Pod) -> object:
        return pod.tolerations

    def allows(self, pod: Pod, node: Node) -> bool:
        return all(
            _tolerated(pod, taint)
            for taint in node.taints
            if taint.effect in ("NoSchedule", "NoExecute") and taint.key not in self._HANDLED
        )


class NodeAffinity(_StaticFilter):
    """nodeSelector, required node affinity and the allowed GPU models."""

    name, reason = "NodeAffinity", "node(s) didn't match Pod's node affinity/selector"

    def shape(self, pod: Pod) -> object:
        return (tuple(sorted(pod.node_selector.items())), pod.node_affinity, pod.gpu_models)

    def allows(self, pod: Pod, node: Node) -> bool:
        labels = node.labels
        if any(labels.get(k) != v for k, v in pod.node_selector.items()):
            return False
        if pod.node_affinity and not any(selector_matches(t, labels) for t in pod.node_affinity):
            return False
        if pod.gpu_models and pod.gpus:
            model = labels.get(GPU_MODEL_LABEL, node.gpu_model)
            return model in pod.gpu_models
        return True


class NodeResourcesFit:
    """cpu, memory, ephemeral storage, whole GPUs and shares of one GPU."""

    name, reason = "NodeResourcesFit", "Insufficient resources"

    def filter(self, state: CycleState, pod: Pod, snap: Snapshot, nodes: Ints) -> Mask:
        ok: Mask = (snap.cpu_free[nodes] >= pod.cpu_milli) & (
            snap.mem_free[nodes] >= pod.memory_mib
        )
        if pod.ephemeral_mib:
            ok &= (snap.eph_cap[nodes] - snap.eph_used[nodes]) >= pod.ephemeral_mib
        if pod.shares_gpu:
            ok &= snap.max_free[nodes] >= pod.gpu_milli
        elif pod.gpus:
            ok &= snap.whole_free[nodes] >= pod.gpus
        return ok


def _domain(snap: Snapshot, node: int, key: str) -> str | None:
    return snap.nodes[node].labels.get(
        key, snap.nodes[node].name if key == "kubernetes.io/hostname" else None
    )


class InterPodAntiAffinity:
    """Required anti-affinity, both ways: the pod's terms against placed pods, and placed
    pods' terms against the pod."""

    name, reason = (
        "InterPodAntiAffinity",
        "node(s) didn't satisfy existing pods anti-affinity rules",
    )

    def filter(self, state: CycleState, pod: Pod, snap: Snapshot, nodes: Ints) -> Mask:
        banned: set[tuple[str, str]] = set()
        # Without terms of its own, only placed pods that carry terms can ban a node.
        placed_pods = snap.placements if pod.anti_affinity else snap.anti_affine
        for placed in placed_pods.values():
            for term in pod.anti_affinity:
                if selector_matches(term.selector, placed.pod.labels):
                    domain = _domain(snap, placed.node, term.topology_key)
                    if domain is not None:
                        banned.add((term.topology_key, domain))
            for term in placed.pod.anti_affinity:
                if selector_matches(term.selector, pod.labels):
                    domain = _domain(snap, placed.node, term.topology_key)
                    if domain is not None:
                        banned.add((term.topology_key, domain))
        if not banned:
            return np.ones(len(nodes), dtype=bool)
        keys = {k for k, _ in banned}
        return np.array(
            [not any((k, _domain(snap, int(n), k)) in banned for k in keys) for n in nodes],
            dtype=bool,
        )


class PodTopologySpread:
    """topologySpreadConstraints with whenUnsatisfiable: DoNotSchedule."""

    name, reason = "PodTopologySpread", "node(s) didn't match pod topology spread constraints"

    def __init__(self, affinity: NodeAffinity) -> None:
        self.affinity = affinity

    def filter(self, state: CycleState, pod: Pod, snap: Snapshot, nodes: Ints) -> Mask:
        ok = np.ones(len(nodes), dtype=bool)
        if not pod.spread:
            return ok
        eligible = np.flatnonzero(
            self.affinity.filter(state, pod, snap, np.arange(len(snap.nodes)))
        )
        for constraint in pod.spread:
            counts: Counter[str] = Counter()
            for n in eligible:  # every eligible domain counts, even when empty
                domain = snap.nodes[n].labels.get(constraint.topology_key)
                if domain is not None:
                    counts[domain] += 0
            for placed in snap.placements.values():
                domain = snap.nodes[placed.node].labels.get(constraint.topology_key)
                matches = selector_matches(constraint.selector, placed.pod.labels)
                if domain is not None and domain in counts and matches:
                    counts[domain] += 1
            least = min(counts.values(), default=0)
            for i, n in enumerate(nodes):
                domain = snap.nodes[n].labels.get(constraint.topology_key)
                if domain is None or counts[domain] + 1 - least > constraint.max_skew:
                    ok[i] = False
        return ok
