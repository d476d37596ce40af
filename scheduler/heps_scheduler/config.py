"""Scheduler configuration: profiles of plugin weights, validated at load.

A YAML file names one profile per policy; the presets reproduce the baselines and the
HEPS policy so the simulator and the live scheduler build profiles the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from heps_scheduler import fgd
from heps_scheduler.framework import Handle, Profile
from heps_scheduler.plugins import DEFAULT_PLUGINS, POINTS, REGISTRY, Registration
from heps_scheduler.scores import SPREADING, SpreadingWithoutVictims, multi_gpu_share

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
    # (docs/scheduler.md, ablation). The spreading drops out where the learned workload is
    # mostly multi-GPU or shared tasks (SPREAD_THRESHOLD): there it only breaks FGD's packing,
    # unless every running pod is of one class and few tasks are multi-GPU
    # (SPREAD_WITHOUT_VICTIMS): then nothing can be preempted, and spreading fails fewer pods.
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
    spread_threshold: float = 0.0
    """Spreading plugins (SPREADING) count only while one-whole-GPU tasks make at least
    this share of the target workload's GPU demand (fgd.whole_gpu_share); 0: always."""
    scheduler_name: str = ""
    """The `schedulerName` of the pods this profile schedules ("": the config's)."""
    spread_without_victims: float = 0.0
    """Below `spread_threshold`, spreading still counts for a pod while every running pod
    is of its priority and QoS class (nothing could give way to it) and multi-GPU tasks
    make less than this share of the target workload's GPU demand; 0: never."""
    plugins: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_PLUGINS))
    """The plugins at every point but score (whose plugins are `weights`), in order."""
    args: dict[str, dict[str, object]] = field(default_factory=dict)
    """pluginConfig args by plugin name."""


@dataclass(frozen=True)
class SchedulerConfig:
    scheduler_name: str = "heps-scheduler"
    profiles: list[ProfileSettings] = field(default_factory=lambda: [preset_settings("heps")])
    metrics: MetricsSettings = MetricsSettings()


POST_FILTER = {"heps": ("ClassPreemption",)}
PRESET_ARGS: dict[str, dict[str, dict[str, object]]] = {
    "heps": {"ClassPreemption": {"minCandidateNodesPercentage": 0, "minCandidateNodesAbsolute": 10}}
}
"""heps preempts lower-priority pods (by QoS class: the trace's pods carry no priority) for
a pod that fits nowhere (preemption.py), choosing among 10 candidate nodes, not
kube-scheduler's 10% (at least 100): on three generated variants (seed 7) 1, 10 and 152
candidates gave outcomes within about 10 pods and 10 GPUs of each other (docs/scheduler.md),
and fewer cost less time. The baselines
run as their authors simulate them: kube-default's DefaultPreemption could never act on
pods of one priority."""

SPREAD_THRESHOLD = {"heps": 0.67}
"""heps spreads by cpu and memory only while one-whole-GPU tasks make at least this share
of the learned target workload's GPU demand; below, it is FGD with CPU-only pods off GPU
nodes. The leave-one-family-out rule's choice on generated variants only, seeds 100-104
(`bench/scheduler_bench.py tuning`, docs/scheduler.md); no openb list took part."""
SPREAD_WITHOUT_VICTIMS = {"heps": 0.18}
"""Below the threshold, heps still spreads while no running pod is of another class than
the pod (a list of one class, as openb's multigpu lists: preemption has nothing to take,
and spreading is what keeps the count of failed pods down, by failing large pods instead
of the many small ones that arrive once the GPUs are full) and multi-GPU tasks make less
than this share of the learned GPU demand (above it, the large pods that spreading fails
leave GPUs idle). Chosen on generated variants of one class (docs/scheduler.md)."""


