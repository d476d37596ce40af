"""The faster plan is the same plan: the libyaml reader and the compiled schema check
give the recipes the reference readers give, the registry look-ahead gives the same
entries, and every input that reaches an image still changes the plan."""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

import pytest

from bench.run import generate_tree, upload_labels_only_images
from heps import cli
from heps.core import cache, settings, validation, yaml12
from heps.images import fingerprint, graph, recipes
from heps.systems import registry as registry_module
from heps.systems.registry import Registry
from heps.systems.services import RegistryService

BUNDLED = Path(__file__).resolve().parents[2]


def reference_readers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file read by ruamel and checked by jsonschema, as before this change."""

    def unread(text: str) -> Any:
        raise yaml12.Unread("reference")

    monkeypatch.setattr(yaml12, "load", unread)
    monkeypatch.setattr(validation, "_valid", lambda data, name: False)


@pytest.mark.parametrize("where", ["bundled", "generated"])
def test_fast_readers_give_the_reference_recipes(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = BUNDLED if where == "bundled" else tmp_path
    if where == "generated":
        generate_tree(tmp_path, count=30, roots=5)
    cfg = settings.load(repo, env={})
    fast = recipes.discover(cfg)
    tree = graph.resolve(fast, cfg.registry)
    with monkeypatch.context() as patched:
        reference_readers(patched)
        slow = recipes.discover(cfg)
        slow_tree = graph.resolve(slow, cfg.registry)
    assert fast == slow
    assert tree.order == slow_tree.order
    assert fingerprint.compute(tree, None) == fingerprint.compute(slow_tree, None)


def use_registry(
    monkeypatch: pytest.MonkeyPatch, registry: RegistryService, namespace: str, state: Path
) -> None:
    """`heps` in this process plans against `namespace` of the real registry."""
    env = {
        "HEPS_REGISTRY": registry.address,
        "HEPS_NAMESPACE": namespace,
        "HEPS_REGISTRY_USERNAME": registry.username,
        "HEPS_REGISTRY_PASSWORD": registry.password,
        "HEPS_CA_BUNDLE": "",
        "HEPS_STATE_DIR": str(state),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def planned(tmp_path: Path, registry: RegistryService, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Six recipes in two chains, every image in a real registry with its labels."""
    repo = tmp_path / "repo"
    generate_tree(repo, count=6, roots=2)
    namespace = f"same{secrets.token_hex(4)}"
    use_registry(monkeypatch, registry, namespace, tmp_path / "state")
    upload_labels_only_images(registry, namespace, repo)
    return repo


def plan(repo: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, Any]]:
    capsys.readouterr()
    assert cli.main(["--repo", str(repo), "plan", "--json"]) == 0
    return {e["name"]: e for e in json.loads(capsys.readouterr().out)}


