"""Layers do not import upwards: the scheduler ships alone and never imports the pipeline."""

from __future__ import annotations

import ast
import sys

from tests.conftest import REPO_ROOT


def imported_modules(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (REPO_ROOT / "scheduler" / package).glob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
        found[path.name] = names
    return found


def test_scheduler_never_imports_the_pipeline() -> None:
    modules = imported_modules("heps_scheduler")
    assert len(modules) >= 10
    offenders = {name for name, imports in modules.items() if "heps" in imports}
    assert offenders == set()


def test_scheduler_image_installs_what_the_scheduler_imports() -> None:
    third_party = set().union(*imported_modules("heps_scheduler").values()) - {
        "heps_scheduler",
        "__future__",
        "matplotlib",  # plots are optional, imported lazily
    }
    stdlib = set(sys.stdlib_module_names)
    pins = (REPO_ROOT / "scheduler" / "requirements.txt").read_text().lower()
    for module in sorted(third_party - stdlib):
        assert {"yaml": "pyyaml"}.get(module, module) in pins, f"{module} not in requirements.txt"
