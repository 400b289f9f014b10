"""LiveSnapshot: the event loop's snapshot is read in worker threads, one refresh at a
time, and a refresh that hangs never holds up the loop once a snapshot is loaded.
The source is a real SnapshotSource over a real SQLite store; a gate in front of its reads
stands for a store that stops answering (tests/integration/test_webhook_store_hang.py
stops a real PostgreSQL)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from admission.organisation import LiveSnapshot
from governance.errors import StoreUnavailable
from governance.snapshot import Snapshot
from governance.storage.source import SnapshotSource
from governance.storage.store import Store
from tests.support import admission as A

pytestmark = pytest.mark.unit


class GatedSource(SnapshotSource):
    """A SnapshotSource whose reads wait for :attr:`gate`, and that counts them and notes
    the threads they ran in."""

    def __init__(self, store: Store) -> None:
        super().__init__(store, refresh_s=0.0)
        self.gate = threading.Event()
        self.gate.set()
        self.calls = 0
        self.threads: set[int] = set()
        self.fail = False

    def get(self) -> Snapshot:
        self.calls += 1
        self.threads.add(threading.get_ident())
        self.gate.wait(10)
        if self.fail:
            raise StoreUnavailable("the governance store cannot be reached")
        return super().get()


@pytest.fixture
def source(tmp_path: Path) -> Iterator[GatedSource]:
    store = Store(f"sqlite:///{tmp_path / 'gpupool.db'}")
    A.apply_org(store)
    try:
        yield GatedSource(store)
    finally:
        store.close()


def test_requests_without_an_organisation_share_one_refresh_in_a_thread(
    source: GatedSource,
) -> None:
    live = LiveSnapshot(source)

    async def scenario() -> list[Snapshot]:
        source.gate.clear()
        waiting = [asyncio.ensure_future(live.get()) for _ in range(20)]
        await asyncio.sleep(0.05)
        source.gate.set()
        return list(await asyncio.gather(*waiting))

    orgs = asyncio.run(scenario())
    assert source.calls == 1
    assert threading.get_ident() not in source.threads
    assert all(org is orgs[0] for org in orgs) and "ml" in orgs[0].org.departments


def test_a_refresh_that_hangs_leaves_the_loaded_snapshot_serving(source: GatedSource) -> None:
    live = LiveSnapshot(source)

    async def scenario() -> tuple[Snapshot, list[Snapshot], int]:
        first = await live.get()
        source.gate.clear()  # the store stops answering
        during = []
        for _ in range(30):
            during.append(await asyncio.wait_for(live.get(), 1.0))
            await asyncio.sleep(0.02)
        calls = source.calls
        source.gate.set()
        return first, during, calls

    first, during, calls = asyncio.run(scenario())
    assert all(org is first for org in during)
    assert calls == 2  # the first load, then one refresh stuck behind the gate


def test_a_failed_refresh_keeps_the_snapshot_and_a_first_load_fails_for_all(
    source: GatedSource,
) -> None:
    live = LiveSnapshot(source)

    async def scenario() -> None:
        source.fail = True
        with pytest.raises(StoreUnavailable):
            await live.get()
        source.fail = False
        org = await live.get()
        source.fail = True
        assert await live.get() is org
        assert live.failures >= 1
        source.fail = False
        A.apply_org(source.store, A.org_document(slices=7))
        newer = await live.get()  # a new revision is used as soon as it is read
        assert newer is not org and live.failures == 0

    asyncio.run(scenario())
