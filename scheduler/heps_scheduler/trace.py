"""The openb trace format (Alibaba clusterdata, cluster-trace-gpu-v2023) as nodes and pods.

Every list of the repository reads: the eleven-column pod lists and the five-column ones
(`name,cpu_milli,memory_mib,num_gpu,gpu_milli`, the multigpu family). A column that is
absent takes the default the trace's own tooling implies:

- no `qos`: Guaranteed. The trace's converter to Kubernetes pods (`pod_csv_to_yaml.py`)
  writes every task with cpu and memory limits equal to its requests, which Kubernetes
  classes as Guaranteed; it is also the class of the default list's most common label
  (LS, 57% of tasks, served like Guaranteed here).
- no `gpu_spec`: any GPU model.
- no `creation_time`: the row's position, so arrival order is the file's order.
- no `model` in a node list: a GPU of no named model (only unconstrained tasks match).
"""

from __future__ import annotations

import csv
import io
import os
import re
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from heps_scheduler.model import (
    BEST_EFFORT,
    BURSTABLE,
    GPU_MODEL_LABEL,
    GUARANTEED,
    Node,
    Pod,
)

# openb's classes: LS (latency-sensitive) is served like Guaranteed, BE like BestEffort.
QOS = {"LS": GUARANTEED, "Guaranteed": GUARANTEED, "Burstable": BURSTABLE, "BE": BEST_EFFORT}
DEFAULT_QOS = GUARANTEED
POD_COLUMNS = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli")
NODE_COLUMNS = ("sn", "cpu_milli", "memory_mib", "gpu")

T = TypeVar("T", int, float)


class TraceError(ValueError):
    """A trace file that cannot be read; the message names the file, the line and the column."""


MAX_BYTES = 256 << 20
"""Largest trace file read (the largest openb list is under 1 MiB)."""
MAX_GPUS_PER_NODE = 64
"""Most GPUs one node may have (openb's largest has 8; a DGX-class node 16)."""
MAX_NODES = 100_000
"""Most nodes a node list may have (kube-scheduler is tested to 5,000)."""
MAX_PODS = 200_000
"""Most tasks a pod list may have (openb's lists have about 8,000; tuning a list down to
the load drops tasks one by one, quadratic in the list's length)."""
MAX_MILLI = 10**9
"""Most cpu thousandths or MiB of memory one node or pod may have (a million cores, 1 PiB)."""
SHOWN = 40
"""Characters of a bad cell an error shows (a 100,000-digit cell was echoed whole)."""


def _rows(
    path: Path, required: tuple[str, ...], limit: int
) -> Iterator[tuple[int, dict[str, str]]]:
    """The rows after the header, with their line numbers; strict UTF-8, size bounded."""
    try:
        text = _read(path).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TraceError(
            f"{path}: not UTF-8 text (byte {exc.start}); save the list as UTF-8 CSV"
        ) from None
    except OSError as exc:
        raise TraceError(f"{path}: cannot read: {exc.strerror}") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        columns = reader.fieldnames or []
        for column in required:
            if column not in columns:
                raise TraceError(
                    f"{path}: missing column {column!r} (an openb list needs "
                    f"{', '.join(required)}; the header has {', '.join(columns) or 'nothing'})"
                )
        count = 0
        for row in reader:
            count += 1
            if count > limit:
                raise TraceError(f"{path}: more than {limit} rows; split the list")
            yield reader.line_num, row
    except csv.Error as exc:
        raise TraceError(f"{path}:{reader.line_num}: not CSV: {exc}") from None
    if not count:
        raise TraceError(f"{path}: a header and no rows; a trace needs at least one row")


def _read(path: Path) -> bytes:
    """A regular file's bytes, at most MAX_BYTES. The kind is checked on the open file
    (O_NONBLOCK: opening a FIFO does not wait for a writer), and the read stops one byte
    past the cap: a device's size is 0 and a growing file's changes, so st_size bounds
    nothing."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        os.close(fd)
        raise
    if not regular:
        os.close(fd)
        raise TraceError(f"{path}: not a regular file (a folder, device or FIFO); give a CSV file")
    with os.fdopen(fd, "rb") as file:
        data = file.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise TraceError(
            f"{path}: more than the {MAX_BYTES} bytes a trace may have; split the list"
        )
    return data


_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
"""What a number column may hold: ASCII digits as a CSV writer prints them. Python's int()
and float() also take `1_024`, fullwidth or other scripts' digits, `nan` and `infinity`."""


