"""Load YAML with line numbers and turn JSON Schema errors into one actionable line each.

Every line reads ``FILE:LINE: FIELD: PROBLEM; FIX`` so an editor or a CI log can jump
to it. The fix comes from the schema's own ``description`` of the field, so the schema
that editors validate against and the messages the pipeline prints cannot drift apart.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heps.core import yaml12
from heps.core.bounded import check_yaml, read_text
from heps.core.errors import ConfigError

if TYPE_CHECKING:  # imported where used: a valid file needs neither
    import jsonschema
    from ruamel.yaml.error import MarkedYAMLError


@cache
def schema(name: str) -> dict[str, Any]:
    """A published schema from `heps/schemas/` (``recipe``, ``settings``)."""
    text = resources.files("heps").joinpath(f"schemas/{name}.schema.json").read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def _finite_number(checker: Any, instance: Any) -> bool:
    """JSON has no NaN or infinity, YAML has (`.nan`, `.inf`): a schema's `number` is a
    finite one, so `exclusiveMinimum: 0` cannot be passed by NaN (every comparison with
    NaN is false) and no timeout, size or count is infinite, in every file at once."""
    if isinstance(instance, float):
        return math.isfinite(instance)
    return isinstance(instance, int) and not isinstance(instance, bool)


def _integer(checker: Any, instance: Any) -> bool:
    """An integer is written as one: `2.0` is refused where a count or port is asked."""
    return isinstance(instance, int) and not isinstance(instance, bool)


@cache
def _validator(name: str) -> Any:
    import jsonschema

    finite = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
        jsonschema.Draft202012Validator,
        type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many(
            {"number": _finite_number, "integer": _integer}
        ),
    )
    return finite(schema(name))


# Keywords that mean the same in draft 7, which fastjsonschema compiles, and in 2020-12.
_DRAFT7_ALIKE = frozenset(
    {"$id", "$schema", "title", "description", "type", "properties", "required"}
    | {"additionalProperties", "items", "anyOf", "not", "enum", "pattern", "minLength"}
    | {"minItems", "minimum", "maximum", "exclusiveMinimum", "format"}
)


def _draft7_alike(node: Any) -> bool:
    if not isinstance(node, dict):
        return True
    if set(node) - _DRAFT7_ALIKE:
        return False
    if "enum" in node and not all(isinstance(v, str) for v in node["enum"]):
        return False  # fastjsonschema's `in` takes True for 1
    if isinstance(node.get("items"), list):
        return False  # a tuple in draft 7, prefixItems' job in 2020-12
    children = [*node.get("properties", {}).values(), *node.get("anyOf", [])]
    children += [node.get(k) for k in ("additionalProperties", "items", "not")]
    return all(_draft7_alike(child) for child in children)


@cache
def _compiled(name: str) -> Callable[[Any], Any] | None:
    """A compiled check of the named schema (fastjsonschema: 500 recipes in milliseconds)
    when every keyword it uses means the same in both drafts; None otherwise."""
    root = schema(name)
    if not _draft7_alike(root):
        return None
    import fastjsonschema

    draft7 = {**_annotations_dropped(root), "$schema": "http://json-schema.org/draft-07/schema#"}
    check: Callable[[Any], Any] = fastjsonschema.compile(draft7)
    return check


def _annotations_dropped(node: Any) -> Any:
    """The schema without `format`: jsonschema, given no format checker, reads it as an
    annotation (`repository-path` is checked by `confine`), fastjsonschema would assert it."""
    if isinstance(node, dict):
        return {
            k: _annotations_dropped(v)
            for k, v in node.items()
            if not (k == "format" and isinstance(v, str))
        }
    if isinstance(node, list):
        return [_annotations_dropped(v) for v in node]
    return node


def _has_float(data: Any) -> bool:
    """Floats (2.0 as an integer, NaN as a number) are where validators differ: those
    files are left to jsonschema."""
    if isinstance(data, float):
        return True
    if isinstance(data, dict):
        return any(_has_float(v) for v in data.values())
    if isinstance(data, list):
        return any(_has_float(v) for v in data)
    return False


def _valid(data: Any, name: str) -> bool:
    """True when the compiled check passes `data`; False means jsonschema decides."""
    compiled = _compiled(name)
    if compiled is None or _has_float(data):
        return False
    import fastjsonschema

    try:
        compiled(data)
    except fastjsonschema.JsonSchemaException:
        return False
    return True


def load_yaml(path: Path, display: str) -> Any:
    """Parse one YAML file into plain data; a syntax error is a ConfigError with the line.

    The file is size-capped, strictly UTF-8 and checked for alias bombs and deep nesting
    first (`heps.core.bounded`). libyaml with YAML 1.2's rules (`heps.core.yaml12`) reads
    what it can decide exactly as ruamel's safe loader would; ruamel reads the rest, and
    its round-trip loader, which knows every key's line, runs only to report errors.
    """
    return load_yaml_text(read_text(path, display), display)


def load_yaml_text(text: str, display: str) -> Any:
    """`load_yaml` of a file's text, read already."""
    check_yaml(text, display)  # before any loader builds objects: alias bombs, deep nesting
    try:
        return yaml12.load(text)
    except yaml12.Unread:
        pass  # ruamel decides: values and messages stay what they were
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError

    try:
        return YAML(typ="safe", pure=False).load(text)
    except MarkedYAMLError as exc:
        _load_with_lines(text, display)  # raises, with the line of a syntax problem
        raise _syntax_error(exc, display) from None  # what only the safe loader refuses (tags)


