"""Kubernetes resource quantities (`4`, `500m`, `16Gi`, `1.5e3`), parsed by the API
server's grammar, bounded, and written back in one canonical form every reader parses.

The grammar (k8s.io/apimachinery resource.Quantity): a signed decimal number, then a
binary suffix (Ki Mi Gi Ti Pi Ei), a decimal suffix (m, none, k M G T P E) or a decimal
exponent (e3, E-2). Values are exact decimals, never floats, so `0.00001` is not
silently `1e-05` and a bound is never missed by rounding.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

_GRAMMAR = re.compile(
    r"(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?:(?P<binary>Ki|Mi|Gi|Ti|Pi|Ei)|(?P<exponent>[eE][+-]?[0-9]{1,3})|(?P<decimal>[mkMGTPE]?))"
)
_BINARY = {s: Decimal(1024) ** (i + 1) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))}
_DECIMAL = {"m": Decimal("0.001"), "": Decimal(1), "k": Decimal(10) ** 3, "M": Decimal(10) ** 6}
_DECIMAL |= {"G": Decimal(10) ** 9, "T": Decimal(10) ** 12, "P": Decimal(10) ** 15}
_DECIMAL |= {"E": Decimal(10) ** 18}
MILLI = Decimal("0.001")
MIN_MEMORY = 64 * 1024**2
"""64Mi: below that no session starts, and `0` would mean no limit at all."""


class QuantityError(ValueError):
    """Not a quantity, or out of bounds; the message is the problem and its fix."""


def parse(value: object) -> Decimal:
    """The exact value of a quantity given as YAML text or number; QuantityError if it is
    not one (NaN, infinity, booleans and stray text included)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise QuantityError(f"{value!r} is not a quantity; write e.g. 4, 500m or 16Gi")
    if isinstance(value, float) and not math.isfinite(value):
        raise _bad(value)
    if isinstance(value, int) and value.bit_length() > 128:  # str() of it may not even end
        raise QuantityError(f"a {value.bit_length()}-bit number is not a quantity; write e.g. 4")
    text = repr(value) if isinstance(value, float) else str(value).strip()  # 1e-05 is a form
    match = _GRAMMAR.fullmatch(text) if len(text) <= 64 else None
    if match is None:
        raise _bad(value)
    number = Decimal(match["number"])
    if match["binary"]:
        return number * _BINARY[match["binary"]]
    if match["exponent"]:
        return number.scaleb(int(match["exponent"][1:]))
    return number * _DECIMAL[match["decimal"]]


def _bad(value: object) -> QuantityError:
    return QuantityError(
        f"{value!r} is not a Kubernetes quantity; write e.g. 4, 500m, 16Gi (a number, then "
        "Ki Mi Gi Ti, m k M G T, or an exponent)"
    )


def cpu(value: object, largest: Decimal) -> Decimal:
    """CPU cores: more than 0, whole millicores (the API refuses finer), at most `largest`."""
    cores = parse(value)
    if cores <= 0:
        raise QuantityError(f"{value!r} cores: must be more than 0")
    if cores > largest:  # bounded before any arithmetic: `1e400 % 0.001` has no answer
        raise QuantityError(
            f"{value!r} cores: more than the largest node's {canonical_cpu(largest)}"
        )
    if cores % MILLI:
        raise QuantityError(f"{value!r} cores: finer than 1m (0.001), which Kubernetes refuses")
    return cores


def memory(value: object, largest: Decimal) -> Decimal:
    """Bytes: whole, at least 64Mi, at most `largest`."""
    size = parse(value)
    if size < MIN_MEMORY:
        raise QuantityError(f"{value!r}: less than 64Mi (0 would mean no limit at all)")
    if size > largest:  # bounded before any arithmetic, as for cpu
        raise QuantityError(f"{value!r}: more than the largest node's {canonical_memory(largest)}")
    if size % 1:
        raise QuantityError(f"{value!r}: not a whole number of bytes")
    return size


def canonical_cpu(cores: Decimal) -> str:
    """`4`, `0.5`, `0.001`: plain decimal notation, never an exponent."""
    return format(cores.normalize(), "f")


def canonical_memory(size: Decimal) -> str:
    """The largest binary suffix that divides exactly (`16Gi`), else whole bytes."""
    for suffix, factor in reversed(_BINARY.items()):
        if size % factor == 0:
            return f"{int(size // factor)}{suffix}"
    return str(int(size))