def preset_settings(name: str) -> ProfileSettings:
    """A preset's profile: its score plugins, each also at preScore where it has one (as
    kube-scheduler's multiPoint enables a plugin at every point it extends)."""
    if name not in PRESETS:
        raise ValueError(f"unknown policy {name!r}; known: {', '.join(PRESETS)}")
    return ProfileSettings(
        name,
        dict(PRESETS[name]),
        BEST_FIT[name],
        SCORE_ALL[name],
        TIE_BREAK[name],
        SPREAD_THRESHOLD.get(name, 0.0),
        spread_without_victims=SPREAD_WITHOUT_VICTIMS.get(name, 0.0),
        plugins={**with_pre_score(PRESETS[name]), "postFilter": POST_FILTER.get(name, ())},
        args={p: dict(a) for p, a in PRESET_ARGS.get(name, {}).items()},
    )


def with_pre_score(weights: dict[str, float]) -> dict[str, tuple[str, ...]]:
    """The default plugins of every point, and at preScore the score plugins that have one."""
    pre_score = tuple(n for n in weights if n in REGISTRY and "preScore" in REGISTRY[n].points)
    return {**DEFAULT_PLUGINS, "preScore": pre_score}


def build(
    settings: ProfileSettings,
    classes: list[fgd.TaskClass],
    metrics: MetricsSettings = MetricsSettings(),
    registry: dict[str, Registration] = REGISTRY,
) -> Profile:
    """The profile's plugins made from the registry, one instance per plugin name shared by
    every point it is enabled at; ValueError naming the plugin when one is unknown or does
    not extend a point it is enabled at."""
    handle = Handle(classes, metrics.max_age, metrics.unknown_load)
    weights = dict(settings.weights)
    gate: list[Any] = []
    if fgd.whole_gpu_share(classes) < settings.spread_threshold:
        if multi_gpu_share(classes) < settings.spread_without_victims:
            gate.append(SpreadingWithoutVictims())
        else:
            for name in SPREADING:  # any spreading weight breaks FGD's packing tie-break
                weights.pop(name, None)
    made: dict[str, object] = {}

    def plugin(name: str, point: str) -> object:
        registration = registry.get(name)
        if registration is None:
            raise ValueError(
                f"profile {settings.name}: unknown {point} plugin {name}; "
                f"known: {', '.join(sorted(registry))}"
            )
        if point not in registration.points:
            raise ValueError(f"profile {settings.name}: plugin {name} does not extend {point}")
        if name not in made:
            made[name] = registration.make(settings.args.get(name, {}), handle)
        return made[name]

    def at(point: str) -> list[Any]:
        return [plugin(name, point) for name in settings.plugins.get(point, ())]

    scores: list[tuple[Any, float]] = [(plugin(n, "score"), w) for n, w in weights.items() if w]
    fragmentation = made.get("GpuFragmentation")
    handle.filters = at("filter")
    return Profile(
        name=settings.name,
        filters=handle.filters,
        scores=scores,
        best_fit_gpu=settings.best_fit_gpu,
        percentage_of_nodes_to_score=settings.percentage_of_nodes_to_score,
        tie_break=settings.tie_break,
        gpu_selector=fragmentation if isinstance(fragmentation, fgd.GpuFragmentation) else None,
        pre_filters=at("preFilter"),
        post_filters=at("postFilter"),
        pre_scores=gate + at("preScore"),
        reserves=at("reserve"),
        permits=at("permit"),
        binders=at("bind"),
        handle=handle,
    )


MAX_CONFIG_BYTES = 1 << 20
MAX_WEIGHT = 1e6
SCORE_PLUGINS = tuple(name for name, r in REGISTRY.items() if "score" in r.points)


