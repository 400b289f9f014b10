"""The one small interface every GPU backend implements.

A backend reads the node's GPUs (and the processes on them) when the sampler asks,
never on a scrape. An error on one GPU or one call goes into the reading
(``BackendReading.errors``, the GPU's ``healthy`` flag); ``read`` itself raises only
on a programming error. Adding a vendor is one new module with a class like these,
registered in ``exporter.backends.BACKENDS``.
"""

from __future__ import annotations

from typing import Protocol

from exporter.model import BackendReading


class GpuBackend(Protocol):
    name: str

    def read(self) -> BackendReading:
        """One reading of every GPU on the node."""
        ...

    def close(self) -> None: ...
