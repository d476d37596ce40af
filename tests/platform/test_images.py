"""`heps platform up` runs, for a pin naming another registry (the testbed overlay's
site registry), the pipeline's image of the current tree: after a base change that is
the rebuild tag `heps run` made (VERSION-fp...), never the older image still under the
version tag. Real Docker engine, real registry, real git; no hub (test_platform.py)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import docker
import pytest

from heps.core import settings
from heps.core.errors import ConfigError
from heps.images.fingerprint import LABEL_FULL
from heps.platform import images
from heps.systems.engine import PlatformEngine
from tests.conftest import BUSYBOX, Env, internal_from, read_json, simple_recipe, write_recipe
from tests.pipeline.test_run import commit_all

PIN = "registry.heps.ihep.ac.cn/heps/leaf:1.0.0"
"""As the testbed overlay names an app until a promotion pins a digest."""


def _base(env: Env, version: str, line: str) -> None:
    recipe = simple_recipe("base", version)
    write_recipe(env.repo, "base", recipe, Dockerfile=f"FROM {BUSYBOX}\nRUN {line}\n")


def test_platform_runs_the_current_trees_image_after_a_base_change(
    heps: Any, env: Env, docker_client: docker.DockerClient
) -> None:
    _base(env, "1.0.0", "echo base > /hello")
    leaf = internal_from("base") + "RUN echo leaf > /hello\n"
    write_recipe(env.repo, "leaf", simple_recipe("leaf"), Dockerfile=leaf)
    commit_all(env.repo)
    assert heps(env.repo, "run", "--all").code == 0
    cfg = settings.load(env.repo)
    engine = PlatformEngine("heps-images-test")
    try:
        (first,) = images.ensure(cfg, engine, {"leaf": PIN})
        assert first.how == f"the pipeline's {env.repository('leaf')}:1.0.0"
        old = docker_client.images.get(PIN).id

        _base(env, "1.0.1", "echo base > /hello && echo fix > /v")  # leaf keeps 1.0.0
        commit_all(env.repo, "base fix")
        report = env.repo.parent / "r.json"
        assert heps(env.repo, "run", "--all", "--report", str(report)).code == 0
        entry = next(e for e in read_json(report)["recipes"] if e["name"] == "leaf")
        (rebuilt,) = entry["references"]  # the rebuild tag alone; 1.0.0 stays the old image
        assert ":1.0.0-fp" in rebuilt
        assert docker_client.images.get(env.repository("leaf") + ":1.0.0").id == old

        (again,) = images.ensure(cfg, engine, {"leaf": PIN})
        assert again.how == f"the pipeline's {rebuilt}"
        assert docker_client.images.get(PIN).id == docker_client.images.get(rebuilt).id != old

        # the tree moves on without `heps run`: up builds that tree's image here
        _base(env, "1.0.2", "echo base > /hello && echo fix2 > /v")
        commit_all(env.repo, "another base fix")
        (built,) = images.ensure(cfg, engine, {"leaf": PIN})
        labels = docker_client.images.get(PIN).labels
        plan = heps(env.repo, "plan", "--json")
        planned = {e["name"]: e for e in json.loads(plan.out)}
        assert labels[LABEL_FULL] == planned["leaf"]["fingerprint"]
        assert built.how == f"the pipeline's {planned['leaf']['reference']}"

        # an image the operator loaded under a pin no recipe builds is used as it is
        other = "registry.heps.ihep.ac.cn/heps/other:2.0"
        with pytest.raises(ConfigError, match="recipes other: not found; known: base, leaf"):
            images.ensure(cfg, engine, {"other": other})
        docker_client.images.get(BUSYBOX).tag(other)
        assert images.ensure(cfg, engine, {"other": other})[0].how == "here"
    finally:
        for pin in (PIN, "registry.heps.ihep.ac.cn/heps/other:2.0"):
            with contextlib.suppress(docker.errors.ImageNotFound):
                docker_client.images.remove(pin, noprune=True)
