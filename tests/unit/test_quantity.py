"""Kubernetes quantities: apimachinery's parser (governance.quantity) and the API
server's canonical form (tests/support/kube.canonical_quantity), against known pairs."""

from __future__ import annotations

from decimal import Decimal

import pytest

from governance import quantity
from governance.quantity import Format
from tests.support.kube import canonical_quantity

pytestmark = pytest.mark.unit

# (written, as kube-apiserver sends it): issue 12's pairs, then apimachinery's own
# (TestQuantityString's alternates and TestQuantityParseEmit in quantity_test.go).
CANONICAL_PAIRS = [
    ("3000", "3k"),
    ("1500", "1500"),
    ("10000", "10k"),
    ("1024Ki", "1Mi"),
    ("1048576", "1048576"),
    ("500m", "500m"),
    ("1.5", "1500m"),
    ("1000", "1k"),
    ("1024Mi", "1Gi"),
    ("1000M", "1G"),
    (".001Ki", "1024m"),
    (".000001Ki", "1024u"),
    (".000000001Ki", "1024n"),
    (".000000000001Ki", "2n"),
    ("1.5Gi", "1536Mi"),
    ("307200Ki", "300Mi"),
    ("1025024Mi", "1001Gi"),
    ("1024Gi", "1Ti"),
    ("5000m", "5"),
    ("0.5", "500m"),
    ("0.001T", "1G"),
    ("1000u", "1m"),
    ("1.08", "1080m"),
    ("1080000000n", "1080m"),
    ("1000E", "1e21"),
    ("5000E", "5e21"),
    ("1000000E", "1e24"),
    (".001e12", "1e9"),
    ("0.001e0", "1e-3"),
    ("1000e-12", "1e-9"),
    ("00", "0"),
    ("1234000", "1234k"),
    ("3.001n", "4n"),
    ("0.0000000001", "1n"),
    ("9Ei", "9223372036854775807"),
    # already canonical: unchanged
    ("3k", "3k"),
    ("1Gi", "1Gi"),
    ("1Ki", "1Ki"),
    ("1025", "1025"),
    ("300M", "300M"),
    ("80m", "80m"),
    ("1e3", "1e3"),
    ("80e-3", "80e-3"),
    ("1n", "1n"),
    ("0", "0"),
]


@pytest.mark.parametrize(
    ("written", "sent"), [pytest.param(w, s, id=w) for w, s in CANONICAL_PAIRS]
)
def test_canonical_form_is_what_apimachinery_writes(written: str, sent: str) -> None:
    assert canonical_quantity(written) == sent
    assert canonical_quantity(sent) == sent
    assert quantity.parse(sent).value == quantity.parse(written).value
    if sent != "0" and not written.startswith("0"):
        assert canonical_quantity(f"-{written}") == f"-{sent}"


@pytest.mark.parametrize(
    ("text", "value", "fmt"),
    [
        pytest.param("3k", 3000, Format.DECIMAL_SI, id="kilo"),
        pytest.param("1k", 1000, Format.DECIMAL_SI, id="thousand-gpus"),
        pytest.param("1Gi", 2**30, Format.BINARY_SI, id="gibi"),
        pytest.param("500m", Decimal("0.5"), Format.DECIMAL_SI, id="milli"),
        pytest.param("1500m", Decimal("1.5"), Format.DECIMAL_SI, id="milli-above-one"),
        pytest.param("1e3", 1000, Format.DECIMAL_EXPONENT, id="exponent"),
        pytest.param("1.3E+6", 1_300_000, Format.DECIMAL_EXPONENT, id="signed-exponent"),
        pytest.param("1E", 10**18, Format.DECIMAL_SI, id="exa-not-exponent"),
        pytest.param("0.9n", Decimal("1e-9"), Format.DECIMAL_SI, id="rounds-up-to-a-nano"),
        pytest.param("0.00000012345", Decimal("124e-9"), Format.DECIMAL_SI, id="rounds-up"),
        pytest.param("9Ei", 2**63 - 1, Format.BINARY_SI, id="binary-capped"),
        pytest.param("0.5Mi", 524288, Format.BINARY_SI, id="binary-fraction"),
        pytest.param("1.", 1, Format.DECIMAL_SI, id="trailing-point"),
        pytest.param("-2", -2, Format.DECIMAL_SI, id="negative"),
        pytest.param(7, 7, Format.DECIMAL_SI, id="json-number"),
    ],
)
def test_parse_reads_every_suffix_as_apimachinery_does(
    text: str | int, value: int | Decimal, fmt: Format
) -> None:
    parsed = quantity.parse(text)
    assert (parsed.value, parsed.format) == (Decimal(value), fmt)


@pytest.mark.parametrize(
    "text",
    [
        "",
        " 1",
        "1 ",
        "1.1.M",
        "1+1.0M",
        "0.1mi",
        "0.1am",
        "aoeu",
        ".5i",
        "1i",
        "-3.01e-",
        "1K",
        "1ki",
    ],
)
def test_parse_refuses_what_apimachinery_refuses(text: str) -> None:
    with pytest.raises(quantity.InvalidQuantity, match="is not a Kubernetes quantity"):
        quantity.parse(text)


def test_whole_numbers_are_bounded_before_they_become_ints() -> None:
    assert quantity.whole(quantity.parse("1k").value) == 1000
    assert quantity.whole(quantity.parse("1500m").value) is None
    assert quantity.whole(quantity.parse("1e999999").value) is None
    assert quantity.normal(quantity.parse("3k").value) == quantity.normal(Decimal(3000))
