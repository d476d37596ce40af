"""Replay results as text for people: aligned tables, Markdown rows, terminal progress."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from heps_scheduler.model import BEST_EFFORT, BURSTABLE, GUARANTEED
from heps_scheduler.simulate import PolicyResult

GPU_CLASSES = ("cpu-only", "shared-gpu", "whole-gpu", "multi-gpu")
QOS_CLASSES = (GUARANTEED, BURSTABLE, BEST_EFFORT)


def table(rows: list[list[str]]) -> str:
    """Columns aligned: the first left, the others right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


def summary(results: list[PolicyResult]) -> str:
    """Outcome per policy: at 100% arrival and at the end, then failures by class and QoS.
    A failed pod was never placed or was preempted (`preempted` of them)."""
    head = [
        "policy", "placed", "failed", "preempted", "unalloc@100%", "frag@100%",
        "unalloc@end", "frag@end", "alloc@end", "dec/s", "p99 ms",
    ]  # fmt: skip
    outcome = [head] + [
        [
            r.policy,
            f"{r.scheduled}",
            f"{r.failed}",
            f"{r.preempted}",
            f"{r.at_full_load.get('unallocated_gpus', float('nan')):.1f}",
            f"{r.at_full_load.get('frag_rate', float('nan')):.3f}",
            f"{r.unallocated_gpus:.1f}",
            f"{r.frag_rate:.3f}",
            f"{r.gpu_alloc_rate:.3f}",
            f"{r.decisions_per_s:.0f}",
            f"{r.p99_decision_ms:.2f}",
        ]
        for r in results
    ]
    failures = [["failed pods", *GPU_CLASSES, *QOS_CLASSES]] + [
        [
            r.policy,
            *(str(r.failed_by_class.get(c, 0)) for c in GPU_CLASSES),
            *(str(r.failed_by_qos.get(q, 0)) for q in QOS_CLASSES),
        ]
        for r in results
    ]
    return table(outcome) + "\n\n" + table(failures)


def markdown_header(policies: list[str]) -> str:
    cells = ["trace", "seed", *(f"{p} unalloc / failed G" for p in policies)]
    return "| " + " | ".join(cells) + " |\n|" + " --- |" * len(cells)


def markdown_row(trace: str, seed: int, results: list[PolicyResult]) -> str:
    cells = [trace, str(seed)]
    cells += [f"{r.unallocated_gpus:.1f} / {r.failed_guaranteed}" for r in results]
    return "| " + " | ".join(cells) + " |"


class TerminalProgress:
    """One self-rewriting line on stderr, and only when stderr is a terminal."""

    def __init__(self, label: str, stream: TextIO = sys.stderr) -> None:
        self.label, self.stream = label, stream
        self.enabled = stream.isatty()
        self._last = 0.0

    def __call__(self, policy: str, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self._last < 0.2 and done < total):
            return
        self._last = now
        self.stream.write(f"\r\033[K{self.label} {policy}: {done:,}/{total:,} pods")
        self.stream.flush()

    def clear(self) -> None:
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()
