"""governance.quantity against the ``kubernetes`` client's own parser, and the canonical
form of tests/support against the parser: written any way, a quantity keeps its value."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kubernetes.utils.quantity import parse_quantity

from governance import quantity
from tests.support.kube import canonical_quantity

pytestmark = pytest.mark.property

SUFFIXES = [*quantity.DECIMAL_SUFFIXES, *quantity.BINARY_SUFFIXES]


@st.composite
def quantities(draw: st.DrawFn) -> str:
    """Texts of the grammar: sign, up to 12 digits, a fraction of up to 6, a suffix or
    an exponent (the client's parser rounds beyond 28 digits, apimachinery never)."""
    sign = draw(st.sampled_from(["", "-", "+"]))
    whole = draw(st.text("0123456789", min_size=1, max_size=12))
    fraction = draw(st.none() | st.text("0123456789", min_size=1, max_size=6))
    number = whole if fraction is None else f"{whole}.{fraction}"
    if draw(st.booleans()):
        suffix = draw(st.sampled_from(SUFFIXES))
    else:
        suffix = f"{draw(st.sampled_from('eE'))}{draw(st.integers(min_value=-6, max_value=18))}"
    return f"{sign}{number}{suffix}"


def as_apimachinery_keeps(text: str, value: Decimal) -> Decimal:
    """The client's parser keeps every digit and caps nothing; apimachinery rounds up
    to a nano and caps a binary value at 2^63 - 1."""
    if value and value.as_tuple().exponent < -9:  # type: ignore[operator]
        value = value.quantize(quantity.NANO, rounding="ROUND_UP")
    if text.endswith("i") and abs(value) > quantity.MAX_BINARY:
        value = quantity.MAX_BINARY.copy_sign(value)
    return value


@settings(max_examples=600)
@given(quantities())
def test_parse_agrees_with_the_kubernetes_client(text: str) -> None:
    assert quantity.parse(text).value == as_apimachinery_keeps(text, parse_quantity(text))


@settings(max_examples=600)
@given(quantities())
def test_canonical_form_keeps_the_value_and_is_a_fixed_point(text: str) -> None:
    sent = canonical_quantity(text)
    assert quantity.parse(sent).value == quantity.parse(text).value
    assert canonical_quantity(sent) == sent
    assert parse_quantity(sent) == quantity.parse(text).value
