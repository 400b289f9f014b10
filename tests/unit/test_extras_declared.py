"""Every third-party module a package imports is installed by the extra that installs
that package's command: `pip install -e '.[demo]' && gpupool demo` (README's first
command) must not stop on a missing module that only the test extra happened to bring.

Imports are read from the source (every ``import``, module level or lazy), mapped to
their distributions by the installed metadata, and compared with the requirements that
pyproject.toml's extra expands to (following ``gpupool[...]`` self-references)."""

from __future__ import annotations

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from tests.support.extras import requirements

ROOT = Path(__file__).resolve().parents[2]
OWN = {"governance", "admission", "exporter", "dashboard", "simulator", "demo", "bench"}

# Each package, and the extras `pip install 'gpupool[...]'` names for its command.
PACKAGES = {
    "governance": ("store",),
    "admission": ("webhook",),
    "exporter": ("exporter",),
    "dashboard": ("dashboard",),
    "simulator": ("simulate",),
    "demo": ("demo",),
}


def _name(requirement: str) -> str:
    return canonicalize_name(re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0])


def _closure(extras: tuple[str, ...]) -> set[str]:
    return {canonicalize_name(r.name) for r in requirements(*extras)}


def _imports(package: str) -> set[str]:
    found: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in OWN and m not in sys.stdlib_module_names}


def _requires(distribution: str) -> set[str]:
    """``distribution`` and what it installs (its unconditional requirements, deeply)."""
    out: set[str] = set()
    todo = [distribution]
    while todo:
        name = todo.pop()
        if name in out:
            continue
        out.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [_name(r) for r in requires if "extra ==" not in r]
    return out


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_every_module_a_package_imports_comes_with_its_extra(package: str) -> None:
    installed = set().union(*(_requires(d) for d in _closure(PACKAGES[package])))
    distributions = metadata.packages_distributions()
    missing = {
        module: distributions.get(module, [module])
        for module in sorted(_imports(package))
        if not {canonicalize_name(d) for d in distributions.get(module, [module])} & installed
    }
    assert not missing, (
        f"{package}/ imports modules that `pip install 'gpupool[{','.join(PACKAGES[package])}]'`"
        f" does not install: {missing} (declare them in pyproject.toml)"
    )
