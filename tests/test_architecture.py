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


PROCESS_SEAM = PACKAGE / "core" / "process.py"
STARTS_PROCESS = re.compile(
    r"^\s*(import subprocess|from subprocess import)|\bos\.(system|popen|spawn\w*|exec\w*)\(|"
    r"\bPopen\(|\bpty\.spawn\(",
    re.MULTILINE,
)


def test_programs_are_started_from_the_process_seam_only() -> None:
    """Every external program runs through heps.core.process: time limit, bounded
    output, masked one-line failures."""
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path != PROCESS_SEAM and STARTS_PROCESS.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_the_pattern_finds_a_started_program() -> None:
    for line in (
        "import subprocess",
        "from subprocess import run",
        "os.system('ls')",
        "os.execvp('ls', ['ls'])",
        "x = Popen(['ls'])",
    ):
        assert STARTS_PROCESS.search(line), line
    assert not STARTS_PROCESS.search("process.run(['ls'], timeout=1)")
