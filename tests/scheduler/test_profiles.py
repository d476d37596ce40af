"""KubeSchedulerConfiguration v1-shaped configs, and every profile served at once."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from heps_scheduler import config, serve
from tests.scheduler.fake_apiserver import FakeApiServer
from tests.scheduler.test_kube import k8s_node, k8s_pod, until

TWO_PROFILES = """\
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
profiles:
  - schedulerName: heps-scheduler
    plugins:
      score:
        disabled: [{name: QosAware}]
        enabled: [{name: GpuPacking, weight: 2}]
    pluginConfig:
      - name: HepsProfile
        args: {spreadThreshold: 0.5, spreadWithoutVictims: 0.1}
      - name: LoadAware
        args: {maxAge: 30, unknownLoad: 0.25}
  - schedulerName: packer
    percentageOfNodesToScore: 100
    plugins:
      score:
        disabled: [{name: "*"}]
        enabled: [{name: MostAllocated}]
    pluginConfig:
      - name: HepsProfile
        args: {preset: most-allocated, tieBreak: name}
"""


def test_a_v1_configuration_gives_every_profile_by_its_scheduler_name(tmp_path: Path) -> None:
    path = tmp_path / "scheduler.yaml"
    path.write_text(TWO_PROFILES)
    loaded = config.load(path)
    heps, packer = loaded.profiles
    expected = {**config.PRESETS["heps"], "GpuPacking": 2.0}
    del expected["QosAware"]
    assert (heps.scheduler_name, heps.weights) == ("heps-scheduler", expected)
    assert (heps.spread_threshold, heps.spread_without_victims) == (0.5, 0.1)
    assert (packer.scheduler_name, packer.weights) == ("packer", {"MostAllocated": 1.0})
    assert (packer.tie_break, packer.percentage_of_nodes_to_score) == ("name", 100.0)
    assert (loaded.metrics.max_age, loaded.metrics.unknown_load) == (30.0, 0.25)
    assert loaded.scheduler_name == "heps-scheduler"


V1 = "kubescheduler.config.k8s.io/v1"
BAD = [
    ((V1, V1 + "beta3"), "apiVersion/kind: give"),
    (("score:\n        disabled: [{name: QosAware}]", "filter:\n        disabled: []"),
     "plugins: filter: enabled[0]: plugin GpuPacking does not extend filter"),
    (("score:\n        disabled: [{name: QosAware}]", "multiPoint:\n        disabled: []"),
     "plugins: multiPoint not supported by heps-scheduler"),
    (("score:\n        disabled: [{name: QosAware}]", "queue:\n        disabled: []"),
     "plugins: unknown keys ['queue']"),
    (("weight: 2}]", "weight: 2}]\n      bind: {enabled: [{name: DefaultBinder, weight: 3}]}"),
     "bind: enabled[0]: weight: only score plugins have weights"),
    (("weight: 2}]", "weight: 2}, {name: GpuPacking}]"),
     "score: enabled[1]: plugin GpuPacking is enabled twice"),
    (("weight: 2}]", "weight: 2}]\n      permit: {enabled: [{name: DefaultBinder}]}"),
     "permit: enabled[0]: plugin DefaultBinder does not extend permit"),
    (("weight: 2}]", "weight: 2}]\n      postFilter:\n        enabled: [{name: LoadAware}]"),
     "postFilter: enabled[0]: plugin LoadAware does not extend postFilter"),
    (("args: {maxAge: 30, unknownLoad: 0.25}", "args: {maxAge: 30, window: 2}"),
     "pluginConfig[1]: args: unknown keys ['window']"),
    (("name: LoadAware", "name: GpuPacking"), "pluginConfig[1]: GpuPacking takes no args"),
    (("name: LoadAware", "name: HepsProfile"), "pluginConfig[1]: HepsProfile is configured twice"),
    (("schedulerName: packer", "schedulerName: heps-scheduler"),
     "profiles[1]: schedulerName 'heps-scheduler' is taken"),
    (("name: MostAllocated}", "name: Nope}"), "unknown score plugins Nope"),
    (("GpuPacking, weight: 2}", "GpuPacking, weight: .inf}"), "GpuPacking: weight: inf is outside"),
    (("spreadWithoutVictims: 0.1", "spreadWithoutVictims: 2"), "spreadWithoutVictims: 2 is"),
    (("name: LoadAware", "name: NodeResourcesFit"), "NodeResourcesFit takes no args"),
    (("preset: most-allocated", "preset: fastest"), "preset 'fastest'; known"),
    (('{name: "*"}', "{name: Everything}"), "disabled[0]: unknown plugin 'Everything'"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "message"), BAD)
def test_a_bad_v1_configuration_is_one_line(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    path = tmp_path / "scheduler.yaml"
    assert change[0] in TWO_PROFILES
    path.write_text(TWO_PROFILES.replace(*change))
    with pytest.raises(ValueError) as caught:
        config.load(path)
    assert str(path) in str(caught.value) and message in str(caught.value), caught.value


def test_every_profile_is_served_at_once(
    fake: FakeApiServer, api: tuple[Any, Any], tmp_path: Path
) -> None:
    core, coordination = api
    path = tmp_path / "scheduler.yaml"
    path.write_text(TWO_PROFILES)
    settings = config.load(path)
    fake.nodes = {"a": k8s_node("a", cpu="16"), "b": k8s_node("b", cpu="16")}
    fake.pods = {
        ("jhub", "placed"): k8s_pod("placed", cpu="8", node="b"),
        ("jhub", "alice"): k8s_pod("alice", cpu="4"),
        ("jhub", "bob"): k8s_pod("bob", cpu="4", scheduler="packer"),
        ("jhub", "carol"): k8s_pod("carol", cpu="4", scheduler="default-scheduler"),
    }
    stop = threading.Event()
    loop = threading.Thread(
        target=serve.run, args=(core, coordination, settings, False, "kube-system", stop)
    )
    loop.start()
    try:
        until(fake, lambda: len(fake.bindings) == len(fake.events) == 2, seconds=20)
    finally:
        stop.set()
        fake.close()
        loop.join(timeout=10)
    bound = {b["metadata"]["name"]: b["target"]["name"] for b in fake.bindings}
    assert bound == {"alice": "a", "bob": "b"}  # heps spreads, the packer packs; carol not ours
    sources = {e["involvedObject"]["name"]: e["source"]["component"] for e in fake.events}
    assert sources == {"alice": "heps-scheduler", "bob": "packer"}
