"""Workload variants of a pod list along openb's four axes, at any ratio.

The openb lists of Weng et al. (USENIX ATC 2023) vary one property of the default list
per family; measured on the seven lists in `../shared/traces/openb`, the ratio in a
family's name is:

- multigpu R: multi-GPU tasks make R% of the GPU tasks' GPU demand (multigpu20: 20.4%,
  the default 7.3%);
- gpushare R: tasks sharing a GPU make R% of the GPU demand (gpushare40: 40.1%,
  gpushare100: 100%, the default 28.5%);
- gpuspec R: R% of the GPU tasks name the GPU models they accept (gpuspec10: 10.4%;
  the default none);
- cpu R: CPU-only tasks request R per mille of the cluster's cpu (cpu050: 5.2% of the
  1,523 nodes' cpu, the default 15.3%, cpu0 none; the family runs to cpu300, 30%).

`generate` derives such a list from a base list (the default) as those lists were
derived: the tasks of the other kinds stay as they are; multigpu and gpushare replace
GPU tasks of the other kind with copies of the list's own tasks of the wanted kind (or the
reverse, to go below the base's ratio) until the kind's share of GPU demand reaches the
ratio; gpuspec draws constraints from the mix the gpuspec10 list carries; cpu keeps the
GPU tasks and draws the base's CPU-only tasks until their cpu reaches the ratio. openb's
multigpu lists add multi-GPU tasks instead of replacing others; the replay tunes every
list to the same share of GPU capacity, so only the mix matters, and replacing reaches
100% where adding never would.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from heps_scheduler.model import Node, Pod

AXES = ("multigpu", "gpushare", "gpuspec", "cpu")
MAX_RATIO = {"multigpu": 100, "gpushare": 100, "gpuspec": 100, "cpu": 1000}
SPEC_MIX = {
    "T4": 355,
    "G2": 120,
    "P100": 100,
    "V100M16|V100M32": 55,
    "P100|V100M16|V100M32": 26,
    "G2|P100|T4|V100M16|V100M32": 20,
    "G3": 17,
    "A10|G2|T4|V100M16|V100M32": 9,
    "P100|V100M16": 6,
    "P100|T4|V100M16|V100M32": 5,
    "V100M16": 4,
    "V100M32": 4,
    "A10|G2|P100|T4|V100M16|V100M32": 3,
    "T4|V100M16|V100M32": 1,
    "A10|T4": 1,
}
"""The GPU model constraints of openb_pod_list_gpuspec10.csv with their counts (its
'V100M16|V100M32|V100M32' counted as 'V100M16|V100M32')."""


class VariantError(ValueError):
    """A variant that cannot be made: unknown axis, ratio out of range, kind missing."""


@dataclass(frozen=True)
class Variant:
    axis: str
    ratio: float

    @property
    def label(self) -> str:
        return f"{self.axis}{self.ratio:g}"


def parse(text: str) -> Variant:
    """'multigpu:50' as a Variant; VariantError with the fix otherwise."""
    axis, _, value = text.partition(":")
    if axis not in AXES:
        raise VariantError(f"--variant {text!r}: give AXIS:RATIO, AXIS one of {', '.join(AXES)}")
    try:
        ratio = float(value)
    except ValueError:
        raise VariantError(f"--variant {text!r}: {value!r} is not a number") from None
    if not 0 <= ratio <= MAX_RATIO[axis]:  # NaN fails too
        raise VariantError(f"--variant {text!r}: the ratio must be 0..{MAX_RATIO[axis]}")
    return Variant(axis, ratio)


def _is_multi(pod: Pod) -> bool:
    return pod.gpus > 1


def _copy(pod: Pod, name: str) -> Pod:
    return replace(pod, name=name)


def _reshare(
    pods: list[Pod],
    wanted: Callable[[Pod], bool],
    share: float,
    label: str,
    rng: np.random.Generator,
) -> list[Pod]:
    """Swap GPU tasks between `wanted` and the other GPU tasks until the wanted ones make
    `share` of the GPU demand (the last swap may pass it by less than one task)."""
    result = list(pods)
    gpu = [i for i, p in enumerate(result) if p.gpus]
    kind = [result[i] for i in gpu if wanted(result[i])]
    rest = [result[i] for i in gpu if not wanted(result[i])]
    total = sum(result[i].gpu_demand_milli for i in gpu)
    have = sum(p.gpu_demand_milli for p in kind)
    up = have < share * total
    donors = kind if up else rest
    if not donors and have != share * total:
        need = "multi-GPU tasks" if label.startswith("multigpu") else "GPU-sharing tasks"
        raise VariantError(f"{label}: the base list has no {'' if up else 'other '}{need} to copy")
    victims = [i for i in gpu if wanted(result[i]) != up]
    order = rng.permutation(len(victims))
    for n, v in enumerate(order):  # at most one swap per GPU task: bounded
        if (have < share * total) != up:
            break
        i = victims[int(v)]
        donor = donors[int(rng.integers(len(donors)))]
        total += donor.gpu_demand_milli - result[i].gpu_demand_milli
        have += donor.gpu_demand_milli if up else -result[i].gpu_demand_milli
        result[i] = _copy(donor, f"{donor.name}-{label}-{n}")
    return result


def _constrain(pods: list[Pod], share: float, rng: np.random.Generator) -> list[Pod]:
    gpu = [i for i, p in enumerate(pods) if p.gpus]
    chosen = rng.choice(len(gpu), size=round(share * len(gpu)), replace=False)
    specs = list(SPEC_MIX)
    weights = np.array([SPEC_MIX[s] for s in specs], dtype=float)
    drawn = rng.choice(len(specs), size=len(chosen), p=weights / weights.sum())
    result = [replace(p, gpu_models=()) for p in pods]
    for index, spec in zip(chosen, drawn, strict=True):
        i = gpu[int(index)]
        result[i] = replace(result[i], gpu_models=tuple(specs[int(spec)].split("|")))
    return result


def _cpu_only(
    pods: list[Pod], target_milli: float, label: str, rng: np.random.Generator
) -> list[Pod]:
    gpu = [p for p in pods if p.gpus]
    base = [p for p in pods if not p.gpus and p.cpu_milli > 0]
    if target_milli > 0 and not base:
        raise VariantError(f"{label}: the base list has no CPU-only tasks to copy")
    added: list[Pod] = []
    cpu = 0
    # the base's tasks once each in a random order, then again: every draw adds >= 1 milli
    draws = (base[int(i)] for _ in itertools.count() for i in rng.permutation(len(base)))
    while base and cpu < target_milli:
        pod = next(draws)
        if cpu + pod.cpu_milli / 2 > target_milli:  # the draw that lands nearest the target
            break
        added.append(_copy(pod, f"{pod.name}-{label}-{len(added)}"))
        cpu += pod.cpu_milli
    return gpu + added


def generate(pods: list[Pod], nodes: list[Node], variant: Variant, seed: int = 0) -> list[Pod]:
    """The base list `pods` varied along one axis; the same seed gives the same list."""
    rng = np.random.default_rng(seed)
    ratio = variant.ratio / 100
    if variant.axis == "multigpu":
        return _reshare(pods, _is_multi, ratio, variant.label, rng)
    if variant.axis == "gpushare":
        return _reshare(pods, lambda p: p.shares_gpu, ratio, variant.label, rng)
    if variant.axis == "gpuspec":
        return _constrain(pods, ratio, rng)
    cluster_cpu = sum(node.cpu_milli for node in nodes)
    return _cpu_only(pods, cluster_cpu * variant.ratio / 1000, variant.label, rng)
