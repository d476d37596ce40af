"""The openb trace format (Alibaba clusterdata, cluster-trace-gpu-v2023) as nodes and pods."""

from __future__ import annotations

import csv
from pathlib import Path

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


def load_nodes(path: Path) -> list[Node]:
    with path.open() as handle:
        return [
            Node(
                name=row["sn"],
                cpu_milli=int(row["cpu_milli"]),
                memory_mib=int(row["memory_mib"]),
                gpus=int(row["gpu"]),
                gpu_model=row["model"],
                labels={
                    "kubernetes.io/hostname": row["sn"],
                    **({GPU_MODEL_LABEL: row["model"]} if row["model"] else {}),
                },
            )
            for row in csv.DictReader(handle)
        ]


def load_pods(path: Path) -> list[Pod]:
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    return [
        Pod(
            name=row["name"],
            cpu_milli=int(row["cpu_milli"]),
            memory_mib=int(row["memory_mib"]),
            gpus=int(row["num_gpu"]),
            gpu_milli=int(row["gpu_milli"]) if int(row["num_gpu"]) else 0,
            qos=QOS.get(row["qos"], BURSTABLE),
            created=float(row["creation_time"] or 0),
            gpu_models=tuple(m for m in row["gpu_spec"].split("|") if m),
        )
        for row in rows
    ]
