"""Kubernetes resource quantities, read by apimachinery's rules. Pure.

kube-apiserver decodes every quantity of a pod into apimachinery's ``resource.Quantity``
and serialises it again in *canonical form* before it calls a webhook: ``3000``
arrives as ``"3k"``, ``10000`` as ``"10k"``, ``1024Mi`` as ``"1Gi"``, ``1.5`` as
``"1500m"``. So a webhook must read quantities exactly as apimachinery does, suffixes
included, and only then apply a resource's unit: HAMi reads ``nvidia.com/gpumem: 3k``
as 3000 MiB, not as 3000 bytes.

The grammar (apimachinery ``pkg/api/resource/quantity.go``)::

    <quantity>        ::= <signedNumber><suffix>
    <signedNumber>    ::= [+-]? (<digits> | <digits>.<digits> | <digits>. | .<digits>)
    <suffix>          ::= <binarySI> | <decimalExponent> | <decimalSI>
    <binarySI>        ::= Ki | Mi | Gi | Ti | Pi | Ei                 (powers of 1024)
    <decimalSI>       ::= n | u | m | "" | k | M | G | T | P | E      (powers of 1000)
    <decimalExponent> ::= e <signedNumber> | E <signedNumber>

As apimachinery does, a non-zero value finer than a nano is rounded up (away from
zero) to the next nano, and a binary-suffixed value is capped at 2^63 - 1. The value is
a :class:`~decimal.Decimal`, exact: no float is involved. :func:`parse` is tested
against the ``kubernetes`` client's ``utils.parse_quantity`` (tests/property).

gpupool's own units sit on top (one rule for GPU memory everywhere, :func:`to_mib`):

- GPU memory is a number of **MiB**: a quantity with a binary suffix is bytes
  (``8Gi`` is 8192 MiB), any other is a count of MiB (``3000`` and its canonical form
  ``3k`` are 3000 MiB, as HAMi reads ``nvidia.com/gpumem``). The configuration file
  accepts a narrower spelling (:func:`parse_memory_mib`): an integer, or a number with
  ``Mi``/``Gi``/``Ti`` (``MiB``/``GiB``/``TiB`` too), never a decimal suffix (``80G``
  would sell 74.5 GiB to someone who meant 80).
- GPU compute is a whole **percent of one card** (``30``, ``"30%"``; ``3200%`` is 32
  cards): :func:`parse_compute_pct`.
- Slices are a whole count: :func:`parse_count`.

Exceptions::

    ValueError
     └── InvalidQuantity   the text is not a Kubernetes quantity; ``reason`` says why
"""

from __future__ import annotations

import decimal
import enum
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Final


class InvalidQuantity(ValueError):
    """Not a quantity apimachinery would accept."""

    def __init__(self, text: str, reason: str) -> None:
        self.text = text
        self.reason = reason
        super().__init__(f"{text!r} is not a Kubernetes quantity: {reason}")


class Format(enum.StrEnum):
    """How the quantity was written, which is how apimachinery writes it back."""

    DECIMAL_SI = "DecimalSI"
    BINARY_SI = "BinarySI"
    DECIMAL_EXPONENT = "DecimalExponent"


DECIMAL_SUFFIXES: Final[dict[str, int]] = {
    "n": -9,
    "u": -6,
    "m": -3,
    "": 0,
    "k": 3,
    "M": 6,
    "G": 9,
    "T": 12,
    "P": 15,
    "E": 18,
}
"""Suffix -> exponent of 10."""
BINARY_SUFFIXES: Final[dict[str, int]] = {
    "Ki": 10,
    "Mi": 20,
    "Gi": 30,
    "Ti": 40,
    "Pi": 50,
    "Ei": 60,
}
"""Suffix -> exponent of 2."""
MAX_BINARY: Final = Decimal(2**63 - 1)
"""apimachinery caps a binary-suffixed value here (``9Ei`` parses as 2^63 - 1)."""
NANO: Final = Decimal("1e-9")
MAX_EXPONENT: Final = 2**31 - 1
"""apimachinery keeps a decimal exponent in an int32."""

# The scanner of apimachinery's parseQuantityString: a sign, digits, an optional
# fraction, then suffix letters, an optional sign and digits (the exponent's).
_SCAN = re.compile(
    r"(?P<sign>[+-]?)(?P<num>[0-9]*)(?:\.(?P<denom>[0-9]*))?"
    r"(?P<suffix>[eEinumkKMGTP]*[+-]?[0-9]*)"
)


@dataclass(frozen=True, slots=True)
class Parts:
    """A quantity's text split as apimachinery's scanner splits it."""

    negative: bool
    num: str
    """The integer digits without leading zeros ("0" when there are none)."""
    denom: str
    """The fraction's digits ("" when there is no fraction)."""
    suffix: str


@dataclass(frozen=True, slots=True)
class Quantity:
    value: Decimal
    """Exact, rounded up to a nano, a binary value capped at 2^63 - 1."""
    format: Format


