"""Whole-trace properties and the simulator command, on the shared openb trace."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from heps_scheduler import cli, config, simulate, trace
from heps_scheduler.fgd import typical_pods
from heps_scheduler.model import BEST_EFFORT, BURSTABLE, GUARANTEED
from tests.conftest import REPO_ROOT

OPENB = REPO_ROOT.parent / "shared" / "traces" / "openb"
NODES = OPENB / "openb_node_list_all_node.csv"
needs_trace = pytest.mark.skipif(not NODES.exists(), reason=f"openb trace not found at {OPENB}")


@needs_trace
@pytest.mark.parametrize("policy", ["heps", "kube-default"])
def test_whole_replay_never_breaks_a_filter_or_capacity(policy: str) -> None:
    """Every pod placed passes every filter; a pod that fits nowhere fails, or (heps)
    preempts: only for a pod that fit nowhere, only pods of lower QoS class, all from the
    node it is then placed on, never lowering the allocated GPUs."""
    nodes = trace.load_nodes(NODES)[::8]  # every 8th node: the full mix, an eighth the time
    pods = trace.load_pods(OPENB / "openb_pod_list_default.csv")
    replay = simulate.Replay(nodes, config.preset_settings(policy), typical_pods(pods), 3)
    snap, scheduler = replay.snap, replay.scheduler
    arrived = simulate.arrivals(pods, snap.gpu_capacity_milli(), 1.3, seed=3)
    placed = 0
    rank = {GUARANTEED: 2, BURSTABLE: 1, BEST_EFFORT: 0}
    for pod in arrived:
        feasible, _ = scheduler.feasible(pod)
        before, allocated = len(replay.victims), snap.gpu_allocated_milli()
        decision = replay.place(pod)
        victims = replay.victims[before:]
        if victims:
            assert len(feasible) == 0, f"{pod.name} fit somewhere but preempted"
            assert {node for _, node in victims} == {decision.node}
            assert all(rank[v.qos] < rank[pod.qos] for v, _ in victims)
            assert sum(v.gpu_demand_milli for v, _ in victims) <= pod.gpu_demand_milli
            assert snap.gpu_allocated_milli() >= allocated
        if decision.node is None:
            assert len(feasible) == 0, f"{pod.name} fit somewhere but was not placed"
            continue
        placed += 1
        node = snap.index[decision.node]
        assert victims or node in set(feasible.tolist()), f"{pod.name} placed where a filter fails"
        if pod.gpus:
            assert len(decision.gpu_slots) == pod.gpus
    assert (snap.cpu_used <= snap.cpu_cap).all() and (snap.mem_used <= snap.mem_cap).all()
    assert (snap.gpu_free >= 0).all() and (snap.gpu_free[~snap.gpu_exists] == 0).all()
    assert (snap.whole_free == (snap.gpu_free == 1000).sum(axis=1)).all()
    assert (snap.max_free == snap.gpu_free.max(axis=1)).all()
    assert placed - len(replay.victims) == len(snap.placements) > 0.7 * len(arrived)
    assert bool(replay.victims) == (policy == "heps")
    expected = sum(p.pod.gpu_demand_milli for p in snap.placements.values())
    assert snap.gpu_allocated_milli() == expected


@needs_trace
@needs_trace
def test_on_a_list_of_one_class_heps_fails_fewer_pods_than_kube_default() -> None:
    """openb multigpu20 has no qos column: every task is Guaranteed and nothing can be
    preempted. Packing (heps before spreadWithoutVictims: FGD's decisions there) fails the
    small pods that arrive once the GPUs are full, more than kube-default; spreading while
    no pod of another class runs fails multi-GPU pods instead: fewer pods, and fewer idle
    GPUs than kube-default (a quarter of the cluster, seed 3)."""
    nodes = trace.load_nodes(NODES)[::4]
    pods = trace.load_pods(OPENB / "openb_pod_list_multigpu20.csv")
    arrived = simulate.arrivals(pods, sum(n.gpus for n in nodes) * 1000, 1.3, seed=3)
    heps = config.preset_settings("heps")
    outcomes = {}
    for name, settings in [
        ("heps", heps),
        ("packing", replace(heps, spread_without_victims=0.0)),
        ("kube-default", config.preset_settings("kube-default")),
    ]:
        replay = simulate.Replay(nodes, settings, typical_pods(pods), 3)
        failed = sum(replay.place(pod).node is None for pod in arrived)
        unallocated = replay.snap.gpu_capacity_milli() - replay.snap.gpu_allocated_milli()
        outcomes[name] = (failed, unallocated)
    assert outcomes["heps"][0] < outcomes["kube-default"][0] < outcomes["packing"][0]
    assert outcomes["heps"][1] < outcomes["kube-default"][1]


def test_simulate_command_reports_every_policy_on_the_same_arrivals(tmp_path: Path) -> None:
    pods = tmp_path / "pods.csv"
    lines = (OPENB / "openb_pod_list_gpushare40.csv").read_text().splitlines()
    pods.write_text("\n".join(lines[:1] + lines[1::10]) + "\n")  # its first rows are CPU-only
    small_nodes = tmp_path / "nodes.csv"
    node_lines = NODES.read_text().splitlines()
    small_nodes.write_text("\n".join(node_lines[:1] + node_lines[1:1524:20]) + "\n")
    out, png = tmp_path / "result.json", tmp_path / "plot.png"
    code = cli.main(
        [
            "simulate",
            "--nodes",
            str(small_nodes),
            "--pods",
            str(pods),
            "--seed",
            "1",
            "--json",
            str(out),
            "--plot",
            str(png),
        ]
    )
    assert code == 0
    [body] = json.loads(out.read_text())
    results = {r["policy"]: r for r in body["results"]}
    assert set(results) == {"heps", "kube-default", "most-allocated", "fgd"}
    arrived = {r["scheduled"] + r["failed"] for r in results.values()}
    assert len(arrived) == 1  # same arrivals for every policy
    for result in results.values():
        assert 0 < result["gpu_alloc_rate"] <= 1 and result["decisions_per_s"] > 0
        assert result["curve"][-1]["arrived"] >= 1.25
        full = result["at_full_load"]
        assert 0 < full["frag_rate"] <= 1 and 0 < result["frag_rate"] <= 1
        assert full["unallocated_gpus"] >= result["unallocated_gpus"]  # pods never leave
        assert sum(result["failed_by_class"].values()) == result["failed"]
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_simulate_command_refuses_unknown_policy_and_missing_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["simulate", "--nodes", str(tmp_path / "no.csv"), "--pods", str(tmp_path)]) == 2
    assert "no.csv: no such file" in capsys.readouterr().err
    (tmp_path / "n.csv").write_text("sn,cpu_milli,memory_mib,gpu,model\n")
    assert (
        cli.main(
            [
                "simulate",
                "--nodes",
                str(tmp_path / "n.csv"),
                "--pods",
                str(tmp_path / "n.csv"),
                "--policy",
                "magic",
            ]
        )
        == 2
    )
    assert "--policy: unknown magic" in capsys.readouterr().err


def test_arrivals_are_tuned_to_the_load_then_shuffled() -> None:
    from heps_scheduler.model import Pod

    pods = [Pod(f"p{i}", gpus=1, gpu_milli=1000) for i in range(3)] + [Pod("cpu")]
    up = simulate.arrivals(pods, capacity_milli=4000, load=1.3, seed=0)
    # every task once (3 GPUs), then random draws while within 5.2 GPUs: 5 GPUs in all
    assert sum(p.gpu_demand_milli for p in up) == 5000
    assert {p.name for p in pods} <= {p.name for p in up} and len({p.name for p in up}) == len(up)
    again = simulate.arrivals(pods, capacity_milli=4000, load=1.3, seed=0)
    other = simulate.arrivals(pods, capacity_milli=4000, load=1.3, seed=1)
    assert [p.name for p in again] == [p.name for p in up] != [p.name for p in other]
    down = simulate.arrivals(pods, capacity_milli=1000, load=1.3, seed=0)
    assert sum(p.gpu_demand_milli for p in down) == 1000  # random tasks dropped to fit
    cpu_only = simulate.arrivals([Pod("a"), Pod("b")], capacity_milli=1000, load=1.3, seed=0)
    assert sorted(p.name for p in cpu_only) == ["a", "b"]  # nothing to tune up with