def test_look_ahead_gives_the_same_plan(
    planned: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (planned / "app-recipes/app-003/file0.py").write_text("changed\n")
    ahead = plan(planned, capsys)
    monkeypatch.setattr(Registry, "look_ahead", lambda self, tags, parallel=8: None)
    assert plan(planned, capsys) == ahead
    assert {n: e["reason"] for n, e in ahead.items() if e["action"] == "build"} == {
        "app-003": "changed",
        "app-005": "base changed",
    }


CHANGES = {
    "recipe": ("app-000/recipe.yaml", "build: {args: {EXTRA: '1'}}\n"),
    "Dockerfile": ("app-000/Dockerfile", "ENV X=1\n"),
    "context file": ("app-000/file2.py", "y = 2\n"),
    ".dockerignore": ("app-000/.dockerignore", "file1.py\n"),
}


@pytest.mark.parametrize("what", sorted(CHANGES))
def test_each_input_changes_the_plan(
    what: str, planned: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recipe, its Dockerfile, a context file or a .dockerignore change app-000; the
    change reaches its children (app-002, app-004) as a changed base: with the caches
    warm, every file digest served from them (the fixture's files are older than the
    racy window, as a checkout's are: the clock is moved on, not the files' ctimes)."""
    later = time.time_ns() + 2 * cache.RACY_NS
    monkeypatch.setattr(cache.time, "time_ns", lambda: later)
    assert {e["reason"] for e in plan(planned, capsys).values()} == {"unchanged"}
    hashed = []
    digest = cache.hashlib.file_digest
    monkeypatch.setattr(cache.hashlib, "file_digest", lambda f, h: hashed.append(f) or digest(f, h))
    assert {e["reason"] for e in plan(planned, capsys).values()} == {"unchanged"}
    assert hashed == []  # the second plan read every digest from the cache
    rel, extra = CHANGES[what]
    path = planned / "app-recipes" / rel
    path.write_text((path.read_text() if path.exists() else "") + extra)
    after = plan(planned, capsys)
    built = {n: e["reason"] for n, e in after.items() if e["action"] == "build"}
    assert built == {"app-000": "changed", "app-002": "base changed", "app-004": "base changed"}


@pytest.mark.parametrize("name", ["recipe", "settings"])
def test_every_schema_has_its_compiled_check(name: str) -> None:
    """A keyword fastjsonschema would read otherwise (`format`: an annotation for
    jsonschema, which is given no format checker) must not send every file to jsonschema."""
    assert validation._compiled(name) is not None


def plan_run(repo: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(["--repo", str(repo), "plan", "--json"])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_corrupt_cache_is_one_warning_then_the_same_plan(
    planned: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, before, _ = plan_run(planned, capsys)
    stored = Path(os.environ["HEPS_STATE_DIR"]) / "cache" / "parsed"
    data = bytearray(stored.read_bytes())
    data[-10] ^= 1  # one bit flipped in the body: the header's digest no longer matches
    stored.write_bytes(data)
    code_damaged, damaged, err = plan_run(planned, capsys)
    assert (code_damaged, damaged) == (code, before)
    (line,) = err.splitlines()
    assert f"cache {stored}: its digest does not match its content; ignored" in line
    assert plan_run(planned, capsys) == (code, before, "")  # rewritten whole: no warning


def test_bad_input_gets_the_same_line_with_the_cache_warm(
    planned: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert plan_run(planned, capsys)[0] == 0  # every recipe's text is in the cache now
    recipe = planned / "app-recipes/app-001/recipe.yaml"
    good = recipe.read_text()
    recipe.write_text(good.replace("version: 1.0.1", "version: [1]"))
    warm = plan_run(planned, capsys)
    monkeypatch.setenv("HEPS_STATE_DIR", str(planned.parent / "cold-state"))
    cold = plan_run(planned, capsys)
    assert warm == cold
    assert warm[0] == 2 and warm[1] == ""
    (line,) = warm[2].splitlines()
    assert line.startswith("heps: error: app-recipes/app-001/recipe.yaml:2: version:"), line
    recipe.write_text(good)  # the good text again: served from the cache, same plan
    assert plan_run(planned, capsys)[0] == 0


def test_a_context_without_dockerignore_holds_what_the_engines_walk_finds(tmp_path: Path) -> None:
    from docker.utils.build import exclude_paths

    from heps.systems.engine import context_paths

    (tmp_path / "a/b/c").mkdir(parents=True)
    for rel in ("Dockerfile", ".hidden", "a/x", "a/b/.y", "a/b/c/z", "a/b/c/Dockerfile"):
        (tmp_path / rel).write_text(rel)
    (tmp_path / "empty").mkdir()
    (tmp_path / "a/to-b").symlink_to("b")  # a link to a folder: listed, not entered
    (tmp_path / "dangling").symlink_to("nowhere")
    found = context_paths(tmp_path, [], "Dockerfile")
    assert found == set(exclude_paths(str(tmp_path), [], dockerfile="Dockerfile"))
    assert {"a/to-b", "dangling", "empty", "a/b/c/z"} <= found and "a/to-b/c" not in found


@pytest.fixture
def half_pushed(tmp_path: Path, registry: RegistryService, monkeypatch: pytest.MonkeyPatch) -> Path:
    """40 recipes, the first 30 of them in a namespace of their own in a real registry."""
    namespace = f"cat{secrets.token_hex(4)}"
    generate_tree(tmp_path / "pushed", count=30, roots=5)
    upload_labels_only_images(registry, namespace, tmp_path / "pushed")
    repo = tmp_path / "repo"
    generate_tree(repo, count=40, roots=5)
    use_registry(monkeypatch, registry, namespace, tmp_path / "state")
    return repo


@pytest.mark.parametrize("page", [1000, 7])
def test_the_catalog_gives_the_same_plan(
    page: int,
    half_pushed: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Names the catalog does not list are not asked one by one (one probe excepted),
    in one page or several; the plan is the one of asking each."""
    monkeypatch.setattr(registry_module, "CATALOG_PAGE", page)
    asked: list[str] = []
    image = Registry._image
    monkeypatch.setattr(Registry, "_image", lambda s, n, t: asked.append(n) or image(s, n, t))
    listed = plan_run(half_pushed, capsys)
    assert len(asked) == 31  # the 30 there, and one of the 10 absent to trust the catalog
    monkeypatch.setattr(Registry, "_unlisted", lambda self, tags: set())
    assert plan_run(half_pushed, capsys) == listed
    reasons = [e["reason"] for e in json.loads(listed[1])]
    assert reasons.count("unchanged") == 30 and reasons.count("not in registry") == 10


def test_a_catalog_that_leaves_out_what_is_there_is_not_trusted(
    half_pushed: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    every = plan_run(half_pushed, capsys)
    request = Registry._request

    def forgetful(self: Registry, method: str, path: str, *args: Any, **kw: Any) -> Any:
        response = request(self, method, path, *args, **kw)
        if path.startswith("_catalog"):  # the registry's real answer, one repository short
            body = response.json()
            body["repositories"] = [r for r in body["repositories"] if not r.endswith("-000")]
            return dataclasses.replace(response, content=json.dumps(body).encode())
        return response

    monkeypatch.setattr(Registry, "_request", forgetful)
    assert plan_run(half_pushed, capsys) == every
