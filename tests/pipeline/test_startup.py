"""Start-up cost: `heps --help`, `--version` and a bad argument import only the standard
library and heps' own modules (each verb imports what it uses when it runs)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# In a fresh interpreter: the modules running the command loaded, as top-level names (a
# None entry is a module heps keeps out, see heps/__init__.py).
PROBE = """
import json, sys
before = set(sys.modules)
from heps import cli
try:
    code = cli.main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
added = {n.split(".")[0] for n in set(sys.modules) - before if sys.modules[n] is not None}
print(json.dumps({"code": code, "added": sorted(added)}))
"""


@pytest.mark.parametrize(
    ("argv", "code"),
    [(["--help"], 0), (["--version"], 0), (["plan", "--no-such-flag"], 2), (["frobnicate"], 2)],
)
def test_start_up_imports_only_the_standard_library(argv: list[str], code: int) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, check=True
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == code
    foreign = [
        name
        for name in result["added"]
        if name != "heps" and name not in sys.stdlib_module_names and not name.startswith("_")
    ]
    assert foreign == [], f"`heps {' '.join(argv)}` imported {foreign}"


def test_the_probe_sees_a_third_party_import() -> None:
    """The check above can fail: a verb that loads settings pulls in the YAML reader."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, "schema", "recipe"], capture_output=True, text=True
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == 0
    assert "jsonschema" in result["added"] or "yaml" in result["added"]
