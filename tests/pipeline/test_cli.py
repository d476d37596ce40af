"""The command line as documented: global options before or after the verb, usage
errors naming the right command, option values never taken for recipe names."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import BUSYBOX, Env, simple_recipe, write_recipe


def test_global_options_work_after_the_verb(heps: Any, env: Env) -> None:
    write_recipe(env.repo, "app", simple_recipe("app"), Dockerfile=f"FROM {BUSYBOX}\n")
    write_recipe(env.repo, "other", simple_recipe("other"), Dockerfile=f"FROM {BUSYBOX}\n")
    where = env.registry.address
    before = heps(env.repo, "--registry", where, "--namespace", "before", "plan", "--json")
    after = heps(env.repo, "plan", "--all", "--registry", where, "--namespace", "after", "--json")
    named = heps(env.repo, "plan", "--namespace", "named", "app", "-v", "--json")
    assert (before.code, after.code, named.code) == (0, 0, 0), before.text + after.text
    images = [[e["image"] for e in json.loads(r.out)] for r in (before, after, named)]
    assert images == [
        [f"{where}/before/app:1.0.0", f"{where}/before/other:1.0.0"],
        [f"{where}/after/app:1.0.0", f"{where}/after/other:1.0.0"],
        [f"{where}/named/app:1.0.0"],  # "named" is the namespace, never a recipe
    ]
    overridden = heps(env.repo, "--namespace", "first", "plan", "--namespace", "last", "--json")
    assert json.loads(overridden.out)[0]["image"].startswith(f"{where}/last/")


def test_usage_errors_name_the_command(heps: Any, env: Env) -> None:
    for args, command in (
        (["run", "--bogus"], "heps run"),
        (["jenkins", "render", "--bogus"], "heps jenkins render"),
        (["run", "--promote"], "heps run"),
        (["frobnicate"], "heps"),
        ([], "heps"),
    ):
        result = heps(env.repo, *args)
        assert result.code == 2, args
        assert f"see `{command} --help`" in result.err and "heps heps" not in result.err, args
