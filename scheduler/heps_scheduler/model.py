"""Pods and nodes as plain data, and Kubernetes' QoS classes computed exactly as it does."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

GUARANTEED, BURSTABLE, BEST_EFFORT = "Guaranteed", "Burstable", "BestEffort"
QOS_RANK = {GUARANTEED: 0, BURSTABLE: 1, BEST_EFFORT: 2}
GPU_RESOURCE = "nvidia.com/gpu"
GPU_SHARE_RESOURCE = "heps.ihep.ac.cn/gpu-milli"
"""Fractional GPU requests (thousandths of one GPU), as GPU-sharing device plugins expose."""
GPU_MODEL_LABEL = "nvidia.com/gpu.product"

_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_SUFFIX = {
    "": 1,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def quantity(value: str | int | float) -> float:
    """A Kubernetes quantity ('500m', '16Gi', 2) as a plain number of base units."""
    if isinstance(value, int | float):
        return float(value)
    match = _QUANTITY.match(value.strip())
    if not match or match.group(2) not in _SUFFIX:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    return float(match.group(1)) * _SUFFIX[match.group(2)]


@dataclass(frozen=True)
class Toleration:
    key: str = ""
    operator: str = "Equal"
    value: str = ""
    effect: str = ""

    def tolerates(self, taint: Taint) -> bool:
        if self.effect and self.effect != taint.effect:
            return False
        if self.operator == "Exists":
            return not self.key or self.key == taint.key
        return self.key == taint.key and self.value == taint.value


@dataclass(frozen=True)
class Taint:
    key: str
    value: str = ""
    effect: str = "NoSchedule"


@dataclass(frozen=True)
class Requirement:
    """One matchExpressions entry: In, NotIn, Exists, DoesNotExist, Gt, Lt."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key, "")
        if self.operator == "In":
            return present and value in self.values
        if self.operator == "NotIn":
            return not present or value not in self.values
        if self.operator == "Exists":
            return present
        if self.operator == "DoesNotExist":
            return not present
        if self.operator in ("Gt", "Lt") and present:
            try:
                number, bound = int(value), int(self.values[0])
            except ValueError:
                return False
            return number > bound if self.operator == "Gt" else number < bound
        return False


def selector_matches(requirements: tuple[Requirement, ...], labels: dict[str, str]) -> bool:
    return all(r.matches(labels) for r in requirements)


@dataclass(frozen=True)
class AntiAffinityTerm:
    """requiredDuringScheduling pod anti-affinity: no pod matching `selector` in the same
    `topology_key` domain."""

    selector: tuple[Requirement, ...]
    topology_key: str = "kubernetes.io/hostname"


@dataclass(frozen=True)
class SpreadConstraint:
    """topologySpreadConstraints with whenUnsatisfiable: DoNotSchedule."""

    max_skew: int
    topology_key: str
    selector: tuple[Requirement, ...]


@dataclass(frozen=True)
class Pod:
    name: str
    cpu_milli: int = 0
    memory_mib: int = 0
    ephemeral_mib: int = 0
    gpus: int = 0
    """Whole GPUs, or 1 with `gpu_milli` < 1000 for a share of one GPU."""
    gpu_milli: int = 0
    """Thousandths of each GPU used: 1000 for whole GPUs."""
    namespace: str = "default"
    uid: str = ""
    """The API object's uid ("" in a trace): a deletion names it as a precondition."""
    priority: int = 0
    qos: str = BURSTABLE
    created: float = 0.0
    labels: dict[str, str] = field(default_factory=dict)
    node_selector: dict[str, str] = field(default_factory=dict)
    node_affinity: tuple[tuple[Requirement, ...], ...] = ()
    """Required node affinity: OR of terms, each an AND of requirements."""
    gpu_models: tuple[str, ...] = ()
    """Allowed GPU models (empty: any)."""
    tolerations: tuple[Toleration, ...] = ()
    anti_affinity: tuple[AntiAffinityTerm, ...] = ()
    spread: tuple[SpreadConstraint, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def shares_gpu(self) -> bool:
        return self.gpus == 1 and 0 < self.gpu_milli < 1000

    @property
    def gpu_demand_milli(self) -> int:
        """GPU resources the pod takes, in thousandths of a GPU."""
        return self.gpu_milli if self.shares_gpu else self.gpus * 1000

    @property
    def gpu_class(self) -> str:
        if self.gpus == 0:
            return "cpu-only"
        if self.shares_gpu:
            return "shared-gpu"
        return "whole-gpu" if self.gpus == 1 else "multi-gpu"


@dataclass(frozen=True)
class Node:
    name: str
    cpu_milli: int
    memory_mib: int
    ephemeral_mib: int = 1 << 30
    gpus: int = 0
    gpu_model: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    unschedulable: bool = False
    disk_pressure: bool = False


def qos_class(
    containers: list[dict[str, Any]], init_containers: list[dict[str, Any]] | None = None
) -> str:
    """The pod's QoS class, by Kubernetes' rules (pkg/apis/core/v1/helper/qos).

    Only cpu and memory count. Guaranteed: every container sets limits for both and its
    requests (defaulting to the limits) equal them. BestEffort: nobody sets any request or
    limit. Otherwise Burstable.
    """
    everyone = [*(init_containers or []), *containers]
    any_set = False
    guaranteed = True
    for container in everyone:
        resources = container.get("resources") or {}
        limits = {
            k: quantity(v)
            for k, v in (resources.get("limits") or {}).items()
            if k in ("cpu", "memory")
        }
        requests = {
            k: quantity(v)
            for k, v in (resources.get("requests") or {}).items()
            if k in ("cpu", "memory")
        }
        if any(v != 0 for v in requests.values()) or any(v != 0 for v in limits.values()):
            any_set = True
        for name in ("cpu", "memory"):
            if name not in limits or requests.get(name, limits[name]) != limits[name]:
                guaranteed = False
    if not any_set:
        return BEST_EFFORT
    return GUARANTEED if guaranteed else BURSTABLE


def pod_requests(
    containers: list[dict[str, Any]], init_containers: list[dict[str, Any]] | None = None
) -> dict[str, float]:
    """Effective requests: sum over containers, at least the largest init container."""

    def of(container: dict[str, Any]) -> dict[str, float]:
        resources = container.get("resources") or {}
        merged = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
        return {k: quantity(v) for k, v in merged.items()}

    total: dict[str, float] = {}
    for container in containers:
        for name, value in of(container).items():
            total[name] = total.get(name, 0.0) + value
    for container in init_containers or []:
        for name, value in of(container).items():
            total[name] = max(total.get(name, 0.0), value)
    return total
