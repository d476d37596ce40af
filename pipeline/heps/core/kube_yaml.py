"""Kubernetes YAML composed with positions: where image fields are, and surgical edits.

libyaml (PyYAML's C composer) gives every node with its start and end marks; `Document`
replaces exactly a scalar's characters in the original text, so every other line stays
byte-identical (nothing is dumped back). Shared by pinning (gitops) and by the policy
checks on rendered overlays (cluster).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from heps.core.bounded import check_yaml
from heps.core.errors import ConfigError

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

POD_PATHS = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")


class PinError(ConfigError):
    """A file that cannot be pinned safely (unreadable YAML, unpinnable field): one line
    naming it, exit 2 where no stage turns it into a stage failure."""


# Reading the composed node tree: mappings are lists of (key node, value node) pairs.


def get(node: Any, key: str) -> Any:
    """The value node of `key` in a mapping node, or None."""
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return v
    return None


def get_path(node: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        node = get(node, key)
    return node


def text_of(node: Any) -> str | None:
    """A scalar node's string value, or None for anything else."""
    return node.value if isinstance(node, yaml.ScalarNode) else None


def items(node: Any) -> list[Any]:
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _quoted(old: str, new: str) -> str:
    """The new value written the way the old one was: same quote style."""
    if old.startswith("'"):
        return "'" + new.replace("'", "''") + "'"
    if old.startswith('"'):
        return json.dumps(new)
    return new


_PROPERTIES = re.compile(r"(?:[&!]\S*\s+)*")  # an anchor or tag before the scalar itself


@dataclass(frozen=True)
class Place:
    """Where a scalar's characters are on its line (0-based), or why it cannot be pinned:
    plain data, so what a file's composed nodes said can be kept and used without them."""

    line: int
    col: int = 0
    end: int = 0
    problem: str = ""


class Text:
    """One file's text and edits to it, by position: nothing else of it changes."""

    def __init__(self, text: str, name: str):
        self.text, self.name = text, name
        self.lines = text.splitlines(keepends=True)
        self.edits: dict[tuple[int, int], tuple[int, str]] = {}
        self.inserts: list[tuple[int, str]] = []

    def replace_at(self, place: Place, value: str) -> None:
        """The scalar at `place` becomes `value`, written the way it was (same quotes)."""
        if place.problem:
            raise PinError(f"{self.name}:{place.line + 1}: {place.problem}")
        line, col, end = place.line, place.col, place.end
        new = _quoted(self.lines[line][col:end], value)
        if col == end and self.lines[line][col - 1 : col] in (":", "-"):
            new = " " + new  # an empty value is marked right after its `key:`
        self.edits[(line, col)] = (end, new)

    def insert_after(self, line: int, text: str) -> None:
        self.inserts.append((line, text))

    def moved(self, place: Place) -> Place:
        """Where the scalar at `place` stands in the rendered text: moved along its line by
        the edits left of it, or the new value itself. Only when no line is inserted."""
        line = place.line
        shift = sum(
            len(new) - (end - col)
            for (at, col), (end, new) in self.edits.items()
            if at == line and col < place.col
        )
        start = place.col + shift
        if (line, place.col) not in self.edits:
            return Place(line, start, place.end + shift, place.problem)
        _, new = self.edits[(line, place.col)]
        lead = 1 if place.col == place.end and new.startswith(" ") else 0  # `key:` + " value"
        return Place(line, start + lead, start + len(new))

    def rendered(self) -> str:
        lines = list(self.lines)
        for (line, col), (end, value) in sorted(self.edits.items(), reverse=True):
            lines[line] = lines[line][:col] + value + lines[line][end:]
        after: dict[int, str] = {}
        for line, text in self.inserts:  # several after one line keep their order
            after[line] = after.get(line, "") + text
        for line, text in sorted(after.items(), reverse=True):
            if line >= 0 and not lines[line].endswith("\n"):
                lines[line] += "\n"
            lines.insert(line + 1, text)
        return "".join(lines)


class Document(Text):
    """One YAML file: its text, its composed documents, and pending edits."""

    def __init__(self, text: str, name: str):
        super().__init__(text, name)
        try:
            check_yaml(text, name)  # the composer below recurses: bound the nesting first
        except ConfigError as exc:
            raise PinError(exc.problems) from None
        try:
            self.docs = [d for d in yaml.compose_all(text, Loader=_Loader) if d is not None]
        except yaml.YAMLError as exc:
            raise PinError(f"{name}: not valid YAML: {str(exc).splitlines()[0]}") from None

    def place(self, node: Any) -> Place:
        """Where a one-line scalar's characters are, past its anchor or tag.

        An alias is the same node as its anchor, so it is edited where the anchor stands."""
        start, end = node.start_mark, node.end_mark
        if not isinstance(node, yaml.ScalarNode) or node.style in ("|", ">"):
            return Place(start.line, problem="an image must be a one-line string")
        if end.line != start.line:
            return Place(start.line, problem="write the image on one line")
        col = _PROPERTIES.match(self.lines[start.line], start.column).end()  # type: ignore[union-attr]
        return Place(start.line, col, end.column)

    def replace(self, node: Any, value: str) -> None:
        self.replace_at(self.place(node), value)


def containers(doc: Any) -> Iterator[Any]:
    """Every container mapping node of a workload document (or of the items of a List)."""
    kind = text_of(get(doc, "kind")) or ""
    if kind.endswith("List"):
        for item in items(get(doc, "items")):
            yield from containers(item)
        return
    path = POD_PATHS.get(kind)
    spec = get_path(doc, path) if path else None
    for listed in CONTAINER_LISTS:
        for container in items(get(spec, listed)):
            if text_of(get(container, "image")) is not None:
                yield container


def is_kustomization(doc: Any) -> bool:
    if text_of(get(doc, "kind")) == "Kustomization":
        return True
    return get(doc, "resources") is not None or get(doc, "images") is not None


def kustomize_entries(doc: Any) -> list[Any]:
    return items(get(doc, "images")) if is_kustomization(doc) else []


def profiles(doc: Any) -> list[Any]:
    return items(get(doc, "profile_list"))


def config_images(node: Any) -> Iterator[Any]:
    """Every scalar under an `image:` key of a settings file (not a Kubernetes object)."""
    if isinstance(node, yaml.MappingNode):
        if get(node, "apiVersion") is not None and get(node, "kind") is not None:
            return
        for key, value in node.value:
            if text_of(key) == "image" and isinstance(value, yaml.ScalarNode):
                yield value
            else:
                yield from config_images(value)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from config_images(item)
