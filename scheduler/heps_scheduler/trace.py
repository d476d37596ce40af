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

T = TypeVar("T")


class TraceError(ValueError):
    """A trace file that cannot be read; the message names the file, the line and the column."""


def _rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        for column in required:
            if column not in columns:
                raise TraceError(
                    f"{path}: missing column {column!r} (an openb list needs "
                    f"{', '.join(required)}; the header has {', '.join(columns) or 'nothing'})"
                )
        for row in reader:
            yield reader.line_num, row


def _field(path: Path, line: int, row: dict[str, str], column: str, kind: Callable[[str], T]) -> T:
    value = row.get(column) or ""
    try:
        return kind(value)
    except ValueError:
        raise TraceError(
            f"{path}:{line}: column {column!r}: {value!r} is not a {kind.__name__}"
        ) from None


def load_nodes(path: Path) -> list[Node]:
    nodes = []
    for line, row in _rows(path, NODE_COLUMNS):
        model = row.get("model") or ""
        nodes.append(
            Node(
                name=row["sn"],
                cpu_milli=_field(path, line, row, "cpu_milli", int),
                memory_mib=_field(path, line, row, "memory_mib", int),
                gpus=_field(path, line, row, "gpu", int),
                gpu_model=model,
                labels={
                    "kubernetes.io/hostname": row["sn"],
                    **({GPU_MODEL_LABEL: model} if model else {}),
                },
            )
        )
    return nodes


def load_pods(path: Path) -> list[Pod]:
    pods = []
    for index, (line, row) in enumerate(_rows(path, POD_COLUMNS)):
        gpus = _field(path, line, row, "num_gpu", int)
        qos = row.get("qos") or ""
        if qos and qos not in QOS:
            raise TraceError(f"{path}:{line}: column 'qos': {qos!r}; known: {', '.join(QOS)}")
        created = row.get("creation_time")
        pods.append(
            Pod(
                name=row["name"],
                cpu_milli=_field(path, line, row, "cpu_milli", int),
                memory_mib=_field(path, line, row, "memory_mib", int),
                gpus=gpus,
                gpu_milli=_field(path, line, row, "gpu_milli", int) if gpus else 0,
                qos=QOS[qos] if qos else DEFAULT_QOS,
                created=(
                    _field(path, line, row, "creation_time", float) if created else float(index)
                ),
                gpu_models=tuple(m for m in (row.get("gpu_spec") or "").split("|") if m),
            )
        )
    return pods
