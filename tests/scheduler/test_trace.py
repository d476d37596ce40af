"""Reading every openb list format: defaults for absent columns, one-line errors, and the
all-traces replay over a folder."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from heps_scheduler import cli, simulate, trace
from heps_scheduler.model import GUARANTEED
from heps_scheduler.report import TerminalProgress, summary

NODES = "sn,cpu_milli,memory_mib,gpu,model\n" + "".join(
    f"n{i},96000,786432,8,{'V100M32' if i % 2 else 'G2'}\n" for i in range(6)
)
# The first rows of openb_pod_list_multigpu20.csv: the five-column format.
FIVE_COLUMNS = """name,cpu_milli,memory_mib,num_gpu,gpu_milli
openb-pod-0000,12000,16384,1,1000
openb-pod-0001,6000,12288,1,460
openb-pod-0002,12000,24576,1,1000
openb-pod-0003,6000,12288,1,460
openb-pod-0004,88000,327680,8,1000
openb-pod-0005,4000,8192,0,0
"""
ELEVEN_COLUMNS = """name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,\
creation_time,deletion_time,scheduled_time
openb-pod-0017,88000,327680,8,1000,,Burstable,Succeeded,9437497,10769854,9437497
openb-pod-0022,4000,15258,1,220,,BE,Running,9679175,9973826,9679175
openb-pod-0035,16000,32768,1,1000,V100M16|V100M32,LS,Running,9967058,9968575,9967063
"""


def test_five_column_lists_take_the_documented_defaults(tmp_path: Path) -> None:
    path = tmp_path / "openb_pod_list_multigpu20.csv"
    path.write_text(FIVE_COLUMNS)
    pods = trace.load_pods(path)
    assert [p.qos for p in pods] == [GUARANTEED] * 6  # the converter's requests == limits
    assert all(p.gpu_models == () for p in pods)  # any GPU model
    assert [p.created for p in pods] == [0, 1, 2, 3, 4, 5]  # arrival order is file order
    assert [p.gpu_class for p in pods] == [
        "whole-gpu", "shared-gpu", "whole-gpu", "shared-gpu", "multi-gpu", "cpu-only",
    ]  # fmt: skip
    assert pods[1].gpu_milli == 460 and pods[5].gpu_milli == 0


def test_eleven_column_lists_keep_their_values(tmp_path: Path) -> None:
    path = tmp_path / "pods.csv"
    path.write_text(ELEVEN_COLUMNS)
    pods = trace.load_pods(path)
    assert [p.qos for p in pods] == ["Burstable", "BestEffort", "Guaranteed"]
    assert pods[2].gpu_models == ("V100M16", "V100M32") and pods[0].created == 9437497


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (FIVE_COLUMNS.replace("num_gpu,", ""), "missing column 'num_gpu'"),
        (FIVE_COLUMNS.replace("6000,12288,1,460", "6000,12288,one,460", 1), ":3: column 'num_gpu'"),
        (ELEVEN_COLUMNS.replace(",LS,", ",VIP,"), ":4: column 'qos': 'VIP'"),
    ],
)
def test_a_bad_pod_list_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    nodes, pods = tmp_path / "nodes.csv", tmp_path / "pods.csv"
    nodes.write_text(NODES)
    pods.write_text(text)
    assert cli.main(["simulate", "--nodes", str(nodes), "--pods", str(pods)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(pods) in err and message in err, err
    assert "Traceback" not in err


def test_a_node_list_without_gpu_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nodes, pods = tmp_path / "nodes.csv", tmp_path / "pods.csv"
    nodes.write_text(NODES.replace(",gpu,", ",gpus,"))
    pods.write_text(FIVE_COLUMNS)
    assert cli.main(["simulate", "--nodes", str(nodes), "--pods", str(pods)]) == 2
    assert f"{nodes}: missing column 'gpu'" in capsys.readouterr().err


def test_all_traces_replays_every_list_of_a_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "openb"
    folder.mkdir()
    (folder / "openb_pod_list_multigpu20.csv").write_text(FIVE_COLUMNS)
    (folder / "openb_pod_list_default.csv").write_text(ELEVEN_COLUMNS)
    (folder / "notes.csv").write_text("not,a,pod,list\n")
    nodes = tmp_path / "nodes.csv"
    nodes.write_text(NODES)
    argv = ["simulate", "--nodes", str(nodes), "--all-traces", str(folder), "--seeds", "2"]
    assert cli.main([*argv, "--policy", "heps,fgd"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| trace | seed | heps unalloc / failed G | fgd unalloc / failed G |"
    assert [line.split(" | ")[:2] for line in lines[2:]] == [
        ["| openb_pod_list_default", "0"],
        ["| openb_pod_list_default", "1"],
        ["| openb_pod_list_multigpu20", "0"],
        ["| openb_pod_list_multigpu20", "1"],
    ]
    assert not list(tmp_path.glob("*.json")) and not list(tmp_path.glob("*.png"))


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_terminal() -> None:
    piped, terminal = io.StringIO(), _Terminal()
    for stream in (piped, terminal):
        progress = TerminalProgress("default seed 0", stream)
        progress("heps", 10, 100)
        progress("heps", 100, 100)
        progress.clear()
    assert piped.getvalue() == ""
    assert "default seed 0 heps: 100/100 pods" in terminal.getvalue()


def test_summary_tables_give_failures_by_class_and_qos(tmp_path: Path) -> None:
    pods_path, nodes_path = tmp_path / "pods.csv", tmp_path / "nodes.csv"
    pods_path.write_text(FIVE_COLUMNS)
    nodes_path.write_text(NODES)
    nodes, pods = trace.load_nodes(nodes_path), trace.load_pods(pods_path)
    results = simulate.simulate(nodes, pods, ["fgd"], seed=0)
    assert results[0].failed > 0  # 130% of the GPUs arrive
    text = summary(results).splitlines()
    assert text[0].split() == [
        "policy", "placed", "failed", "preempted", "unalloc@100%", "frag@100%",
        "unalloc@end", "frag@end", "alloc@end", "dec/s", "p99", "ms",
    ]  # fmt: skip
    assert text[3].split()[:5] == ["failed", "pods", "cpu-only", "shared-gpu", "whole-gpu"]
    row = text[4].split()
    assert (
        row[0] == "fgd" and sum(map(int, row[1:5])) == sum(map(int, row[5:])) == results[0].failed
    )