def _field(
    path: Path,
    line: int,
    row: dict[str, str],
    column: str,
    kind: Callable[[str], T],
    low: float,
    high: float,
) -> T:
    """The column's value as `kind`, finite and within [low, high], else a TraceError."""
    value = row.get(column) or ""
    shown = (
        repr(value) if len(value) <= SHOWN else f"{value[:SHOWN]!r}... ({len(value)} characters)"
    )
    try:
        if not (_INT if kind is int else _FLOAT).fullmatch(value.strip()):
            raise ValueError(value)
        number = kind(value.strip())
    except ValueError:
        raise TraceError(
            f"{path}:{line}: column {column!r}: {shown} is not a{'n' if kind is int else ''} "
            f"{kind.__name__}"
        ) from None
    if not low <= float(number) <= high:  # NaN fails both comparisons
        raise TraceError(f"{path}:{line}: column {column!r}: {shown} is outside {low:g}..{high:g}")
    return number


def _unique(path: Path, line: int, kind: str, name: str, seen: dict[str, int]) -> None:
    if not name.strip():
        raise TraceError(f"{path}:{line}: empty {kind} name")
    if name in seen:
        raise TraceError(
            f"{path}:{line}: {kind} {name!r} again (first on line {seen[name]}); names are unique"
        )
    seen[name] = line


def load_nodes(path: Path) -> list[Node]:
    nodes: list[Node] = []
    seen: dict[str, int] = {}
    for line, row in _rows(path, NODE_COLUMNS, MAX_NODES):
        _unique(path, line, "node", row["sn"], seen)
        model = (row.get("model") or "").strip()
        nodes.append(
            Node(
                name=row["sn"],
                cpu_milli=_field(path, line, row, "cpu_milli", int, 1, MAX_MILLI),
                memory_mib=_field(path, line, row, "memory_mib", int, 1, MAX_MILLI),
                gpus=_field(path, line, row, "gpu", int, 0, MAX_GPUS_PER_NODE),
                gpu_model=model,
                labels={
                    "kubernetes.io/hostname": row["sn"],
                    **({GPU_MODEL_LABEL: model} if model else {}),
                },
            )
        )
    if not any(node.gpus for node in nodes):
        raise TraceError(f"{path}: no node has a GPU; a GPU replay needs at least one")
    return nodes


def load_pods(path: Path) -> list[Pod]:
    pods: list[Pod] = []
    seen: dict[str, int] = {}
    for index, (line, row) in enumerate(_rows(path, POD_COLUMNS, MAX_PODS)):
        _unique(path, line, "pod", row["name"], seen)
        gpus = _field(path, line, row, "num_gpu", int, 0, MAX_GPUS_PER_NODE)
        # openb: the share of each GPU; a share (< 1000) only for a one-GPU task
        milli = _field(path, line, row, "gpu_milli", int, 1 if gpus else 0, 1000) if gpus else 0
        if gpus > 1 and milli != 1000:
            raise TraceError(
                f"{path}:{line}: column 'gpu_milli': {milli} with num_gpu {gpus}; "
                "a task of several GPUs takes them whole (1000)"
            )
        qos = row.get("qos") or ""
        if qos and qos not in QOS:
            raise TraceError(f"{path}:{line}: column 'qos': {qos!r}; known: {', '.join(QOS)}")
        created = row.get("creation_time")
        pods.append(
            Pod(
                name=row["name"],
                cpu_milli=_field(path, line, row, "cpu_milli", int, 0, MAX_MILLI),
                memory_mib=_field(path, line, row, "memory_mib", int, 0, MAX_MILLI),
                gpus=gpus,
                gpu_milli=milli,
                qos=QOS[qos] if qos else DEFAULT_QOS,
                created=(
                    _field(path, line, row, "creation_time", float, -1e18, 1e18)
                    if created
                    else float(index)
                ),
                gpu_models=tuple(m for m in (row.get("gpu_spec") or "").split("|") if m),
            )
        )
    return pods