def _number(where: str, value: object, low: float, high: float) -> float:
    """A finite number within [low, high] (YAML booleans are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}: {value!r} is not a number; give one from {low:g} to {high:g}")
    if not low <= value <= high:  # NaN and infinities fail here
        raise ValueError(f"{where}: {value!r} is outside {low:g}..{high:g}")
    return float(value)


def _mapping(where: str, value: object) -> dict[str, object]:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(value).__name__}")
    return {str(k): v for k, v in value.items()}


def _known(where: str, data: dict[str, object], allowed: set[str]) -> None:
    if set(data) - allowed:
        raise ValueError(
            f"{where}: unknown keys {sorted(set(data) - allowed)}; use {sorted(allowed)}"
        )


def _dns_name(where: str, name: object) -> str:
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", name):
        raise ValueError(f"{where}: {name!r} is not a DNS subdomain name")
    return name


def _profile(where: str, raw: object, allow_empty: bool = False) -> ProfileSettings:
    data = _mapping(where, raw)
    keys = {"name", "scores", "bestFitGpu", "percentageOfNodesToScore", "tieBreak"}
    _known(where, data, keys | {"spreadThreshold", "spreadWithoutVictims", "schedulerName"})
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: name: give the profile a name (a preset: {', '.join(PRESETS)})")
    base = preset_settings(name) if name in PRESETS else ProfileSettings(name, {})
    raw_weights = data.get("scores", base.weights)
    if not raw_weights and not allow_empty:
        raise ValueError(f"{where}: scores: map score plugins to weights (not a preset: {name})")
    weights = {}
    for plugin, weight in _mapping(f"{where}: scores", raw_weights or {}).items():
        if plugin not in SCORE_PLUGINS:
            known = ", ".join(SCORE_PLUGINS)
            raise ValueError(f"{where}: scores: unknown score plugins {plugin}; known: {known}")
        weights[plugin] = _number(f"{where}: scores: {plugin}", weight, 0, MAX_WEIGHT)
    best_fit = data.get("bestFitGpu", base.best_fit_gpu)
    if not isinstance(best_fit, bool):
        raise ValueError(f"{where}: bestFitGpu: {best_fit!r}; use true or false")
    threshold = _number(
        f"{where}: spreadThreshold", data.get("spreadThreshold", base.spread_threshold), 0, 1
    )
    without_victims = _number(
        f"{where}: spreadWithoutVictims",
        data.get("spreadWithoutVictims", base.spread_without_victims),
        0,
        1,
    )
    tie_break = data.get("tieBreak", base.tie_break)
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"{where}: tieBreak must be one of {', '.join(TIE_BREAKS)}")
    percentage = _number(
        f"{where}: percentageOfNodesToScore",
        data.get("percentageOfNodesToScore", base.percentage_of_nodes_to_score),
        0,
        100,
    )
    scheduler = data.get("schedulerName")
    scheduler = "" if scheduler is None else _dns_name(f"{where}: schedulerName", scheduler)
    return ProfileSettings(
        name,
        weights,
        best_fit,
        percentage,
        str(tie_break),
        threshold,
        scheduler,
        without_victims,
        plugins={**with_pre_score(weights), "postFilter": base.plugins.get("postFilter", ())},
        args=base.args,
    )


V1 = "kubescheduler.config.k8s.io/v1"
PROFILE_ARGS = "HepsProfile"
"""The pluginConfig entry whose args choose a profile's preset and its settings."""
PROFILE_KEYS = {"preset", "tieBreak", "bestFitGpu", "spreadThreshold", "spreadWithoutVictims"}


def _items(where: str, value: object) -> list[dict[str, object]]:
    if not isinstance(value, list):
        raise ValueError(f"{where}: expected a list")
    return [_mapping(f"{where}[{i}]", item) for i, item in enumerate(value)]


UNSUPPORTED_POINTS = ("multiPoint", "queueSort", "preEnqueue", "preBind", "postBind")


