"""Bounded reading of input files: a size cap, strict UTF-8, and YAML alias and depth limits.

Every file heps reads from a repository, a report or a server is read through here, so a
hostile or broken file costs a bounded amount of memory and time and ends as one
ConfigError line naming the file, never a hang, a traceback or a segfault. The YAML
check walks libyaml's event stream, which is iterative (no recursion, whatever the
nesting) and builds no objects, before any loader constructs anything: an alias bomb
(a few lines whose aliases expand to billions of nodes) is refused by counting what the
aliases would expand to.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from heps.core.errors import ConfigError

MAX_BYTES = 4 << 20
"""Largest input file read (4 MiB): recipes, settings, overlays, reports, Dockerfiles."""
MAX_DEPTH = 64
"""Deepest YAML nesting accepted; Kubernetes objects nest about 15 levels."""
MAX_NODES = 200_000
"""Most YAML nodes a file may expand to, counting every alias as a copy of its anchor."""

_Parser = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_OPEN = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_CLOSE = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


def read_bytes(path: Path, display: str, limit: int = MAX_BYTES) -> bytes:
    """The file's bytes; ConfigError when it cannot be read or exceeds `limit`."""
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise ConfigError(f"{display}: cannot read: {exc.strerror}") from None
    if len(data) > limit:
        raise ConfigError(
            f"{display}: larger than {limit // 1024} KiB; this is not a file heps reads, "
            "check that the path is right"
        )
    return data


def decode(data: bytes, display: str) -> str:
    """`data` as UTF-8; ConfigError naming the file and the first bad byte otherwise."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{display}:{line}: not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "save the file as UTF-8"
        ) from None


def read_text(path: Path, display: str, limit: int = MAX_BYTES) -> str:
    """A text file, size-capped and strictly UTF-8."""
    return decode(read_bytes(path, display, limit), display)


def check_yaml(text: str, display: str) -> None:
    """ConfigError when `text` nests deeper than MAX_DEPTH or its aliases expand past
    MAX_NODES, or libyaml cannot parse it (it stops at 1,000 levels of flow nesting,
    where recursive loaders would overflow the stack)."""
    sizes: list[int] = [0]  # nodes counted so far in each open collection, outermost first
    anchors: dict[str, int] = {}
    opened: list[str | None] = []
    parser = _Parser(text)
    try:  # event by event from the parser itself: this loop runs for every file read
        while (event := parser.get_event()) is not None:
            kind = type(event)
            if kind is yaml.ScalarEvent:
                size, anchor = 1, event.anchor
            elif kind in _OPEN:
                if len(opened) >= MAX_DEPTH:
                    _refuse(display, event, f"nests deeper than {MAX_DEPTH} levels; flatten it")
                opened.append(event.anchor)
                sizes.append(1)
                continue
            elif kind in _CLOSE:
                size = sizes.pop()
                anchor = opened.pop()
            elif kind is yaml.AliasEvent:
                size, anchor = anchors.get(event.anchor or "", 1), None
            else:
                continue
            if anchor:
                anchors[anchor] = size
            sizes[-1] += size
            if sizes[-1] > MAX_NODES:
                _refuse(
                    display,
                    event,
                    f"expands to more than {MAX_NODES} nodes through its aliases; "
                    "write the values out instead of repeating anchors",
                )
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{display}:{mark.line + 1}" if mark is not None else display
        raise ConfigError(
            f"{where}: YAML syntax error: {exc.problem}; fix the indentation or quoting"
        ) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow in a file
        line = text[: exc.position].count("\n") + 1
        raise ConfigError(
            f"{display}:{line}: YAML cannot hold character {exc.character!r}; remove it "
            "or write it as an escape in a double-quoted string"
        ) from None
    finally:
        parser.dispose()


def _refuse(display: str, event: yaml.Event, problem: str) -> None:
    mark = event.start_mark
    where = f"{display}:{mark.line + 1}" if mark is not None else display
    raise ConfigError(f"{where}: YAML {problem}")
