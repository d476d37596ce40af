"""Bounded reading of input files: a size cap, strict UTF-8, and YAML alias and depth limits.

Every file heps reads from a repository, a report or a server is read through here, so a
hostile or broken file costs a bounded amount of memory and time and ends as one
ConfigError line naming the file, never a hang, a traceback or a segfault. The YAML
check walks libyaml's event stream, which is iterative (no recursion, whatever the
nesting) and builds no objects, before any loader constructs anything: an alias bomb
(a few lines whose aliases expand to billions of nodes) is refused by counting what the
aliases would expand to.

The same walk refuses what readers disagree on, because heps checks a file that another
program (kustomize, container-structure-test: Go's YAML) then reads: a mapping key must be
a plain string, the same in YAML 1.1 and 1.2 (no `!!binary`, number, boolean, null, date,
alias or collection as a key; the merge key `<<` only as a mapping's first key, where they
all read it alike); only the core
schema's tags are allowed (not `!!binary`, `!!set`, `!!timestamp` or local tags); an
integer is at most MAX_INTEGER_CHARS long (Python refuses to read longer ones).
"""

from __future__ import annotations

import functools
import os
import stat
from pathlib import Path

import yaml

from heps.core import yaml12
from heps.core.errors import ConfigError

MAX_BYTES = 4 << 20
"""Largest input file read (4 MiB): recipes, settings, overlays, reports, Dockerfiles."""
MAX_DEPTH = 64
"""Deepest YAML nesting accepted; Kubernetes objects nest about 15 levels."""
MAX_NODES = 200_000
"""Most YAML nodes a file may expand to, counting every alias as a copy of its anchor."""

MAX_INTEGER_CHARS = 64
"""Longest integer accepted, sign included; a 64-bit integer has at most 20 characters."""

_Parser = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_CORE = "tag:yaml.org,2002:"
_TAGS = frozenset(_CORE + t for t in ("str", "int", "float", "bool", "null", "seq", "map"))
"""Explicit tags every reader resolves alike (the core schema's); any other is refused."""
_STR = _CORE + "str"
_YAML11 = yaml.resolver.Resolver()
_GO_BOOLEANS = frozenset(("y", "Y", "n", "N"))  # booleans of Go's yaml.v2, strings elsewhere


@functools.lru_cache(maxsize=4096)  # keys repeat across files: `name`, `image`, ...
def _resolved(plain: str) -> frozenset[str]:
    """The tags YAML 1.1 (PyYAML, Go's yaml.v2) and 1.2 (ruamel, yaml.v3) give a plain scalar."""
    as_11 = _YAML11.resolve(yaml.ScalarNode, plain, (True, False))  # type: ignore[no-untyped-call]
    tags = {str(as_11), yaml12.resolve(plain)}
    return frozenset(tags | {_CORE + "bool"} if plain in _GO_BOOLEANS else tags)


_OPEN = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_CLOSE = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


