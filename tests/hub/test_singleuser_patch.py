"""The JupyterHub patch jupyterlab-base carries (`jupyterhub-lazy-imports.patch`),
applied by the Dockerfile's own step (apply-patch.sh) to a copy of this environment's
JupyterHub: it applies to the pinned version, refuses text it does not know, and the
modules the single-user server takes from JupyterHub then load without the hub's
database layer, while the hub's own modules still load and use it.

The image's structure test checks the same on the built image, with the single-user
server itself (which needs jupyter_server, not installed here)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

RECIPE = Path(__file__).resolve().parents[2] / "app-recipes" / "jupyterlab-base"
PATCH = RECIPE / "jupyterhub-lazy-imports.patch"


def _pinned() -> str:
    found = re.search(r"^jupyterhub==(\S+)$", (RECIPE / "requirements.txt").read_text(), re.M)
    assert found, "jupyterlab-base pins no jupyterhub version"
    return found.group(1)


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """This environment's JupyterHub package, copied: site-packages stays untouched."""
    if metadata.version("jupyterhub") != _pinned():
        pytest.skip(
            f"this environment has JupyterHub {metadata.version('jupyterhub')}, the image"
            f" pins {_pinned()}: the image build applies the patch to its pin"
        )
    source = Path(metadata.distribution("jupyterhub").locate_file("jupyterhub"))
    shutil.copytree(source, tmp_path / "jupyterhub", ignore=shutil.ignore_patterns("tests"))
    return tmp_path


def _apply(where: Path, version: str = "") -> subprocess.CompletedProcess[str]:
    """The Dockerfile's step: apply-patch.sh, told the installed version."""
    return subprocess.run(
        ["sh", RECIPE / "apply-patch.sh", where, PATCH, version or metadata.version("jupyterhub")],
        capture_output=True,
        text=True,
        check=False,
    )


def _python(where: Path, code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(where)!r})\n{code}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


DATABASE = "{'sqlalchemy', 'alembic', 'jupyterhub.orm', 'jupyterhub.handlers'}"
SINGLE_USER_SIDE = f"""
import jupyterhub.log, jupyterhub.services.auth, jupyterhub.utils, jupyterhub.httpclient
from jupyterhub.services.auth import check_scopes
assert jupyterhub.__file__.startswith(sys.path[0]), jupyterhub.__file__
# what the server asks of jupyterhub.scopes on every authenticated request
granted = check_scopes({{"access:servers!server=alice/"}}, {{"access:servers!user=alice"}})
print(sorted(granted), sorted({DATABASE} & set(sys.modules)))
"""


def test_the_single_user_side_loads_without_the_database_layer(copy: Path) -> None:
    before = _python(copy, SINGLE_USER_SIDE)
    assert "'sqlalchemy'" in before  # the release as published: it does load it
    done = _apply(copy)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not list(copy.rglob("*.orig")) and not list(copy.rglob("*.rej"))
    assert _python(copy, SINGLE_USER_SIDE) == "['access:servers!server=alice/'] []\n"


def test_the_hub_side_still_loads_and_uses_what_was_moved(copy: Path) -> None:
    assert _apply(copy).returncode == 0
    hub = _python(
        copy,
        f"""
import jupyterhub.app
from jupyterhub import log, metrics, orm, scopes, utils
print(sorted({DATABASE} & set(sys.modules)))
print(sorted(scopes.identify_scopes(orm.User(name="alice"))))
print(utils.catch_db_error(lambda self: None).__name__)
""",
    )
    lines = hub.splitlines()
    assert lines[0] == "['alembic', 'jupyterhub.handlers', 'jupyterhub.orm', 'sqlalchemy']"
    assert lines[1].startswith("['read:users:groups!user=alice', 'read:users:name!user=alice'")
    assert lines[2] == "<lambda>"


def test_a_jupyterhub_whose_files_differ_fails_the_build(copy: Path) -> None:
    log = copy / "jupyterhub" / "log.py"
    log.write_text(log.read_text().replace("import traceback\n", "import traceback  # 6.x\n"))
    refused = _apply(copy)
    assert refused.returncode != 0
    assert "FAILED" in refused.stdout
    assert _apply(copy).returncode != 0  # and applied twice (a half-patched tree) too


def test_a_jupyterhub_with_its_lines_moved_fails_the_build(copy: Path) -> None:
    """Context that matches at other lines (here one line added above each hunk) would
    apply "with offset": the step refuses it, since a moved release may also use a name
    the patch made lazy."""
    for name in ("log.py", "scopes.py"):
        module = copy / "jupyterhub" / name
        module.write_text("# one more line\n" + module.read_text())
    refused = _apply(copy)
    assert refused.returncode != 0
    assert "applied at other lines than jupyterhub" in refused.stderr


def test_another_jupyterhub_release_fails_the_build(copy: Path) -> None:
    refused = _apply(copy, version="6.1.0")
    assert refused.returncode != 0
    assert f"made for jupyterhub {_pinned()}, found 6.1.0" in refused.stderr
    assert not list(copy.rglob("*.orig"))  # refused before any file was touched
    assert "'sqlalchemy'" in _python(copy, SINGLE_USER_SIDE)
