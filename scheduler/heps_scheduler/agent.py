"""The node-metrics agent (a DaemonSet): reads /proc, publishes load where the scheduler
reads it, as a JSON annotation on its Node with a timestamp.

cpu and iowait are shares of all CPU time between two samples; network is the busiest
interface's throughput against its link speed (or 10 Gb/s where /sys does not say).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heps_scheduler.kube import METRICS_ANNOTATION


@dataclass(frozen=True)
class Sample:
    time: float
    cpu_total: int
    cpu_idle: int
    cpu_iowait: int
    net_bytes: dict[str, int]
    disk_busy_ms: int


def read_sample(proc: Path = Path("/proc"), now: float | None = None) -> Sample:
    fields = (proc / "stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(x) for x in fields]  # user nice system idle iowait irq softirq steal ...
    idle, iowait = ticks[3], ticks[4]
    net: dict[str, int] = {}
    for line in (proc / "net/dev").read_text().splitlines()[2:]:
        name, _, rest = line.partition(":")
        values = rest.split()
        if name.strip() != "lo" and len(values) >= 9:
            net[name.strip()] = int(values[0]) + int(values[8])
    disk = 0
    for line in (proc / "diskstats").read_text().splitlines():
        parts = line.split()
        if len(parts) > 12 and not parts[2].startswith(("loop", "ram")):
            disk += int(parts[12])  # ms spent doing I/O
    return Sample(time.time() if now is None else now, sum(ticks[:8]), idle, iowait, net, disk)


def link_bits_per_s(interface: str, sys: Path = Path("/sys/class/net")) -> float:
    try:
        speed = int((sys / interface / "speed").read_text().strip())
    except (OSError, ValueError):
        speed = -1
    return (speed if speed > 0 else 10_000) * 1e6


def metrics(before: Sample, after: Sample, sys: Path = Path("/sys/class/net")) -> dict[str, Any]:
    """Load between two samples, each a fraction 0..1, with the later sample's timestamp."""
    total = max(after.cpu_total - before.cpu_total, 1)
    idle = after.cpu_idle - before.cpu_idle
    iowait = after.cpu_iowait - before.cpu_iowait
    seconds = max(after.time - before.time, 1e-6)
    network = 0.0
    for name, count in after.net_bytes.items():
        rate = (count - before.net_bytes.get(name, count)) * 8 / seconds
        network = max(network, rate / link_bits_per_s(name, sys))
    disk = (after.disk_busy_ms - before.disk_busy_ms) / 1000 / seconds
    return {
        "cpu": round(min(max((total - idle - iowait) / total, 0.0), 1.0), 4),
        "iowait": round(min(max(iowait / total, 0.0), 1.0), 4),
        "network": round(min(network, 1.0), 4),
        "disk": round(min(disk, 1.0), 4),
        "timestamp": after.time,
    }


def annotation_patch(values: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"annotations": {METRICS_ANNOTATION: json.dumps(values, sort_keys=True)}}}


def publish(core: Any, node: str, values: dict[str, Any]) -> None:
    core.patch_node(node, annotation_patch(values), _preload_content=False)
