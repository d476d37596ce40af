"""The libyaml reader (`heps.core.yaml12`) gives exactly what ruamel's safe loader gives,
or steps aside (`Unread`) so that ruamel decides: recipes must mean what they meant."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.parser import ParserError
from ruamel.yaml.scanner import ScannerError

from heps.core import yaml12

SCALARS = [
    "yes", "no", "on", "off", "y", "n", "true", "True", "FALSE", "~", "null", "Null", "",
    "010", "0o10", "0x1F", "0b101", "1_000", "-0", "+12", "1:30", "190:20:30", "1.0",
    "1.", ".5", "1e3", "1E-3", "1.5e+3", ".inf", "-.Inf", ".NaN", "2001-12-14",
    "2001-12-14t21:59:43.10-05:00", "=", "<<", "_", "0_", "1.0.0", "'quoted'", '"1"',
    "!!str 1", "!!int 7", "!!float 1", "!!bool yes", "!!binary aGk=", "!!set {a}",
    "!!python/tuple [1]", "&x 1", "*x", "a b", "-", "0", "00", "09", "0o9", "0x", "+",
]  # fmt: skip


def ruamel(text: str) -> Any:
    return YAML(typ="safe", pure=False).load(text)


def same(a: Any, b: Any) -> bool:
    """Equal, types included (True is not 1), NaN equal to NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


def check(text: str) -> None:
    try:
        ours = yaml12.load(text)
    except yaml12.Unread:
        return  # ruamel decides, as before
    try:
        theirs = ruamel(text)
    except (ScannerError, ParserError):
        return  # libyaml 0.2.5's grammar: `[1:30]` is YAML 1.2, ruamel's older scanner refuses it
    except (YAMLError, ValueError, IndexError, TypeError) as exc:
        pytest.fail(f"{text!r}: read as {ours!r}, ruamel refuses it ({exc})")
    assert same(ours, theirs), f"{text!r}: {ours!r} here, ruamel {theirs!r}"


@pytest.mark.parametrize("scalar", SCALARS)
def test_each_scalar_reads_as_ruamel_reads_it(scalar: str) -> None:
    check(f"key: {scalar}\n")
    check(f"- {scalar}\n- [{scalar}]\n")


@pytest.mark.parametrize(
    "text",
    [
        "a: 1\na: 2\n",
        "base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  y: 3\n",
        "<<: [{a: 1}, {a: 2, b: 3}]\nc: 4\n",
        "%YAML 1.1\n---\nflag: yes\n",
        "1: one\n1.0: float one\n",
        "? [a, b]\n: c\n",
        "a: 1\n---\nb: 2\n",
        "",
        "# only a comment\n",
        "name: app\nsmoke: {commands: [{name: ok, run: ['true']}]}\n",
    ],
)
def test_structures_read_as_ruamel_reads_them(text: str) -> None:
    check(text)


def test_what_it_leaves_to_ruamel() -> None:
    """Each of these changes meaning between readers or versions: ruamel decides."""
    for text in ["a: 1\na: 2\n", "%YAML 1.1\n---\na: yes\n", "a: 2001-12-14\n", "a: =\n"]:
        with pytest.raises(yaml12.Unread):
            yaml12.load(text)


parts = st.one_of(
    st.sampled_from([*SCALARS, ": ", "- ", "\n", "\n  ", "{", "}", "[", "]", ", ", "a", "b"]),
    st.text(max_size=6),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(parts, max_size=25).map("".join))
def test_generated_text_reads_as_ruamel_reads_it(text: str) -> None:
    check(text)
