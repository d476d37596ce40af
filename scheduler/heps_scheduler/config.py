"""Scheduler configuration: profiles of plugin weights, validated at load.

A YAML file names one profile per policy; the presets reproduce the baselines and the
HEPS policy so the simulator and the live scheduler build profiles the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from heps_scheduler import fgd
from heps_scheduler import scores as sc
from heps_scheduler.filters import default_filters
from heps_scheduler.framework import Profile

PRESETS: dict[str, dict[str, float]] = {
    # kube-scheduler defaults: NodeResourcesFit (LeastAllocated) and BalancedAllocation,
    # weight 1 each, over cpu and memory.
    "kube-default": {"LeastAllocated": 1, "BalancedAllocation": 1},
    # The JupyterHub user-scheduler: NodeResourcesFit with MostAllocated.
    "most-allocated": {"MostAllocated": 1},
    # FGD as its paper's simulator runs it: the fragmentation gradient alone, every
    # feasible node scored, ties to the node name sorting first (fgd.py).
    "fgd": {"GpuFragmentation": 1},
    # HEPS: FGD's truncated gradient, blended with LeastAllocated so that cpu and memory
    # stay spread (GPU nodes keep the cpu their idle GPUs need, and one multi-GPU job does
    # not take a whole idle node from many single-GPU users), at 70% of that weight for
    # pods of one GPU or a share (FGD packs those more); CPU-only pods go to CPU-only nodes
    # first (GpuNodeAvoidance), leaving GPU nodes' cpu to GPU pods; remaining
    # ties to the node name sorting first, which packs consistently. Real load and QoS act
    # on node metrics only (constant in a replay). Weights chosen on the openb traces
    # (docs/scheduler.md, ablation).
    "heps": {
        "GpuFragmentation": 100,
        "LeastAllocated": 210,
        "LeastAllocatedLargePods": 90,
        "GpuNodeAvoidance": 300,
        "LoadAware": 30,
        "QosAware": 30,
    },
}
BEST_FIT = {"kube-default": False, "most-allocated": False, "fgd": True, "heps": True}
TIE_BREAK = {"kube-default": "random", "most-allocated": "random", "fgd": "name", "heps": "name"}
SCORE_ALL = {"kube-default": 0.0, "most-allocated": 0.0, "fgd": 100.0, "heps": 100.0}
TIE_BREAKS = ("random", "name")


@dataclass(frozen=True)
class MetricsSettings:
    max_age: float = 60.0
    """Seconds after which a node's metrics count as unknown."""
    unknown_load: float = 0.5
    """Load assumed for a node without fresh metrics (0 idle .. 1 saturated)."""


@dataclass(frozen=True)
class ProfileSettings:
    name: str
    weights: dict[str, float]
    best_fit_gpu: bool = True
    percentage_of_nodes_to_score: float = 0
    tie_break: str = "random"


@dataclass(frozen=True)
class SchedulerConfig:
    scheduler_name: str = "heps-scheduler"
    profiles: list[ProfileSettings] = field(default_factory=lambda: [preset_settings("heps")])
    metrics: MetricsSettings = MetricsSettings()


def preset_settings(name: str) -> ProfileSettings:
    if name not in PRESETS:
        raise ValueError(f"unknown policy {name!r}; known: {', '.join(PRESETS)}")
    return ProfileSettings(
        name, dict(PRESETS[name]), BEST_FIT[name], SCORE_ALL[name], TIE_BREAK[name]
    )


def build(
    settings: ProfileSettings,
    classes: list[fgd.TaskClass],
    metrics: MetricsSettings = MetricsSettings(),
) -> Profile:
    load = sc.LoadAware(metrics.max_age, metrics.unknown_load)
    fragmentation = fgd.GpuFragmentation(classes)
    plugins: dict[str, sc.ScorePlugin] = {
        "LeastAllocated": sc.LeastAllocated(),
        "LeastAllocatedLargePods": sc.LeastAllocatedLargePods(),
        "MostAllocated": sc.MostAllocated(),
        "BalancedAllocation": sc.BalancedAllocation(),
        "GpuFragmentation": fragmentation,
        "GpuNodeAvoidance": sc.GpuNodeAvoidance(),
        "GpuPacking": sc.GpuPacking(),
        "LoadAware": load,
        "QosAware": sc.QosAware(load),
    }
    unknown = sorted(set(settings.weights) - set(plugins))
    if unknown:
        raise ValueError(
            f"profile {settings.name}: unknown score plugins {', '.join(unknown)}; "
            f"known: {', '.join(sorted(plugins))}"
        )
    return Profile(
        name=settings.name,
        filters=default_filters(),
        scores=[(plugins[n], w) for n, w in settings.weights.items() if w],
        best_fit_gpu=settings.best_fit_gpu,
        percentage_of_nodes_to_score=settings.percentage_of_nodes_to_score,
        tie_break=settings.tie_break,
        gpu_selector=fragmentation if settings.weights.get("GpuFragmentation") else None,
    )


def load(path: Path) -> SchedulerConfig:
    """Read a scheduler config file; ValueError naming the file and field on bad input."""
    data = yaml.safe_load(path.read_text()) or {}
    allowed = {"schedulerName", "profiles", "metrics"}
    if set(data) - allowed:
        raise ValueError(
            f"{path}: unknown keys {sorted(set(data) - allowed)}; use {sorted(allowed)}"
        )
    profiles = []
    for i, raw in enumerate(data.get("profiles") or [{"name": "heps"}]):
        where = f"{path}: profiles[{i}]"
        if "name" not in raw:
            raise ValueError(f"{where}: missing name")
        base = preset_settings(raw["name"]) if raw["name"] in PRESETS else None
        weights = raw.get("scores", base.weights if base else None)
        if not isinstance(weights, dict) or not all(
            isinstance(v, int | float) and v >= 0 for v in weights.values()
        ):
            raise ValueError(f"{where}: scores must map plugin names to weights >= 0")
        tie_break = raw.get("tieBreak", base.tie_break if base else "random")
        if tie_break not in TIE_BREAKS:
            raise ValueError(f"{where}: tieBreak must be one of {', '.join(TIE_BREAKS)}")
        profiles.append(
            ProfileSettings(
                raw["name"],
                {str(k): float(v) for k, v in weights.items()},
                bool(raw.get("bestFitGpu", base.best_fit_gpu if base else True)),
                float(
                    raw.get(
                        "percentageOfNodesToScore",
                        base.percentage_of_nodes_to_score if base else 0,
                    )
                ),
                tie_break,
            )
        )
    metrics = data.get("metrics") or {}
    return SchedulerConfig(
        scheduler_name=data.get("schedulerName", "heps-scheduler"),
        profiles=profiles,
        metrics=MetricsSettings(
            float(metrics.get("maxAge", 60)), float(metrics.get("unknownLoad", 0.5))
        ),
    )