def read_bytes(path: Path, display: str, limit: int = MAX_BYTES) -> bytes:
    """The file's bytes; ConfigError when it cannot be read, is not a regular file (a
    folder, a FIFO that would block, a device that never ends) or exceeds `limit`."""
    try:  # opened without blocking, then checked for what it is before anything is read
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        raise ConfigError(f"{display}: cannot read: {exc.strerror}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        what = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        raise ConfigError(
            f"{display}: {what}; heps reads it as a file: replace it with one (or remove it)"
        )
    with open(fd, "rb") as handle:
        try:
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
    MAX_NODES, a key is not a plain string, a tag is not the core schema's, an integer is
    longer than MAX_INTEGER_CHARS, or libyaml cannot parse it (it stops at 1,000 levels of
    flow nesting, where recursive loaders would overflow the stack)."""
    sizes: list[int] = [0]  # nodes counted so far in each open collection, outermost first
    anchors: dict[str, int] = {}
    opened: list[str | None] = []
    keyed: list[bool | None] = [None]  # per open collection: a mapping's next node is a key
    parser = _Parser(text)
    try:  # event by event from the parser itself: this loop runs for every file read
        while (event := parser.get_event()) is not None:
            kind = type(event)
            if kind is yaml.ScalarEvent or kind is yaml.AliasEvent or kind in _OPEN:
                if keyed[-1]:
                    _check_key(display, event, first=sizes[-1] == 1)  # nothing in it yet
                if keyed[-1] is not None:
                    keyed[-1] = not keyed[-1]
                if kind is not yaml.AliasEvent and event.tag is not None:
                    _check_tag(display, event)
            if kind is yaml.ScalarEvent:
                if len(event.value) > MAX_INTEGER_CHARS:
                    _check_integer(display, event)
                size, anchor = 1, event.anchor
            elif kind in _OPEN:
                if len(opened) >= MAX_DEPTH:
                    _refuse(display, event, f"nests deeper than {MAX_DEPTH} levels; flatten it")
                opened.append(event.anchor)
                keyed.append(True if kind is yaml.MappingStartEvent else None)
                sizes.append(1)
                continue
            elif kind in _CLOSE:
                size = sizes.pop()
                anchor = opened.pop()
                keyed.pop()
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


def _check_key(display: str, event: yaml.Event, first: bool) -> None:
    """A mapping key must be a string that every reader reads as the same string, and a
    merge key `<<` the mapping's first: Go's yaml.v2 (kustomize reading a kustomization)
    lets a later `<<` overwrite the keys written before it, where YAML's rule and every
    other reader keep them."""
    if isinstance(event, yaml.AliasEvent):
        _refuse(display, event, f"key *{event.anchor}: an alias as a key; write the key out")
    if not isinstance(event, yaml.ScalarEvent):
        _refuse(display, event, "key: a mapping or list as a key; keys are plain strings")
    assert isinstance(event, yaml.ScalarEvent)
    shown = event.value[:40]
    if event.tag not in (None, _STR):
        _refuse(
            display,
            event,
            f"key {shown!r}: tagged {_short(event.tag)}; keys are plain strings, other readers "
            "(kustomize, container-structure-test) read it differently: write it as text",
        )
    if event.tag is None and event.implicit[0]:  # plain: resolved by its text
        tags = _resolved(event.value)
        read = tags - {_STR, _CORE + "merge"}  # `<<` merges in each reader
        if _CORE + "merge" in tags and not first:
            _refuse(
                display,
                event,
                "merge key '<<' after other keys: readers differ on which value wins; "
                "write '<<' first in its mapping",
            )
        if read:
            what = " or ".join(sorted(_KINDS.get(t, t) for t in read))
            _refuse(
                display,
                event,
                f"key {shown!r}: {what} to some YAML readers, not a string; quote it",
            )


def _check_tag(display: str, event: yaml.Event) -> None:
    tag = event.tag  # type: ignore[attr-defined]
    if tag not in _TAGS:
        _refuse(
            display,
            event,
            f"tag {_short(tag)}: not allowed (readers differ on it); write the value as plain "
            "text, a number, a list or a mapping",
        )


_KINDS = {_CORE + "bool": "a boolean", _CORE + "int": "an integer", _CORE + "float": "a number"}
_KINDS |= {_CORE + "null": "null", _CORE + "timestamp": "a date", _CORE + "value": "a value key"}


def _short(tag: str) -> str:
    return "!!" + tag.removeprefix(_CORE) if tag.startswith(_CORE) else tag


def _check_integer(display: str, event: yaml.ScalarEvent) -> None:
    """A long plain scalar that reads as an integer (YAML 1.1 or 1.2) is refused."""
    if event.tag not in (None, _CORE + "int") or (event.tag is None and not event.implicit[0]):
        return
    if event.tag or _CORE + "int" in _resolved(event.value):
        _refuse(
            display,
            event,
            f"integer of {len(event.value)} characters (at most {MAX_INTEGER_CHARS}); "
            "write a smaller number, or quote it if it is text",
        )


def _refuse(display: str, event: yaml.Event, problem: str) -> None:
    mark = event.start_mark
    where = f"{display}:{mark.line + 1}" if mark is not None else display
    raise ConfigError(f"{where}: YAML {problem}")