def scan(text: str) -> Parts:
    """Split ``text`` into sign, digits, fraction and suffix (the suffix unchecked)."""
    if not text:
        raise InvalidQuantity(text, "it is empty")
    match = _SCAN.fullmatch(text)
    if match is None:
        raise InvalidQuantity(
            text, "write a number and an optional suffix (Ki, Mi, Gi, m, k, M, G, e3...)"
        )
    return Parts(
        negative=match["sign"] == "-",
        num=match["num"].lstrip("0") or "0",
        denom=match["denom"] or "",
        suffix=match["suffix"],
    )


def interpret(text: str, suffix: str) -> tuple[int, int, Format]:
    """(base, exponent, format) of a suffix: ``"Ki"`` is (2, 10), ``"k"`` (10, 3),
    ``"e-3"`` (10, -3)."""
    if suffix in DECIMAL_SUFFIXES:
        return 10, DECIMAL_SUFFIXES[suffix], Format.DECIMAL_SI
    if suffix in BINARY_SUFFIXES:
        return 2, BINARY_SUFFIXES[suffix], Format.BINARY_SI
    if len(suffix) > 1 and suffix[0] in "eE":
        exponent = suffix[1:]
        digits = exponent.lstrip("+-")
        if digits.isascii() and digits.isdigit() and len(exponent) - len(digits) <= 1:
            value = int(exponent)
            if abs(value) <= MAX_EXPONENT:
                return 10, value, Format.DECIMAL_EXPONENT
    raise InvalidQuantity(
        text,
        f"unknown suffix {suffix!r}; use one of {', '.join(BINARY_SUFFIXES)}, "
        f"{', '.join(s for s in DECIMAL_SUFFIXES if s)} or an exponent such as e3",
    )


_SI_MULTIPLIERS: Final = {s: 10**e for s, e in DECIMAL_SUFFIXES.items() if e > 0}

_EXACT: Final = decimal.Context(prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)
"""Arithmetic that never rounds (the cost follows the digits there are, not ``prec``)."""


def parse(text: str | int | float, *, cap: bool = True) -> Quantity:
    """The quantity ``text`` (a number is read as its decimal text, as the API server
    accepts a JSON number); :class:`InvalidQuantity` when apimachinery would refuse it.

    ``cap=False`` keeps a binary-suffixed value above 2^63 - 1 as it is: the API server
    caps what it sends, but a configuration file's ``2Ei`` of quota is not a request."""
    if isinstance(text, bool):
        raise InvalidQuantity(str(text).lower(), "a boolean is not a quantity")
    if not isinstance(text, str):
        text = str(text)
    if text.isascii():
        # the forms the API server sends for GPU requests, without the scanner: a plain
        # count ("2", "20480"), a count with a decimal or binary suffix ("3k", "8Gi")
        if text.isdigit():
            return Quantity(value=Decimal(text), format=Format.DECIMAL_SI)
        if text[:-1].isdigit() and text[-1] in _SI_MULTIPLIERS:
            return Quantity(
                value=Decimal(int(text[:-1]) * _SI_MULTIPLIERS[text[-1]]),
                format=Format.DECIMAL_SI,
            )
        if text[:-2].isdigit() and text[-2:] in BINARY_SUFFIXES:
            shifted = Decimal(int(text[:-2]) << BINARY_SUFFIXES[text[-2:]])
            return Quantity(
                value=min(shifted, MAX_BINARY) if cap else shifted, format=Format.BINARY_SI
            )
    parts = scan(text)
    base, exponent, fmt = interpret(text, parts.suffix)
    sign = "-" if parts.negative else ""
    number = f"{sign}{parts.num}.{parts.denom}" if parts.denom else f"{sign}{parts.num}"
    # exact: the value's exponent is the fraction's, shifted by a decimal suffix
    if base == 10:
        value = _EXACT.scaleb(Decimal(number), exponent)
        finest = exponent - len(parts.denom)
    else:
        value = _EXACT.multiply(Decimal(number), 2**exponent)
        finest = -len(parts.denom)
    if finest < -9 and value:
        value = value.quantize(NANO, rounding=decimal.ROUND_UP, context=_EXACT)
    if fmt is Format.BINARY_SI:
        if cap and value.copy_abs() > MAX_BINARY:
            value = MAX_BINARY.copy_sign(value)
        if 0 < value.copy_abs() < 1:
            fmt = Format.DECIMAL_SI
    return Quantity(value=value, format=fmt)


def whole(value: Decimal, *, limit: int = 2**63 - 1) -> int | None:
    """``value`` as an int when it is a whole number within +-``limit``, else None
    (a bound first, so that ``1e999999`` never becomes a million-digit int)."""
    if value.copy_abs() > limit or value != value.to_integral_value(context=_EXACT):
        return None
    return int(value)


