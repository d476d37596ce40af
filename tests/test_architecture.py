"""What import-linter cannot see: programs started by name. git runs from one module only."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline" / "heps"
SEAM = PACKAGE / "systems" / "git.py"
STARTS_GIT = re.compile(r"""\[\s*["']git["']\s*,""")


def test_git_is_started_from_the_git_seam_only() -> None:
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path != SEAM and STARTS_GIT.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_the_pattern_finds_a_git_command() -> None:
    assert STARTS_GIT.search('subprocess.run(["git", "-C", repo, "status"])')
