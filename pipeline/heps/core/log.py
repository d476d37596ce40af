"""Phase-tagged, secret-free output.

Every line names the phase that wrote it (``[build] ct-reconstruction: ...``), as
repo2docker does, so a CI log can be grepped by stage. Secret values registered with
`register_secret` are replaced by ``***`` in every line, report and error message.
"""

from __future__ import annotations

import logging
import sys
import threading

_secrets: set[str] = set()
_lock = threading.Lock()
MASK = "***"

logger = logging.getLogger("heps")


def register_secret(value: str | None) -> None:
    """Mask `value` wherever it would be printed from now on."""
    if value and len(value) >= 3:  # masking 1-2 chars would garble ordinary text
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


class _RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def setup(verbose: bool = False) -> None:
    """Plain lines on stderr: readable on a terminal, unmangled in CI logs."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_RedactingFormatter("%(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


def phase(name: str, recipe: str | None, message: str, level: int = logging.INFO) -> None:
    """Log one line tagged with its phase and, where there is one, the recipe."""
    who = f"{recipe}: " if recipe else ""
    logger.log(level, "[%s] %s%s", name, who, message)
