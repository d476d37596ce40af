"""The two kinds of failure, and nothing else, cross module boundaries.

Mirrors kopf: a *permanent* error will fail the same way if retried (bad recipe, bad
settings, a refused password); a *temporary* one may succeed after a delay (registry
answering 5xx, connection reset). `heps.cli` maps them to exit codes in one place.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from heps.core.stages import Stage

T = TypeVar("T")


class HepsError(Exception):
    """Base of every error the pipeline raises on purpose."""


class ConfigError(HepsError):
    """Bad usage, settings, recipe or environment: exit 2, nothing built.

    `problems` holds one line per problem, each naming file, field and fix.
    """

    def __init__(self, problems: str | list[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class StageError(HepsError):
    """One recipe failed in one stage (lint, build, smoke, push): exit 1."""

    def __init__(self, stage: Stage, message: str) -> None:
        self.stage = stage
        super().__init__(message)


@dataclass
class TemporaryError(HepsError):
    """Worth retrying after `delay` seconds."""

    message: str
    delay: float = 2.0

    def __str__(self) -> str:
        return self.message


def with_retries(action: Callable[[], T], attempts: int = 3) -> T:
    """Run `action`; on TemporaryError wait its delay and try again, `attempts` times in all."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except TemporaryError as exc:
            if attempt == attempts:
                raise
            time.sleep(exc.delay * attempt)
    raise AssertionError("unreachable")
