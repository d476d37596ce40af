"""The HTTP smoke check's CPU budget (`smoke.http.cpu_seconds`): an image whose start
burns more CPU than its recipe allows fails its smoke, read from the container's cgroup
by the real engine; one within budget passes and says what it used."""

from __future__ import annotations

import re
from typing import Any

from tests.conftest import BUSYBOX, Env, read_json, write_recipe

SERVE = "httpd -f -p 8080 -h /www"
# about a CPU-second of hashing before it answers, whatever the machine's load
COSTLY = f"head -c 400000000 /dev/zero | md5sum && {SERVE}"


def web(env: Env, name: str, start: str, budget: float) -> None:
    dockerfile = (
        f"FROM {BUSYBOX}\nRUN mkdir -p /www && echo ok > /www/index.html\n"
        f'CMD ["sh", "-c", "{start}"]\n'
    )
    recipe = {
        "name": name,
        "version": "1.0.0",
        "description": "d",
        "smoke": {
            "http": {"port": 8080, "path": "/index.html", "timeout": 60, "cpu_seconds": budget}
        },
    }
    write_recipe(env.repo, name, recipe, Dockerfile=dockerfile)


def test_a_start_over_its_cpu_budget_fails_its_smoke(heps: Any, env: Env) -> None:
    web(env, "thrifty", SERVE, 5)
    web(env, "costly", COSTLY, 0.2)
    result = heps(env.repo, "run", "--all", "--no-push", "--report", str(env.repo / "r.json"))
    assert result.code == 1, result.text
    smoke = {r["name"]: r["smoke"][0] for r in read_json(env.repo / "r.json")["recipes"]}
    assert smoke["thrifty"]["passed"], smoke["thrifty"]
    assert re.fullmatch(
        r"200 from /index.html after \d\.\d\d CPU-s \(budget 5\)", smoke["thrifty"]["detail"]
    )
    assert not smoke["costly"]["passed"]
    used = float(re.search(r"after (\d+\.\d+) CPU-s \(budget 0.2\)", smoke["costly"]["detail"])[1])
    assert used > 0.2
    assert "the start got costlier" in smoke["costly"]["detail"]