def _merge(
    where: str, point: str, defaults: list[tuple[str, float]], raw: object
) -> list[tuple[str, float]]:
    """kube-scheduler's mergePluginSet: the defaults minus the disabled ('*': all of them),
    a default enabled again keeps its place (with the new weight), the others follow."""
    data = _mapping(where, raw or {})
    _known(where, data, {"enabled", "disabled"})
    disabled: set[str] = set()
    for i, entry in enumerate(_items(f"{where}: disabled", data.get("disabled") or [])):
        _known(f"{where}: disabled[{i}]", entry, {"name"})
        name = entry.get("name")
        if name != "*" and name not in REGISTRY:
            raise ValueError(f"{where}: disabled[{i}]: unknown plugin {name!r}")
        disabled.add(str(name))
    enabled: dict[str, float] = {}
    for i, entry in enumerate(_items(f"{where}: enabled", data.get("enabled") or [])):
        _known(f"{where}: enabled[{i}]", entry, {"name", "weight"})
        name = str(entry.get("name"))
        if name not in REGISTRY:
            known = SCORE_PLUGINS if point == "score" else sorted(REGISTRY)
            raise ValueError(
                f"{where}: enabled[{i}]: unknown {point} plugins {name}; known: {', '.join(known)}"
            )
        if point not in REGISTRY[name].points:
            raise ValueError(f"{where}: enabled[{i}]: plugin {name} does not extend {point}")
        if name in enabled:
            raise ValueError(f"{where}: enabled[{i}]: plugin {name} is enabled twice")
        if "weight" in entry and point != "score":
            raise ValueError(f"{where}: enabled[{i}]: weight: only score plugins have weights")
        weight = entry.get("weight", 0)
        # as kube-scheduler: an omitted (or zero) weight is 1
        enabled[name] = (
            _number(f"{where}: enabled[{i}]: {name}: weight", weight, 0, MAX_WEIGHT) or 1
        )
    merged = (
        []
        if "*" in disabled
        else [
            (name, enabled.pop(name, weight)) for name, weight in defaults if name not in disabled
        ]
    )
    return merged + list(enabled.items())


def _v1_profile(where: str, raw: object) -> tuple[ProfileSettings, dict[str, object]]:
    """A KubeSchedulerConfiguration profile and its LoadAware args (metrics settings)."""
    data = _mapping(where, raw)
    _known(where, data, {"schedulerName", "plugins", "pluginConfig", "percentageOfNodesToScore"})
    scheduler = _dns_name(f"{where}: schedulerName", data.get("schedulerName"))
    args: dict[str, dict[str, object]] = {}
    for i, entry in enumerate(_items(f"{where}: pluginConfig", data.get("pluginConfig") or [])):
        _known(f"{where}: pluginConfig[{i}]", entry, {"name", "args"})
        name = str(entry.get("name"))
        allowed = PROFILE_KEYS if name == PROFILE_ARGS else None
        if name in REGISTRY:
            allowed = set(REGISTRY[name].args)
        if allowed is None:
            raise ValueError(
                f"{where}: pluginConfig[{i}]: name {name!r} is no plugin; args are read for "
                f"{PROFILE_ARGS} ({', '.join(sorted(PROFILE_KEYS))}) and registered plugins"
            )
        if name in args:
            raise ValueError(f"{where}: pluginConfig[{i}]: {name} is configured twice")
        given = _mapping(f"{where}: pluginConfig[{i}]: args", entry.get("args") or {})
        if given and not allowed:
            raise ValueError(f"{where}: pluginConfig[{i}]: {name} takes no args")
        _known(f"{where}: pluginConfig[{i}]: args", given, allowed)
        check = REGISTRY[name].check if name in REGISTRY else None
        if check is not None:
            check(f"{where}: pluginConfig[{i}]: args", given)
        args[name] = given
    settings = args.pop(PROFILE_ARGS, {})
    preset = settings.get("preset", "heps")
    if preset not in PRESETS:
        raise ValueError(
            f"{where}: {PROFILE_ARGS} args: preset {preset!r}; known: {', '.join(PRESETS)}"
        )
    base = preset_settings(str(preset))
    plugins = _mapping(f"{where}: plugins", data.get("plugins") or {})
    unsupported = sorted(set(plugins) & set(UNSUPPORTED_POINTS))
    if unsupported:
        raise ValueError(
            f"{where}: plugins: {', '.join(unsupported)} not supported by heps-scheduler; "
            f"name plugins per point: {', '.join(POINTS)}"
        )
    _known(f"{where}: plugins", plugins, set(POINTS))
    points = {
        point: [
            name
            for name, _ in _merge(
                f"{where}: plugins: {point}",
                point,
                [(n, 1.0) for n in base.plugins.get(point, ())],
                plugins.get(point),
            )
        ]
        for point in POINTS
        if point != "score"
    }
    weights = _merge(
        f"{where}: plugins: score", "score", list(base.weights.items()), plugins.get("score")
    )
    flat = {
        "name": preset,
        "scores": dict(weights) or {},
        "schedulerName": scheduler,
        **{k: v for k, v in settings.items() if k != "preset"},
    }
    if "percentageOfNodesToScore" in data:
        flat["percentageOfNodesToScore"] = data["percentageOfNodesToScore"]
    profile = _profile(where, flat, allow_empty=True)
    return (
        replace(
            profile,
            plugins={p: tuple(n) for p, n in points.items()},
            # a plugin's args default field by field to the preset's
            args={n: {**base.args.get(n, {}), **args.get(n, {})} for n in {*base.args, *args}},
        ),
        args.get("LoadAware", {}),
    )