def normal(value: Decimal) -> str:
    """One text per value, however it was written (``3k``, ``3000`` and ``3e3`` all give
    "3000"): for comparing quantities, never for showing them."""
    number = whole(value)
    if number is not None:
        return str(number)
    return str(value.normalize(_EXACT))


MIB: Final = 1024 * 1024
"""Bytes in a MiB."""


def to_mib(q: Quantity) -> int | None:
    """GPU memory in MiB (see the module docstring): a binary-suffixed quantity is bytes,
    any other a count of MiB; None unless that is a whole number of MiB."""
    number = whole(q.value, limit=2**200) if q.format is Format.BINARY_SI else whole(q.value)
    if number is not None and q.format is Format.BINARY_SI:
        return number // MIB if number % MIB == 0 else None
    return number


# --------------------------------------------------------------------------------------
# The configuration's spellings
# --------------------------------------------------------------------------------------

UNLIMITED_WORD: Final = "unlimited"
"""How a configuration writes "no limit" (as does leaving the key out)."""
CONFIG_MEMORY_UNITS: Final = ("", "Mi", "Gi", "Ti")
"""The suffixes a configuration may give GPU memory (each also with a ``B``)."""
_CONFIG_MEMORY: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
_CONFIG_COMPUTE: Final = re.compile(r"^\s*(\d+)\s*%?\s*$")


def parse_memory_mib(value: object) -> int | None:
    """GPU memory in MiB, as a configuration writes it: an integer (MiB) or ``"512Mi"``,
    ``"80Gi"``, ``"8GiB"``, ``"1.5Ti"``; ``"unlimited"`` or None is None (no limit).
    ValueError otherwise. The value is :func:`to_mib`'s."""
    if value is None or value == UNLIMITED_WORD:
        return None
    if isinstance(value, bool):
        raise ValueError(f"memory {value!r} is not a quantity")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"memory {value} is negative: quantities must be 0 or more")
        return value
    if isinstance(value, float):
        raise ValueError(
            f"memory {value!r} is not a whole number of MiB: write an integer (MiB) or a "
            "string with a unit (512Mi, 80Gi, 1Ti)"
        )
    if isinstance(value, str):
        if value.strip().startswith("-"):
            raise ValueError(f"memory {value!r} is negative: quantities must be 0 or more")
        match = _CONFIG_MEMORY.match(value)
        unit = match.group(2).removesuffix("B") if match and match.group(2) != "B" else None
        if match is not None and unit in CONFIG_MEMORY_UNITS:
            mib = to_mib(parse(match.group(1) + unit, cap=False))
            if mib is None:
                raise ValueError(f"memory {value!r} is not a whole number of MiB")
            return mib
        raise ValueError(
            f"memory {value!r} is not a quantity: write MiB as an integer, or a string with "
            "a binary unit (512Mi, 80Gi, 8GiB, 1Ti), or 'unlimited'"
        )
    raise ValueError(f"memory {value!r} is not a quantity")


def parse_compute_pct(value: object) -> int | None:
    """Compute in percent of one card: ``30``, ``"30%"`` (``"3200%"`` is 32 cards);
    ``"unlimited"`` or None is None. ValueError otherwise."""
    if value is None or value == UNLIMITED_WORD:
        return None
    if isinstance(value, bool | float):
        raise ValueError(f"compute {value!r} is not a whole percentage (write 30 or '30%')")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"compute {value} is negative: quantities must be 0 or more")
        return value
    if isinstance(value, str):
        if value.strip().startswith("-"):
            raise ValueError(f"compute {value!r} is negative: quantities must be 0 or more")
        match = _CONFIG_COMPUTE.match(value)
        if match:
            number = whole(parse(match.group(1)).value)
            if number is not None:
                return number
    raise ValueError(
        f"compute {value!r} is not a quantity: write percent of a card as 30 or '30%' "
        "(100% is one whole card), or 'unlimited'"
    )


def parse_count(value: object) -> int | None:
    """A count of slices: an integer >= 0, or ``"unlimited"``/None (no limit)."""
    if value is None or value == UNLIMITED_WORD:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"slices {value} is negative: quantities must be 0 or more")
        return value
    raise ValueError(f"slices {value!r} is not a whole number (or 'unlimited')")


def format_mib(mib: int | None) -> str:
    """``81920`` -> ``80Gi``; None -> ``unlimited``: what :func:`parse_memory_mib` reads
    back as the same number."""
    if mib is None:
        return UNLIMITED_WORD
    if mib == 0:
        return "0"
    for unit, size in (("Ti", 1024**2), ("Gi", 1024)):
        if mib and mib % size == 0:
            return f"{mib // size}{unit}"
    return f"{mib}Mi"


__all__ = [
    "BINARY_SUFFIXES",
    "DECIMAL_SUFFIXES",
    "Format",
    "InvalidQuantity",
    "Parts",
    "Quantity",
    "format_mib",
    "interpret",
    "normal",
    "parse",
    "parse_compute_pct",
    "parse_count",
    "parse_memory_mib",
    "scan",
    "to_mib",
    "whole",
]
