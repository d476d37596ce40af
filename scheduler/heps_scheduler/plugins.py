"""The plugin registry: every plugin by name, as kube-scheduler's in-tree registry.

A registration names the plugin's type (its methods say which extension points it
extends), how to make it from its `pluginConfig` args and the framework handle, and the
args it accepts. A profile makes each enabled plugin once and uses that one instance at
every point it is enabled for. Out-of-tree plugins join a copy of the registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from heps_scheduler import fgd
from heps_scheduler import filters as fl
from heps_scheduler import preemption as pr
from heps_scheduler import scores as sc
from heps_scheduler.cycle import OK, CycleState, Status
from heps_scheduler.framework import Handle
from heps_scheduler.model import Pod

POINTS = {
    "preFilter": "pre_filter",
    "filter": "filter",
    "postFilter": "post_filter",
    "preScore": "pre_score",
    "score": "score",
    "reserve": "reserve",
    "permit": "permit",
    "bind": "bind",
}
"""The extension points a configuration names (KubeSchedulerConfiguration's keys), with
the method a plugin implements for each."""

Args = dict[str, object]


@dataclass(frozen=True)
class Registration:
    kind: type
    make: Callable[[Args, Handle], object]
    args: frozenset[str] = frozenset()
    """The keys its pluginConfig args may carry."""
    check: Callable[[str, Args], object] | None = None
    """Validates its args when a configuration is loaded (ValueError: one line)."""

    @property
    def points(self) -> set[str]:
        return {point for point, method in POINTS.items() if hasattr(self.kind, method)}


class DefaultBinder:
    """Binds through the handle's binder (the Binding API); in a replay, where the handle
    has none, the assumed pod is bound."""

    name = "DefaultBinder"

    def __init__(self, handle: Handle) -> None:
        self.handle = handle

    def bind(self, state: CycleState, pod: Pod, node: str) -> Status:
        return OK if self.handle.binder is None else self.handle.binder(pod, node)


def _load(handle: Handle) -> sc.LoadAware:
    return sc.LoadAware(handle.max_age, handle.unknown_load)


def _preemption(args: Args, handle: Handle) -> pr.ClassPreemption:
    return pr.ClassPreemption(
        pr.parse_args("ClassPreemption args", args),
        lambda: handle.filters,
        lambda: handle.evictor,
    )


def _plain(kind: type) -> Registration:
    """A plugin made without args."""
    return Registration(kind, lambda args, handle: kind())


REGISTRY: dict[str, Registration] = {
    "NodeUnschedulable": _plain(fl.NodeUnschedulable),
    "DiskPressure": _plain(fl.DiskPressure),
    "TaintToleration": _plain(fl.TaintToleration),
    "NodeAffinity": _plain(fl.NodeAffinity),
    "NodeResourcesFit": _plain(fl.NodeResourcesFit),
    "InterPodAntiAffinity": _plain(fl.InterPodAntiAffinity),
    "PodTopologySpread": Registration(
        fl.PodTopologySpread, lambda args, handle: fl.PodTopologySpread(fl.NodeAffinity())
    ),
    "LeastAllocated": _plain(sc.LeastAllocated),
    "LeastAllocatedLargePods": _plain(sc.LeastAllocatedLargePods),
    "MostAllocated": _plain(sc.MostAllocated),
    "BalancedAllocation": _plain(sc.BalancedAllocation),
    "GpuFragmentation": Registration(
        fgd.GpuFragmentation, lambda args, handle: fgd.GpuFragmentation(handle.classes)
    ),
    "GpuNodeAvoidance": _plain(sc.GpuNodeAvoidance),
    "GpuPacking": _plain(sc.GpuPacking),
    "LoadAware": Registration(
        sc.LoadAware, lambda args, handle: _load(handle), frozenset({"maxAge", "unknownLoad"})
    ),
    "QosAware": Registration(sc.QosAware, lambda args, handle: sc.QosAware(_load(handle))),
    "DefaultBinder": Registration(DefaultBinder, lambda args, handle: DefaultBinder(handle)),
    "ClassPreemption": Registration(pr.ClassPreemption, _preemption, pr.ARGS, pr.parse_args),
}
"""LoadAware's args are the metrics settings every load-reading plugin of the config uses
(QosAware included)."""

DEFAULT_PLUGINS: dict[str, tuple[str, ...]] = {
    "preFilter": (),
    "filter": (
        "NodeUnschedulable",
        "DiskPressure",
        "TaintToleration",
        "NodeAffinity",
        "NodeResourcesFit",
        "InterPodAntiAffinity",
        "PodTopologySpread",
    ),
    "postFilter": (),
    "preScore": (),
    "reserve": (),
    "permit": (),
    "bind": ("DefaultBinder",),
}
"""Every profile's plugins at the points other than score (kube-scheduler's filters, the
default binder); a configuration may disable or add to them."""
