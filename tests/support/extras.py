"""What ``pip install 'gpupool[extra]'`` asks for, read from pyproject.toml."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def requirements(*extras: str) -> list[Requirement]:
    """The requirements of gpupool with ``extras``: its dependencies and each extra's,
    the extras it names of itself (``gpupool[store,webhook]``) expanded."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    out = [Requirement(r) for r in project["dependencies"]]
    pending, seen = list(extras), set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        for text in project["optional-dependencies"][name]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == "gpupool":
                pending.extend(requirement.extras)
            else:
                out.append(requirement)
    return out
