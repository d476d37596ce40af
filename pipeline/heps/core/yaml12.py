"""YAML read into plain data by libyaml (PyYAML's C parser) with YAML 1.2's rules, as
ruamel's safe loader reads it, at a fraction of its cost: files the pipeline only reads
(500 recipes on every plan) need neither ruamel's pure-Python resolver nor its
round-trip data.

Only the core schema is read here: strings, 1.2 booleans (`yes` stays a string), ints
(`010` is ten, `0o10` is eight), floats, nulls, merge keys, sequences and mappings.
Whatever else a file holds (a `%YAML` directive, a duplicate key, a timestamp, an
explicit `!!set` or `!!binary`, a syntax error) raises `Unread`, and the caller reads
the file with ruamel instead, which stays the reference for values and messages. One
difference is kept: libyaml 0.2.5 reads a few plain scalars inside flow collections
(`[1:30]`, a string in YAML 1.2) that ruamel's older scanner refuses.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    _Base = yaml.CSafeLoader
else:  # PyYAML built without libyaml: the same rules, in Python
    _Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class Unread(Exception):
    """This reader does not decide this text; ruamel's safe loader does."""


# ruamel.yaml's implicit resolvers for YAML 1.2 (resolver.py), first characters and all.
_RESOLVERS = [
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    (
        "float",
        r"""^(?:
         [-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |[-+]?\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        "-+0123456789.",
    ),
    (
        "int",
        r"""^(?:[-+]?0b[0-1_]+
        |[-+]?0o?[0-7_]+
        |[-+]?[0-9_]+
        |[-+]?0x[0-9a-fA-F_]+)$""",
        "-+0123456789",
    ),
    ("merge", r"^(?:<<)$", "<"),
    ("null", r"^(?: ~ |null|Null|NULL | )$", "~nN"),
    (
        "timestamp",
        r"""^(?:[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]
        |[0-9][0-9][0-9][0-9] -[0-9][0-9]? -[0-9][0-9]?
        (?:[Tt]|[ \t]+)[0-9][0-9]?
        :[0-9][0-9] :[0-9][0-9] (?:\.[0-9]*)?
        (?:[ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?)$""",
        "0123456789",
    ),
    ("value", r"^(?:=)$", "="),
]


class _Loader(_Base):
    yaml_implicit_resolvers = {}  # noqa: RUF012 (PyYAML's class-level table: 1.2 only)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """ruamel refuses a key given twice (merged keys aside); so does this reader."""
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool | None) or key in seen:
                raise Unread("a duplicate or composite key")
            seen.add(key)
        return super().construct_mapping(node, deep)


for _tag, _pattern, _first in _RESOLVERS:
    _Loader.add_implicit_resolver(
        f"tag:yaml.org,2002:{_tag}", re.compile(_pattern, re.X), [*_first]
    )
_Loader.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^$"), [""])
_RESOLVER = yaml.resolver.BaseResolver()
_RESOLVER.yaml_implicit_resolvers = _Loader.yaml_implicit_resolvers


def resolve(plain: str) -> str:
    """The tag YAML 1.2 gives a plain (unquoted, untagged) scalar of this text."""
    return str(_RESOLVER.resolve(yaml.ScalarNode, plain, (True, False)))  # type: ignore[no-untyped-call]


def _int(loader: _Loader, node: yaml.ScalarNode) -> int:
    """ruamel's 1.2 int: no octal by a leading zero, no sexagesimal."""
    text = str(loader.construct_scalar(node)).replace("_", "")
    sign = -1 if text[:1] == "-" else 1
    text = text.lstrip("+-") if text[:1] in ("+", "-") else text
    for prefix, base in (("0b", 2), ("0x", 16), ("0o", 8)):
        if text.startswith(prefix):
            return sign * int(text[2:], base)
    return sign * int(text)


def _float(loader: _Loader, node: yaml.ScalarNode) -> float:
    """ruamel's 1.2 float: no sexagesimal."""
    text = str(loader.construct_scalar(node)).replace("_", "").lower()
    sign = -1.0 if text[:1] == "-" else 1.0
    text = text[1:] if text[:1] in ("+", "-") else text
    if text == ".inf":
        return sign * float("inf")
    if text == ".nan":
        return float("nan")
    return sign * float(text)


def _unread(loader: _Loader, node: yaml.Node) -> Any:
    raise Unread(node.tag)


_Loader.add_constructor("tag:yaml.org,2002:int", _int)
_Loader.add_constructor("tag:yaml.org,2002:float", _float)
for _tag in ("timestamp", "value", "set", "omap", "pairs", "binary"):
    _Loader.add_constructor(f"tag:yaml.org,2002:{_tag}", _unread)
_Loader.add_constructor(None, _unread)  # any other tag


def load(text: str) -> Any:
    """The single document of `text` as plain data; Unread when ruamel must decide."""
    if text.startswith("%") or "\n%" in text:  # a directive may change the version
        raise Unread("a directive")
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (a safe loader)
    except Unread:
        raise
    except Exception as exc:  # ruamel reads it again and reports, as it always did
        raise Unread(type(exc).__name__) from None
