"""The YAML loader refuses documents that would cost far more than their size: aliases
that expand into millions of nodes (a "billion laughs") and nesting deep enough to
exhaust Python's recursion; what it refuses names the file, the path and the line."""

from __future__ import annotations

import pytest

from governance import config
from governance.errors import ConfigError


def alias_bomb(levels: int, width: int = 10) -> str:
    """Each level a list of ``width`` aliases of the level before: ``width ** levels``
    scalars once expanded, from a few hundred bytes."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, levels + 1):
        refs = ", ".join([f"*l{level - 1}"] * width)
        lines.append(f"l{level}: &l{level} [{refs}]")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_with_file_path_and_line() -> None:
    text = alias_bomb(5)  # a million scalars once expanded, from 400 bytes
    assert len(text) < 500
    with pytest.raises(ConfigError) as caught:
        config.load_document(text, source="org.yaml")
    error = caught.value
    assert error.source == "org.yaml"
    assert error.path.startswith("l")  # the key whose aliases crossed the limit
    assert "alias" in error.reason and "(line " in error.reason
    assert f"{config.MAX_ALIAS_NODES:,}" in error.reason


def test_deep_nesting_is_a_config_error_not_a_recursion_error() -> None:
    text = "pools: " + "[" * 50_000 + "]" * 50_000 + "\n"
    with pytest.raises(ConfigError) as caught:
        config.load_document(text, source="org.yaml")
    error = caught.value
    assert error.path.startswith("pools[0][0]")
    assert f"deeper than {config.MAX_YAML_DEPTH} levels" in error.reason
    assert "(line 1)" in error.reason


def test_deep_nesting_through_aliases_is_refused_too() -> None:
    # each anchor is shallow, but each alias sits inside the one before
    half = config.MAX_YAML_DEPTH // 2 + 1
    text = "a: &a " + "[" * half + "]" * half + "\nb: " + "[" * half + "*a" + "]" * half + "\n"
    with pytest.raises(ConfigError) as caught:
        config.load_document(text, source="org.yaml")
    assert "deeper than" in caught.value.reason
    assert caught.value.path.startswith("b[0]")


def test_nesting_up_to_the_limit_loads() -> None:
    depth = config.MAX_YAML_DEPTH - 2  # the document's mapping and the scalar are levels too
    doc = config.load_document("k: " + "[" * depth + "1" + "]" * depth + "\n", source="x")
    value = doc["k"]
    for _ in range(depth):
        value = value[0]
    assert value == 1
    with pytest.raises(ConfigError, match="deeper than"):
        config.load_document("k: " + "[" * (depth + 1) + "1" + "]" * (depth + 1), source="x")


def test_ordinary_anchors_and_aliases_still_work() -> None:
    text = (
        "defaults: &q {slices: 4, memory: 80Gi}\n"
        "pools: &pools [a100, h100]\n"
        "skus:\n"
        "  - {name: small, pools: *pools}\n"
        "  - {name: large, pools: *pools}\n"
        "quota: *q\n"
    )
    doc = config.load_document(text, source="org.yaml")
    assert doc["skus"][1]["pools"] == ["a100", "h100"]
    assert doc["quota"] == {"slices": 4, "memory": "80Gi"}
    # an aliased path has the line of the alias's own key
    assert doc.lines["skus[1].pools"] == 5


def test_aliases_just_under_the_limit_load() -> None:
    width = 100
    count = config.MAX_ALIAS_NODES // (width + 1)  # each alias adds width + 1 nodes
    items = ", ".join(["x"] * width)
    text = f"a: &a [{items}]\nb: [" + ", ".join(["*a"] * count) + "]\n"
    doc = config.load_document(text, source="org.yaml")
    assert len(doc["b"]) == count
