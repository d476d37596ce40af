"""The workload generator: each axis reaches its ratio, leaves the other kinds of task as
they were, is reproducible per seed and bounded; `simulate --variant` replays it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from heps_scheduler import cli, workload
from heps_scheduler.model import Node, Pod

NODES = [Node(name=f"n{i}", cpu_milli=96000, memory_mib=786432, gpus=8) for i in range(10)]


def _base() -> list[Pod]:
    """A small default-like list: whole GPUs, shares, multi-GPU tasks and CPU-only tasks."""
    pods = []
    for i in range(200):
        kind = i % 10
        if kind < 5:
            pods.append(Pod(name=f"w{i}", cpu_milli=8000, memory_mib=16384, gpus=1, gpu_milli=1000))
        elif kind < 8:
            pods.append(Pod(name=f"s{i}", cpu_milli=4000, memory_mib=8192, gpus=1, gpu_milli=300))
        elif kind == 8:
            pods.append(
                Pod(name=f"m{i}", cpu_milli=32000, memory_mib=65536, gpus=4, gpu_milli=1000)
            )
        else:
            pods.append(Pod(name=f"c{i}", cpu_milli=16000, memory_mib=32768))
    return pods


def _demand(pods: list[Pod], kind: str) -> float:
    gpu = [p for p in pods if p.gpus]
    total = sum(p.gpu_demand_milli for p in gpu)
    return sum(p.gpu_demand_milli for p in gpu if p.gpu_class == kind) / total


def _spec(pod: Pod) -> tuple[int, int, int, int]:
    return (pod.cpu_milli, pod.memory_mib, pod.gpus, pod.gpu_milli)


@pytest.mark.parametrize("ratio", [0, 25, 50, 75, 100])
@pytest.mark.parametrize(("axis", "kind"), [("multigpu", "multi-gpu"), ("gpushare", "shared-gpu")])
def test_shares_of_gpu_demand_reach_the_ratio(axis: str, kind: str, ratio: int) -> None:
    base = _base()
    pods = workload.generate(base, NODES, workload.Variant(axis, ratio), seed=1)
    largest = max(p.gpu_demand_milli for p in base) / sum(p.gpu_demand_milli for p in base)
    assert abs(_demand(pods, kind) - ratio / 100) <= largest * 2  # within one swap
    # CPU-only tasks untouched; every task a copy of a base task's spec; names unique
    assert [p for p in pods if not p.gpus] == [p for p in base if not p.gpus]
    assert {_spec(p) for p in pods} <= {_spec(p) for p in base}
    assert len({p.name for p in pods}) == len(pods) == len(base)


def test_gpuspec_constrains_that_share_of_gpu_tasks_with_openb_constraints() -> None:
    base = _base()
    pods = workload.generate(base, NODES, workload.parse("gpuspec:25"), seed=0)
    gpu = [p for p in pods if p.gpus]
    constrained = [p for p in gpu if p.gpu_models]
    assert len(constrained) == round(0.25 * len(gpu))
    assert {"|".join(p.gpu_models) for p in constrained} <= set(workload.SPEC_MIX)
    assert [_spec(p) for p in pods] == [_spec(p) for p in base]  # only constraints change


@pytest.mark.parametrize("per_mille", [0, 50, 150, 300])
def test_cpu_axis_reaches_its_share_of_cluster_cpu(per_mille: int) -> None:
    base = _base()
    pods = workload.generate(base, NODES, workload.Variant("cpu", per_mille), seed=2)
    cluster = sum(n.cpu_milli for n in NODES)
    cpu_only = [p for p in pods if not p.gpus]
    assert abs(sum(p.cpu_milli for p in cpu_only) - cluster * per_mille / 1000) <= 8000
    assert [p for p in pods if p.gpus] == [p for p in base if p.gpus]
    assert set(Counter(_spec(p) for p in cpu_only)) <= {(16000, 32768, 0, 0)}


def test_the_same_seed_gives_the_same_list_and_another_seed_another() -> None:
    variant = workload.parse("multigpu:50")
    one, again = (workload.generate(_base(), NODES, variant, seed=3) for _ in range(2))
    other = workload.generate(_base(), NODES, variant, seed=4)
    assert one == again and one != other


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("gpu:50", "AXIS one of multigpu, gpushare, gpuspec, cpu"),
        ("multigpu:half", "'half' is not a number"),
        ("multigpu:150", "the ratio must be 0..100"),
        ("cpu:nan", "the ratio must be 0..1000"),
        ("gpushare:-1", "the ratio must be 0..100"),
    ],
)
def test_bad_variants_are_refused(text: str, message: str) -> None:
    with pytest.raises(workload.VariantError, match=message):
        workload.parse(text)


def test_a_kind_the_base_lacks_cannot_be_made() -> None:
    base = [p for p in _base() if p.gpus < 2]
    with pytest.raises(workload.VariantError, match="no multi-GPU tasks to copy"):
        workload.generate(base, NODES, workload.parse("multigpu:20"))


def test_simulate_replays_variants_of_the_base_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nodes, pods = tmp_path / "nodes.csv", tmp_path / "openb_pod_list_default.csv"
    nodes.write_text(
        "sn,cpu_milli,memory_mib,gpu\n" + "".join(f"n{i},96000,786432,8\n" for i in range(4))
    )
    pods.write_text(
        "name,cpu_milli,memory_mib,num_gpu,gpu_milli\n"
        + "".join(f"{_spec_row(p)}\n" for p in _base()[:40])
    )
    argv = ["simulate", "--nodes", str(nodes), "--pods", str(pods), "--policy", "heps,fgd"]
    assert cli.main([*argv, "--variant", "multigpu:50", "--variant", "cpu:100"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" | ")[0] for line in lines[2:]] == [
        "| openb_pod_list_default-multigpu50",
        "| openb_pod_list_default-cpu100",
    ]
    assert cli.main([*argv, "--variant", "multigpu:500"]) == 2
    assert "the ratio must be 0..100" in capsys.readouterr().err


def _spec_row(pod: Pod) -> str:
    return f"{pod.name},{pod.cpu_milli},{pod.memory_mib},{pod.gpus},{pod.gpu_milli}"
