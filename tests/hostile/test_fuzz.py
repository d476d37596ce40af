"""Fuzzing the three readers of untrusted text: recipe loading, Dockerfile reading and the
overlay pin editor. Each must either give its result or refuse with a ConfigError (one
line per problem): any other exception, a hang or a crash is a bug.

The normal suite runs a short pass (a few seconds); `tox -e fuzz` runs the long one
(HEPS_FUZZ=long, HEPS_FUZZ_EXAMPLES cases per target) and prints Hypothesis' statistics.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heps.core import settings as heps_settings
from heps.core.cache import Store
from heps.core.errors import ConfigError
from heps.core.kube_yaml import PinError
from heps.gitops.pin import Pin, image_fields, pin_text
from heps.images import dockerfile, recipes

LONG = os.environ.get("HEPS_FUZZ") == "long"
RUN = settings(
    max_examples=int(os.environ.get("HEPS_FUZZ_EXAMPLES", "5000")) if LONG else 100,
    deadline=None,
    database=None if not LONG else settings.default.database,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# Pieces YAML parsers and Dockerfile readers trip on, mixed into generated text.
TRICKS = [
    "&a ",
    "*a",
    "*b",
    "&b [*a, *a, *a]",
    "!!python/object:os.system",
    "!!binary",
    "? ",
    ": ",
    "- ",
    "[",
    "]",
    "{",
    "}",
    "|",
    ">-",
    "'",
    '"',
    "\\",
    "\t",
    "\n",
    "\n  ",
    "#",
    "%YAML 1.1\n",
    "---\n",
    "...\n",
    "<<: *a",
    "\x00",
    "\x1b[31m",
    "\u2028",
    "\ufeff",
    "ARG A=${B:-c}",
    "FROM ",
    " AS ",
    "\\\n",
    "# escape=`\n",
    "`\n",
    "${",
    "$A",
    "=",
    "@sha256:",
    "image: ",
]
text_parts = st.one_of(st.sampled_from(TRICKS), st.text(max_size=12))
hostile_text = st.lists(text_parts, max_size=40).map("".join)

scalars = st.one_of(
    st.text(max_size=20), st.integers(), st.booleans(), st.none(), st.sampled_from(TRICKS)
)
recipe_like = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["app", "App", "", "a/b", "app\n"]),
        "version": st.one_of(st.sampled_from(["1.0.0", "1.0", "1.0.0-rc.1"]), scalars),
        "description": scalars,
        "smoke": st.fixed_dictionaries(
            {
                "commands": st.lists(
                    st.fixed_dictionaries(
                        {"name": scalars, "run": st.lists(scalars, max_size=3)},
                        optional={
                            "expect_output": st.one_of(
                                st.sampled_from(["^(a+)+$", r"(a)\1", "(?=x)", "[", "ok(?s)"]),
                                st.text(max_size=10),
                            ),
                            "timeout": scalars,
                        },
                    ),
                    max_size=3,
                )
            }
        ),
    },
    optional={
        "build": st.dictionaries(
            st.sampled_from(["context", "dockerfile", "args", "target"]), scalars, max_size=4
        ),
        "profile": st.dictionaries(st.sampled_from(["display_name", "cpu", "gpu"]), scalars),
    },
).map(lambda d: yaml.safe_dump(d, allow_unicode=True))
recipe_text = st.one_of(
    hostile_text, recipe_like, st.tuples(recipe_like, hostile_text).map("".join)
)


@pytest.fixture(scope="module")
def repo() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="heps-fuzz-") as tmp:
        root = Path(tmp)
        (root / "app-recipes" / "app").mkdir(parents=True)
        (root / "app-recipes" / "app" / "Dockerfile").write_text("FROM scratch\n")
        yield root


def _one_line_each(problems: list[str], file: str) -> None:
    for problem in problems:
        assert "\n" not in problem and problem.startswith(file), problem


@RUN
@given(text=recipe_text)
def test_recipe_loading_refuses_or_loads(repo: Path, text: str) -> None:
    (repo / "app-recipes/app/recipe.yaml").write_text(text, encoding="utf-8", errors="replace")
    try:
        (recipe,) = recipes.discover(heps_settings.load(repo, env={}))
    except ConfigError as exc:
        _one_line_each(exc.problems, "app-recipes/app/")
        return
    assert recipe.name == "app"


@RUN
@given(data=st.binary(max_size=200))
def test_recipe_loading_of_arbitrary_bytes(repo: Path, data: bytes) -> None:
    (repo / "app-recipes/app/recipe.yaml").write_bytes(data)
    try:
        recipes.discover(heps_settings.load(repo, env={}))
    except ConfigError as exc:
        _one_line_each(exc.problems, "app-recipes/app/")


@RUN
@given(text=hostile_text, args=st.dictionaries(st.sampled_from(["A", "B", "BASE"]), st.text()))
def test_dockerfile_reading_refuses_or_reads(repo: Path, text: str, args: dict[str, str]) -> None:
    path = repo / "app-recipes/app/Dockerfile.fuzz"
    path.write_text(text, encoding="utf-8", errors="replace")
    try:
        parsed = dockerfile.parse(path, args, path.name)
    except ConfigError:
        return
    assert all(step.line <= step.end_line for step in parsed.instructions)


PINS = [Pin("app", "reg.example:5000/heps/app", "1.0.0-g0123456789ab", "sha256:" + "a" * 64)]
image_values = st.one_of(
    st.sampled_from(["app", "app:1", "reg.example:5000/heps/app:0.9@sha256:" + "b" * 64]),
    st.sampled_from(["'app'", '"app"', "&x app", "!!str app", "*x", "app\n  more", "|\n  app"]),
    st.text(max_size=10),
)
manifest = st.builds(
    lambda image, noise, flow: (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\nspec:\n  template:\n"
        "    spec:\n      containers:\n"
        + (
            f"        - {{name: c, image: {image}}}\n"
            if flow
            else f"        - name: c\n          image: {image}\n"
        )
        + noise
    ),
    image_values,
    hostile_text,
    st.booleans(),
)
kustomization = st.builds(
    lambda entries, noise: (
        "resources: [../../base]\nimages:\n"
        + "".join(f"  - name: {name}\n    newTag: {tag}\n" for name, tag in entries)
        + noise
    ),
    st.lists(st.tuples(image_values, st.text(max_size=8)), max_size=3),
    hostile_text,
)
overlay_text = st.one_of(manifest, kustomization, hostile_text)


@RUN
@given(text=st.one_of(overlay_text, st.lists(overlay_text, max_size=3).map("---\n".join)))
def test_pin_editor_refuses_or_pins_idempotently(text: str) -> None:
    store = Store(Path("/nonexistent/manifests"), 100)  # in memory: never saved
    try:
        new, found = pin_text(text, "overlay.yaml", PINS)
    except PinError as exc:
        _one_line_each(exc.problems, "overlay.yaml")
        for _ in range(2):  # the manifest cache, cold then warm: the same line
            with pytest.raises(PinError) as cached:
                pin_text(text, "overlay.yaml", PINS, store)
            assert cached.value.problems == exc.problems
        return
    for _ in range(2):
        assert pin_text(text, "overlay.yaml", PINS, store) == (new, found)
    # what the store keeps for the text it wrote is what composing that text gives
    assert image_fields(new, "overlay.yaml", store) == image_fields(new, "overlay.yaml")
    if not found:
        assert new == text
        return
    again, _ = pin_text(new, "overlay.yaml", PINS)
    assert again == new  # pinning what is pinned changes nothing
    assert PINS[0].digest in new
