"""Phase-tagged, secret-free, terminal-safe output.

Every line names the phase that wrote it (``[build] ct-reconstruction: ...``), as
repo2docker does, so a CI log can be grepped by stage. Secret values registered with
`register_secret` are replaced by ``***``:
- in data, before it is serialized (`mask`: reports, review, rendered diffs), so JSON or
  YAML escaping cannot hide a password containing quotes, backslashes or non-ASCII;
- in text (`redact`), in the forms a secret takes once encoded (JSON-escaped, URL-encoded,
  XML-escaped), and in every ``scheme://user:password@`` of a URL, whole;
- on the process's stdout and stderr (`guarded_output`), which also escapes control
  characters, so a recipe folder name or a server's answer cannot drive the terminal.
Data written to git (overlays, commit messages) never passes through here: a password
equal to ordinary text ("1.0.0") cannot garble a pin.
"""

from __future__ import annotations

import html
import io
import json
import logging
import re
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO, TypeVar
from urllib.parse import quote

from heps.core.stages import Stage

_secrets: set[str] = set()
_lock = threading.Lock()
MASK = "***"
T = TypeVar("T")

logger = logging.getLogger("heps")

# The whole user-info of a URL: greedy to its last @ (one in a password too); with or
# without a colon, as tools echo a URL they cut at the first @ (`http://rest-of-pw@host`).
_URL_PASSWORD = re.compile(r"(\w[\w+.-]*://)[^/\s]+@")
# C0/C1 controls (ESC starts terminal sequences) but newline and tab; bidi overrides.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
# What XML 1.0 cannot hold at all, even escaped.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _forms(value: str) -> set[str]:
    """`value` and what it becomes once JSON-, URL- or XML-encoded."""
    return {
        value,
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        quote(value, safe=""),
        quote(value),
        html.escape(value),
        html.escape(value, quote=False),
    }


def register_secret(value: str | None) -> None:
    """Mask `value` wherever it would be printed from now on."""
    if value and len(value) >= 3:  # masking 1-2 chars would garble ordinary text
        with _lock:
            _secrets.update(_forms(value))


def redact(text: str) -> str:
    """`text` with every registered secret (in any encoded form) and URL password masked."""
    text = _URL_PASSWORD.sub(rf"\1{MASK}@", text)
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def mask(data: T) -> T:
    """A copy of plain data (dicts, lists, tuples, strings) with every string redacted:
    masking before serialization, whatever escaping the serializer then applies."""
    return map_strings(data, redact)


def map_strings(data: T, change: Callable[[str], str]) -> T:
    """A copy of plain data with `change` applied to every string, keys included."""
    value: Any = data
    if isinstance(value, str):
        return change(value)  # type: ignore[return-value]
    if isinstance(value, dict):
        return {map_strings(k, change): map_strings(v, change) for k, v in value.items()}  # type: ignore[return-value]
    if isinstance(value, list | tuple):
        return type(value)(map_strings(v, change) for v in value)  # type: ignore[return-value]
    return data


def printable(text: str) -> str:
    """Control characters (but newline and tab) shown as escapes, never sent raw."""
    return _CONTROL.sub(lambda m: ascii(m.group())[1:-1], text)


def xml_safe(text: str) -> str:
    """`text` redacted, with what XML 1.0 cannot hold shown as an escape instead."""
    return _NOT_XML.sub(lambda m: ascii(m.group())[1:-1], redact(text))


class _Guarded(io.TextIOBase):
    """A text stream that masks secrets and escapes control characters on the way out."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(printable(redact(text)))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()


@contextmanager
def guarded_output() -> Iterator[None]:
    """stdout and stderr masked and terminal-safe while the block runs."""
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Guarded(out), _Guarded(err)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = out, err


class _RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return printable(redact(super().format(record)))


def setup(verbose: bool = False) -> None:
    """Plain lines on stderr: readable on a terminal, unmangled in CI logs."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_RedactingFormatter("%(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


def phase(name: Stage, recipe: str | None, message: str, level: int = logging.INFO) -> None:
    """Log one line tagged with its phase and, where there is one, the recipe."""
    who = f"{recipe}: " if recipe else ""
    logger.log(level, "[%s] %s%s", name, who, message)
