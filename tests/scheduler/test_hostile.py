"""Hostile traces and configs: one line naming the file, line and field, exit 2, no loop;
and the command's error boundary for what no check foresaw."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from heps_scheduler import cli, config, simulate, trace
from heps_scheduler.model import Pod

NODES = "sn,cpu_milli,memory_mib,gpu,model\n" + "".join(
    f"n{i},96000,786432,8,V100M32\n" for i in range(4)
)
PODS = "name,cpu_milli,memory_mib,num_gpu,gpu_milli\n" + "".join(
    f"p{i},4000,8192,{i % 3},{1000 if i % 3 != 1 else 500}\n" for i in range(12)
)


def _run(tmp_path: Path, nodes: str | bytes, pods: str | bytes, *extra: str) -> int:
    node_path, pod_path = tmp_path / "nodes.csv", tmp_path / "pods.csv"
    for path, text in ((node_path, nodes), (pod_path, pods)):
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    code = cli.main(["simulate", "--nodes", str(node_path), "--pods", str(pod_path), *extra])
    return code


@pytest.mark.parametrize(
    ("nodes", "pods", "file", "message"),
    [
        (NODES, PODS.replace("p4,4000,8192,1,500", "p4,4000,8192,-1,500"), "pods.csv:6:",
         "column 'num_gpu': '-1' is outside 0..64"),
        (NODES, PODS.replace("p4,4000,8192,1,500", "p4,4000,8192,nan,500"), "pods.csv:6:",
         "column 'num_gpu': 'nan' is not an int"),
        (NODES, PODS.replace("p4,4000,8192,1,500", "p4,4000,8192,inf,500"), "pods.csv:6:",
         "'inf' is not an int"),
        (NODES, PODS.replace("p4,4000,8192,1,500", "p4,4000,8192,1,-5"), "pods.csv:6:",
         "column 'gpu_milli': '-5' is outside 1..1000"),
        (NODES, PODS.replace("p2,4000,8192,2,1000", "p2,4000,8192,2,500"), "pods.csv:4:",
         "a task of several GPUs takes them whole"),
        (NODES, PODS.replace("p4,4000,", "p4,-4000,"), "pods.csv:6:",
         "column 'cpu_milli': '-4000' is outside"),
        (NODES, PODS.replace("p4,4000,8192", "p4,4000,NaN"), "pods.csv:6:",
         "column 'memory_mib': 'NaN' is not an int"),
        (NODES, PODS.replace("p5,", "p4,"), "pods.csv:7:", "pod 'p4' again (first on line 6)"),
        (NODES, PODS.splitlines()[0] + "\n", "pods.csv:", "a header and no rows"),
        (NODES, "", "pods.csv:", "missing column 'name'"),
        (NODES, PODS.encode() + b"p99,4000,8192,1,1000\xff\n", "pods.csv:", "not UTF-8 text"),
        (NODES.replace("n1,96000,786432,8,", "n1,96000,786432,1000000000,"), PODS, "nodes.csv:3:",
         "column 'gpu': '1000000000' is outside 0..64"),
        (NODES.replace("n1,96000,786432,8,", "n1,96000,786432,-8,"), PODS, "nodes.csv:3:",
         "column 'gpu': '-8' is outside"),
        (NODES.replace("n1,96000,786432,8,", "n1,96000,nan,8,"), PODS, "nodes.csv:3:",
         "column 'memory_mib': 'nan' is not an int"),
        (NODES.replace("n1,96000,", "n1,0,"), PODS, "nodes.csv:3:",
         "column 'cpu_milli': '0' is outside 1..1e+09"),
        (NODES.replace("n2,", "n1,"), PODS, "nodes.csv:4:", "node 'n1' again (first on line 3)"),
        (NODES.splitlines()[0] + "\n", PODS, "nodes.csv:", "a header and no rows"),
        (NODES.replace(",8,", ",0,"), PODS, "nodes.csv:", "no node has a GPU"),
        (b"\xfe\xff" + NODES.encode("utf-16-be"), PODS, "nodes.csv:", "not UTF-8 text (byte 0)"),
        (NODES, PODS.replace("p4,4000,", f"p4,{'9' * 100_000},"), "pods.csv:6:",
         f"column 'cpu_milli': '{'9' * 40}'... (100000 characters) is not an int"),
        (NODES, 'name,cpu_milli,memory_mib,num_gpu,gpu_milli\n"p0,1', "pods.csv:2:",
         "column 'num_gpu': '' is not an int"),  # an unterminated quote takes the line
    ],
)  # fmt: skip
def test_a_hostile_trace_is_one_line_and_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    nodes: str | bytes,
    pods: str | bytes,
    file: str,
    message: str,
) -> None:
    code = _run(tmp_path, nodes, pods, "--policy", "fgd")
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"{tmp_path}/{file}" in err and message in err, err


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--load", "inf"], "--load: inf is outside 0..10"),
        (["--load", "nan"], "--load: nan is outside"),
        (["--load", "-1"], "--load: -1.0 is outside"),
        (["--load", "0"], "--load: 0.0 is outside"),
        (["--seeds", "0"], "--seeds: 1 to 1000"),
        (["--seed", "-3"], "--seed: 0 or more"),
        (["--json", "/nonexistent-folder/x.json"], "--json: /nonexistent-folder is not a folder"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: list[str], message: str
) -> None:
    code = _run(tmp_path, NODES, PODS, *option)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err


def test_arrival_tuning_is_bounded() -> None:
    """Tasks of a thousandth of a GPU cannot reach 130% of a large cluster within the cap:
    refused before drawing, not drawn for hours."""
    tiny = [Pod(name="t", cpu_milli=1, memory_mib=1, gpus=1, gpu_milli=1)]
    with pytest.raises(simulate.WorkloadError, match="takes more than"):
        simulate.arrivals(tiny, 10_000 * 1000, 1.3, 0)
    with pytest.raises(simulate.WorkloadError, match="--load"):
        simulate.arrivals(tiny, 1000, float("inf"), 0)
    # within the cap, the draws stop at the target
    small = simulate.arrivals(tiny, 8 * 1000, 1.3, 0)
    assert len(small) == 10_400


def test_a_list_that_cannot_reach_the_load_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pods = "name,cpu_milli,memory_mib,num_gpu,gpu_milli\np0,1,1,1,1\np1,1,1,0,0\n"
    nodes = "sn,cpu_milli,memory_mib,gpu\n" + "".join(f"n{i},1000,1000,64\n" for i in range(200))
    code = _run(tmp_path, nodes, pods, "--load", "10")
    err = capsys.readouterr().err
    assert code == 2 and "takes more than" in err and err.count("\n") == 1, err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("profiles: [{name: heps, scores: {LoadAware: .nan}}]", "LoadAware: nan is outside"),
        ("profiles: [{name: heps, scores: {LoadAware: .inf}}]", "LoadAware: inf is outside"),
        ("profiles: [{name: heps, scores: {LoadAware: -1}}]", "scores: LoadAware: -1 is outside"),
        ("profiles: [{name: heps, scores: {LoadAware: yes}}]", "True is not a number"),
        ("profiles: [{name: heps, scores: {Nope: 1}}]", "unknown score plugins Nope"),
        ("profiles: [{name: mine}]", "profiles[0]: scores: map score plugins"),
        ("profiles: [{scores: {LoadAware: 1}}]", "profiles[0]: name: give the profile a name"),
        ("profiles: [{name: heps, percentageOfNodesToScore: 250}]", "250 is outside 0..100"),
        ("profiles: [{name: heps, bestFitGpu: maybe}]", "bestFitGpu: 'maybe'; use true or false"),
        ("profiles: {name: heps}", "profiles: expected a list"),
        ("profiles: [heps]", "profiles[0]: expected a mapping, got str"),
        ("metrics: {maxAge: .nan}", "metrics: maxAge: nan is outside"),
        ("metrics: {unknownLoad: 2}", "metrics: unknownLoad: 2 is outside 0..1"),
        ("metrics: {maxage: 3}", "metrics: unknown keys ['maxage']"),
        ("schedulerName: Heps_Scheduler", "schedulerName: 'Heps_Scheduler' is not a DNS"),
        ("- a list", "expected a mapping, got list"),
        ("profiles: [{name: heps\n", ":2: expected ',' or '}'"),
    ],
)  # fmt: skip
def test_a_bad_config_is_one_line_naming_the_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "scheduler.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as caught:
        config.load(path)
    assert str(path) in str(caught.value) and message in str(caught.value), caught.value
    assert "\n" not in str(caught.value)


def test_a_non_utf8_config_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "scheduler.yaml"
    path.write_bytes(b"schedulerName: h\xe9ps\n")
    with pytest.raises(ValueError, match=r"not UTF-8 text \(byte 16\)"):
        config.load(path)


def test_an_unexpected_error_is_one_line_with_the_traceback_in_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEPS_STATE_DIR", str(tmp_path / "state"))

    def broken(*_: object) -> list[Pod]:
        raise RuntimeError("a bug nobody foresaw\nsecond line")

    monkeypatch.setattr(trace, "load_pods", broken)
    code = _run(tmp_path, NODES, PODS, "--policy", "fgd")
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "internal error: RuntimeError: a bug nobody foresaw" in err
    saved = list((tmp_path / "state" / "tracebacks").glob("heps-scheduler-*.txt"))
    assert len(saved) == 1 and str(saved[0]) in err
    text = saved[0].read_text()
    assert text.startswith("Traceback") and "in broken" in text


def test_the_boundary_says_when_the_traceback_cannot_be_saved(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("HEPS_STATE_DIR", str(blocker))  # a file where a folder should be
    monkeypatch.setattr(trace, "load_nodes", lambda _: 1 / 0)
    code = _run(tmp_path, NODES, PODS)
    err = capsys.readouterr().err
    assert code == 1 and "ZeroDivisionError" in err and "traceback not saved" in err, err
    assert os.path.isfile(blocker)


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("1_024", "'1_024' is not an int"),
        ("\uff11\uff12", "'\uff11\uff12' is not an int"),  # fullwidth digits
        ("\u0661", "'\u0661' is not an int"),  # Arabic-Indic one
    ],
)
def test_number_columns_take_ascii_digits_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cell: str, message: str
) -> None:
    code = _run(tmp_path, NODES, PODS.replace("p4,4000,", f"p4,{cell},"), "--policy", "fgd")
    err = capsys.readouterr().err
    assert code == 2 and "pods.csv:6: column 'cpu_milli'" in err and message in err, err


@pytest.mark.parametrize("kind", ["device", "fifo", "folder"])
def test_a_trace_that_is_no_regular_file_is_refused_unread(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    pods = tmp_path / "pods.csv"
    if kind == "device":
        pods.symlink_to("/dev/zero")  # st_size 0, endless bytes
    elif kind == "fifo":
        os.mkfifo(pods)  # no writer: a blocking open would wait forever
    else:
        pods.mkdir()
    nodes = tmp_path / "nodes.csv"
    nodes.write_text(NODES)
    code = cli.main(["simulate", "--nodes", str(nodes), "--pods", str(pods)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert f"{pods}: not a regular file" in err, err


def test_a_trace_over_the_cap_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trace, "MAX_BYTES", len(PODS) - 1)
    path = tmp_path / "pods.csv"
    path.write_text(PODS)
    with pytest.raises(trace.TraceError, match=f"more than the {len(PODS) - 1} bytes"):
        trace.load_pods(path)


def test_control_characters_of_names_are_escaped_in_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "evil\x1b[2J\r\x07\u202e"
    folder.mkdir()
    code = _run(folder, NODES, PODS.replace("p4,4000,", "p4,x,"), "--policy", "fgd")
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, repr(err)
    assert not any(c in err for c in "\x1b\r\x07\u202e"), repr(err)
    assert "evil\\x1b[2J\\r\\x07\\u202e/pods.csv:6:" in err, repr(err)
