"""Phase-tagged, secret-free, terminal-safe output.

Every line names the phase that wrote it (``[build] ct-reconstruction: ...``), as
repo2docker does, so a CI log can be grepped by stage. What is shown to people passes
through a `Masker` made from the run's credentials (no process-wide list of secrets):
- data, before it is serialized (`Masker.mask`: reports, review, rendered diffs), so JSON
  or YAML escaping cannot hide a password containing quotes, backslashes or non-ASCII;
- text (`Masker.redact`), in the forms a secret takes once encoded (JSON-escaped,
  URL-encoded, XML-escaped), and every ``scheme://user:password@`` of a URL, whole;
- the process's stdout and stderr and the log (`guarded_output`, `setup`), which also
  escape control characters, so a recipe folder name or a server's answer cannot drive
  the terminal.
Masking touches output only: data written to files (job XML, manifests, commits, the
report's image fields) never passes through here, so it is never rewritten. A secret
that would mask ordinary text is refused before a command starts
(`heps.core.credentials.masker`).
"""

from __future__ import annotations

import html
import io
import json
import logging
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TextIO, TypeVar
from urllib.parse import quote

from heps.core.stages import Stage

MASK = "***"
T = TypeVar("T")

logger = logging.getLogger("heps")

# The whole user-info of a URL: greedy to its last @ (one in a password too); with or
# without a colon, as tools echo a URL they cut at the first @ (`http://rest-of-pw@host`).
_URL_PASSWORD = re.compile(r"(\w[\w+.-]*://)[^/\s]+@")
# C0/C1 controls (ESC starts terminal sequences) but newline and tab; bidi overrides,
# isolates and marks; zero-width and other invisible format characters (text a reader
# cannot see, or that reorders what she sees); lone surrogates (a file name that is not
# UTF-8, as Python decodes it), which no UTF-8 output can hold.
_CONTROL = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ud800-\udfff]"
)
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


def redact_urls(text: str) -> str:
    """`text` with the user-info of every URL masked: for messages made where the run's
    secrets are not known (an exception's text, a tool's answer)."""
    return _URL_PASSWORD.sub(rf"\1{MASK}@", text)


@dataclass(frozen=True)
class Masker:
    """Masks one run's secrets in what is shown to people; made once, from the run's
    credentials, and handed to what prints. `Masker()` masks URL passwords only."""

    forms: tuple[str, ...] = ()
    """Every encoded form of every secret, longest first (a form containing another is
    masked whole)."""

    @classmethod
    def of(cls, secrets: Iterable[str]) -> Masker:
        found = {form for secret in secrets if secret for form in _forms(secret)}
        return cls(tuple(sorted(found, key=len, reverse=True)))

    def redact(self, text: str) -> str:
        """`text` with every secret (in any encoded form) and URL password masked."""
        text = redact_urls(text)
        for form in self.forms:
            text = text.replace(form, MASK)
        return text

    def mask(self, data: T) -> T:
        """A copy of plain data (dicts, lists, tuples, strings) with every string
        redacted: masking before serialization, whatever escaping the serializer applies."""
        return map_strings(data, self.redact)


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


def xml_text(text: str) -> str:
    """`text` with what XML 1.0 cannot hold shown as an escape instead (nothing masked)."""
    return _NOT_XML.sub(lambda m: ascii(m.group())[1:-1], text)


class _Guarded(io.TextIOBase):
    """A text stream that masks secrets and escapes control characters on the way out."""

    def __init__(self, stream: TextIO, masker: Masker) -> None:
        # Guarding a guarded stream replaces its masker rather than stacking both.
        self.stream: TextIO = stream.stream if isinstance(stream, _Guarded) else stream
        self.masker = masker

    def write(self, text: str) -> int:
        self.stream.write(printable(self.masker.redact(text)))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()


@contextmanager
def guarded_output(masker: Masker) -> Iterator[None]:
    """stdout and stderr masked by `masker` and terminal-safe while the block runs."""
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Guarded(out, masker), _Guarded(err, masker)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = out, err


class _RedactingFormatter(logging.Formatter):
    def __init__(self, masker: Masker) -> None:
        super().__init__("%(message)s")
        self.masker = masker

    def format(self, record: logging.LogRecord) -> str:
        return printable(self.masker.redact(super().format(record)))


def setup(masker: Masker, verbose: bool = False) -> None:
    """Plain lines on stderr, masked by `masker`: readable on a terminal, unmangled in CI
    logs."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_RedactingFormatter(masker))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


def phase(name: Stage, recipe: str | None, message: str, level: int = logging.INFO) -> None:
    """Log one line tagged with its phase and, where there is one, the recipe."""
    who = f"{recipe}: " if recipe else ""
    logger.log(level, "[%s] %s%s", name, who, message)
