"""Declarative configuration: one YAML document -> a validated :class:`~governance.model.Org`.

In parts, each pure:

* :mod:`~governance.config.document`: YAML in (safe, bounded), a mapping that
  remembers the line of each path;
* :mod:`~governance.config.shape`: the document's shape, checked by pydantic;
* :mod:`~governance.config.builder`: cross-references checked and the Org built; every
  error of a file reported at once, each with its path and line;
* :mod:`~governance.config.diff`: what changed between two organisations.

Recording a document in the store is :mod:`governance.storage.revisions`'s; readers
keep the organisation in force with :mod:`governance.storage.source`. The YAML
reference is docs/config.md.
"""

from __future__ import annotations

from governance.config.builder import build_org, globs_overlap, known_backends
from governance.config.diff import diff
from governance.config.document import (
    MAX_ALIAS_NODES,
    MAX_YAML_DEPTH,
    Document,
    DocumentTooLarge,
    load_document,
    load_file,
    with_lines,
)

__all__ = [
    "MAX_ALIAS_NODES",
    "MAX_YAML_DEPTH",
    "Document",
    "DocumentTooLarge",
    "build_org",
    "diff",
    "globs_overlap",
    "known_backends",
    "load_document",
    "load_file",
    "with_lines",
]
