"""Resource quantities as kube-apiserver writes them before it calls a webhook.

The API server decodes every quantity of a pod into apimachinery's ``resource.Quantity``
and serialises it back in canonical form, so a webhook never sees what the user wrote:
``3000`` arrives as ``3k``, ``1024Ki`` as ``1Mi``, ``1.5`` as ``1500m``. The demo's API
stand-in (:mod:`demo.apiserver`) sends its AdmissionReviews that way, and the tests of
the webhook build theirs with the same functions.
"""

from __future__ import annotations

from typing import Any

from governance import quantity

JSON = dict[str, Any]


def canonical_quantity(text: str | int | float) -> str:
    """``text`` as kube-apiserver serialises it after decoding it into apimachinery's
    ``resource.Quantity`` (``Quantity.String``): ``3000`` -> ``3k``, ``1024Ki`` ->
    ``1Mi``, ``1.5`` -> ``1500m``. Checked against a table of apimachinery's own pairs
    (tests/unit/test_quantity.py).

    Rules (apimachinery ``quantity.go``): a text already in canonical form and read by
    the parser's fast path is kept verbatim; otherwise the value (rounded up to a nano)
    is written in its format with the largest exponent that loses nothing: decimal
    (DecimalSI, exponent notation) as an integer mantissa and an exponent that is a
    multiple of 3 (``k``, ``M``... or ``e<n>``; beyond ``E`` a DecimalSI value falls
    back to ``e<n>``), binary (BinarySI) as an integer and the largest power of 1024
    that divides it, unless it is below 1024 in magnitude or not whole, then decimal.
    """
    text = str(text)
    if text == "0":
        return text
    parts = quantity.scan(text)
    _base, exponent, fmt = quantity.interpret(text, parts.suffix)
    if _kept_verbatim(parts, exponent, fmt):
        return text
    parsed = quantity.parse(text)
    value, fmt = parsed.value, parsed.format
    if not value:
        return "0"
    sign = "-" if value < 0 else ""
    magnitude = abs(value)
    if fmt is quantity.Format.BINARY_SI and (
        magnitude < 1024 or magnitude != magnitude.to_integral_value()
    ):
        fmt = quantity.Format.DECIMAL_SI
    if fmt is quantity.Format.BINARY_SI:
        mantissa, power = int(magnitude), 0
        while mantissa % 1024 == 0:
            mantissa //= 1024
            power += 10
        suffix = {e: s for s, e in quantity.BINARY_SUFFIXES.items()}.get(power, "")
        return f"{sign}{mantissa}{suffix}"
    digits = magnitude.as_tuple()
    mantissa = int("".join(map(str, digits.digits)))
    power = int(digits.exponent)
    while mantissa % 10 == 0:
        mantissa //= 10
        power += 1
    mantissa *= 10 ** (power % 3)
    power -= power % 3
    names = {e: s for s, e in quantity.DECIMAL_SUFFIXES.items()}
    if fmt is quantity.Format.DECIMAL_SI and power in names:
        return f"{sign}{mantissa}{names[power]}"
    return f"{sign}{mantissa}" + (f"e{power}" if power else "")


def _kept_verbatim(parts: quantity.Parts, exponent: int, fmt: quantity.Format) -> bool:
    """Whether apimachinery's ParseQuantity keeps the text it was given (its fast path,
    for a text it recognises as canonical), which String then returns unchanged."""
    if fmt is quantity.Format.BINARY_SI:
        if exponent < 0 or parts.denom:
            return False
        precision = 15 - len(parts.num) - int(exponent * 3 / 10) - 1
        scale = 0
    else:
        precision = 18 - (len(parts.num) + len(parts.denom))
        scale = exponent
    scale -= len(parts.denom)
    if precision < 0 or scale < -9:
        return False
    shifted = parts.num + parts.denom
    value = int(shifted)
    if fmt is quantity.Format.BINARY_SI:
        if value << exponent > 2**63 - 1:
            return False
        return exponent % 10 == 0 and value & 0x07 != 0
    return scale % 3 == 0 and not shifted.endswith("000") and shifted[0] != "0"


def canonical_resources(obj: JSON) -> JSON:
    """``obj`` (a pod's JSON) with every container's resource quantities, the pod's
    ``resources`` and ``overhead`` in canonical form, as a webhook receives them."""

    def each(values: JSON | None) -> None:
        if values:
            for key, value in values.items():
                values[key] = canonical_quantity(value)

    spec = obj.get("spec") or {}
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        for container in spec.get(kind) or ():
            resources = container.get("resources") or {}
            each(resources.get("limits"))
            each(resources.get("requests"))
    each(spec.get("overhead"))
    pod_resources = spec.get("resources") or {}
    each(pod_resources.get("limits"))
    each(pod_resources.get("requests"))
    return obj
