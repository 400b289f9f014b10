"""Every package that the tests and benchmarks import is declared in pyproject.toml:
a package that happens to be on the machine (or arrives as another's dependency)
must never hide one the project forgot (issue 14.1)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
OWN = {pattern.rstrip("*") for pattern in PACKAGES["find"]["include"]} | {"tests", "bench"}
"""The project's own top-level packages (as pyproject.toml ships them), tests and bench."""


def declared(extra: str, project: dict[str, object]) -> set[str]:
    """Distribution names the extra pulls in, directly or through gpupool[...]."""
    extras = project["optional-dependencies"]
    assert isinstance(extras, dict)
    names: set[str] = set()
    for requirement in [*project["dependencies"], *extras[extra]]:  # type: ignore[misc]
        name = re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower()
        if name == "gpupool":
            for inner in re.findall(r"\[([^\]]+)\]", requirement)[0].split(","):
                names |= declared(inner.strip(), project)
        else:
            names.add(name.replace("_", "-"))
    return names


def imported(folder: str) -> dict[str, str]:
    """Top-level third-party modules imported under ``folder`` -> a file importing it."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top not in sys.stdlib_module_names and top not in OWN:
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


@pytest.mark.parametrize("folder", ["tests", "bench"])
def test_every_import_of_the_tests_and_benches_is_declared(folder: str) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    allowed = declared("test", project)
    distributions = metadata.packages_distributions()
    missing = {
        module: where
        for module, where in imported(folder).items()
        if not {d.lower().replace("_", "-") for d in distributions.get(module, [module])} & allowed
    }
    assert missing == {}, f"imported but not declared in the test extra: {missing}"