def _syntax_error(exc: MarkedYAMLError, display: str) -> ConfigError:
    mark = exc.problem_mark
    line = f":{mark.line + 1}" if mark is not None else ""
    return ConfigError(
        f"{display}{line}: YAML syntax error: {exc.problem}; fix the indentation or quoting"
    )


def _load_with_lines(text: str, display: str) -> Any:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError

    try:
        return YAML(typ="rt", pure=True).load(text)
    except MarkedYAMLError as exc:
        raise _syntax_error(exc, display) from None


def _line_of(doc: Any, path: Iterable[Any]) -> int | None:
    """1-based line of the deepest key or item of `path` found in a ruamel document."""
    line: int | None = None
    node = doc
    for part in path:
        lc = getattr(node, "lc", None)
        try:
            if lc is not None:
                line = (lc.key(part) if isinstance(part, str) else lc.item(part))[0] + 1
            node = node[part]
        except (KeyError, IndexError, TypeError, AttributeError):
            break
    if line is None and getattr(doc, "lc", None) is not None:
        line = doc.lc.line + 1
    return line


def _subschema(root: dict[str, Any], path: Iterable[Any]) -> dict[str, Any]:
    node = root
    for part in path:
        props = node.get("properties", {})
        if isinstance(part, str) and part in props:
            node = props[part]
        elif isinstance(part, int) and "items" in node:
            node = node["items"]
        elif isinstance(part, str) and isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return {}
        if "$ref" in node:
            node = root["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def _describe(error: jsonschema.ValidationError, root: dict[str, Any]) -> tuple[str, str]:
    """(problem, fix) for one schema error."""
    here = _subschema(root, error.absolute_path)
    hint = here.get("description", "")
    if error.validator == "additionalProperties":
        allowed = ", ".join(sorted(here.get("properties", {})))
        return "unknown key", f"remove it or use one of: {allowed}"
    if error.validator == "required":
        missing = str(error.message).split("'")[1]
        need = _subschema(root, [*error.absolute_path, missing]).get("description", "")
        return f"missing field '{missing}'", f"add it ({need})" if need else "add it"
    if (
        error.validator == "type"
        and isinstance(error.instance, float)
        and not math.isfinite(error.instance)
    ):
        return f"{error.instance!r} is not a finite number", hint or "write a number"
    if error.validator == "type":
        got = type(error.instance).__name__
        return f"expected {error.validator_value}, got {got} {error.instance!r}", (
            hint or "quote strings that look like numbers"
        )
    if error.validator == "anyOf":
        return "no alternative given", hint
    if error.validator == "not":
        return "build and bootstrap exclude each other", "keep only one of them"
    return str(error.message), hint or "see the schema"


def validate(data: Any, schema_name: str, path: Path, display: str) -> list[str]:
    """Every problem of `data` (loaded from `path`) against the named schema, one line each,
    sorted by line."""
    if _valid(data, schema_name):
        return []
    validator = _validator(schema_name)
    if validator.is_valid(data):
        return []
    root = schema(schema_name)
    doc = _load_with_lines(read_text(path, display), display)
    found: list[tuple[int, str]] = []
    for error in validator.iter_errors(doc):
        problem, fix = _describe(error, root)
        paths = [list(error.absolute_path)]
        if error.validator == "additionalProperties":  # one line per unknown key, at that key
            known = _subschema(root, error.absolute_path).get("properties", {})
            paths = [[*error.absolute_path, k] for k in sorted(set(error.instance) - set(known))]
        for key_path in paths:
            field = ".".join(str(p) for p in key_path) or "(top level)"
            line = _line_of(doc, key_path)
            where = f"{display}:{line}" if line else display
            found.append((line or 0, f"{where}: {field}: {problem}; {fix}".rstrip("; ")))
    return [text for _, text in sorted(found)]