def _v1(path: Path, data: dict[str, object]) -> SchedulerConfig:
    """A KubeSchedulerConfiguration (kubescheduler.config.k8s.io/v1): every profile by its
    schedulerName, score plugins enabled (with weights) and disabled per profile."""
    _known(str(path), data, {"apiVersion", "kind", "profiles"})
    if data.get("apiVersion") != V1 or data.get("kind") != "KubeSchedulerConfiguration":
        raise ValueError(f"{path}: apiVersion/kind: give {V1} / KubeSchedulerConfiguration")
    raw_profiles = data.get("profiles")
    if not isinstance(raw_profiles, list) or not raw_profiles:
        raise ValueError(f"{path}: profiles: give at least one profile")
    parsed = [_v1_profile(f"{path}: profiles[{i}]", raw) for i, raw in enumerate(raw_profiles)]
    metrics = [m for _, m in parsed if m]
    if any(m != metrics[0] for m in metrics):
        raise ValueError(f"{path}: pluginConfig LoadAware args differ between profiles; give one")
    profiles = [p for p, _ in parsed]
    return _finish(path, profiles[0].scheduler_name, profiles, metrics[0] if metrics else {})


def _finish(
    path: Path, name: str, profiles: list[ProfileSettings], metrics: dict[str, object]
) -> SchedulerConfig:
    """Every profile named (the first by default after the config's schedulerName), names
    unique, metrics settings checked."""
    _known(f"{path}: metrics", metrics, {"maxAge", "unknownLoad"})
    names = [p.scheduler_name or (name if i == 0 else "") for i, p in enumerate(profiles)]
    for i, scheduler in enumerate(names):
        if not scheduler:
            raise ValueError(
                f"{path}: profiles[{i}]: schedulerName: every profile after the first needs its own"
            )
        if scheduler in names[:i]:
            raise ValueError(
                f"{path}: profiles[{i}]: schedulerName {scheduler!r} is taken by an earlier profile"
            )
    return SchedulerConfig(
        scheduler_name=name,
        profiles=[replace(p, scheduler_name=n) for p, n in zip(profiles, names, strict=True)],
        metrics=MetricsSettings(
            _number(f"{path}: metrics: maxAge", metrics.get("maxAge", 60.0), 1e-3, 86400),
            _number(f"{path}: metrics: unknownLoad", metrics.get("unknownLoad", 0.5), 0, 1),
        ),
    )


def load(path: Path) -> SchedulerConfig:
    """Read a scheduler config file; ValueError naming the file and field on bad input.

    Bounded: at most MAX_CONFIG_BYTES, strict UTF-8, every number finite and in range."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ValueError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes; not a scheduler config")
    try:
        data = yaml.safe_load(raw.decode("utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not YAML"
        raise ValueError(f"{path}{line}: {problem}; fix the YAML syntax") from None
    data = _mapping(str(path), data)
    if "apiVersion" in data or "kind" in data:
        return _v1(path, data)
    _known(str(path), data, {"schedulerName", "profiles", "metrics"})
    raw_profiles = data.get("profiles") or [{"name": "heps"}]
    if not isinstance(raw_profiles, list):
        raise ValueError(f"{path}: profiles: expected a list of profiles")
    profiles = [_profile(f"{path}: profiles[{i}]", raw) for i, raw in enumerate(raw_profiles)]
    name = _dns_name(f"{path}: schedulerName", data.get("schedulerName", "heps-scheduler"))
    metrics = _mapping(f"{path}: metrics", data.get("metrics") or {})
    return _finish(path, name, profiles, metrics)
