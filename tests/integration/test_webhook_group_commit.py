"""The webhook's group commit end to end: many GPU pods at once over real HTTPS against
a small quota, on SQLite and on PostgreSQL (both committed on the event loop)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from governance import scopes
from governance.contract import (
    METRIC_ADMISSION_LEDGER_COMMITS_TOTAL,
    METRIC_ADMISSION_LEDGER_WRITES_TOTAL,
    Reason,
)
from governance.storage import ledger
from governance.storage.store import Store
from tests.support import admission as A

pytestmark = pytest.mark.integration

PODS = 24
TRAIN_CEILING = 6
"""Queue ml/train: nominal 2 slices + 4 borrowable (A.org_document's borrowing limit)."""


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    A.apply_org(s, A.org_document(slices=TRAIN_CEILING - 4))
    try:
        yield s
    finally:
        s.close()


async def _post_all(hook: A.Served, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ctx = ssl.create_default_context(cafile=str(hook.cert))
    limits = httpx.Limits(max_connections=len(bodies))
    async with httpx.AsyncClient(base_url=hook.url, verify=ctx, timeout=30, limits=limits) as c:
        replies = await asyncio.gather(*(c.post("/mutate", json=b) for b in bodies))
    answers = []
    for body, reply in zip(bodies, replies, strict=True):
        assert reply.status_code == 200, reply.text
        response: dict[str, Any] = reply.json()["response"]
        assert response["uid"] == body["request"]["uid"]
        answers.append(response)
    return answers


def _counter(text: str, name: str) -> float:
    """The sum over its labels of counter ``name`` in an exposition."""
    values = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]
    assert values, f"{name} is not exposed"
    return sum(values)


def test_concurrent_gpu_pods_get_exactly_the_quota_and_the_writers_are_counted(
    store: Store, tmp_path: Path
) -> None:
    bodies = [A.review(A.pod(A.container(limits=A.gpu(1)), name=f"p-{i}")) for i in range(PODS)]
    with A.serve(store, tmp_path) as hook:
        answers = asyncio.run(_post_all(hook, bodies))
        with hook.client() as client:
            metrics = client.get("/metrics")
    assert metrics.status_code == 200

    allowed = [a for a in answers if a["allowed"]]
    denied = [a for a in answers if not a["allowed"]]
    assert len(allowed) == TRAIN_CEILING
    assert all(a.get("patch") for a in allowed)
    assert len(denied) == PODS - TRAIN_CEILING
    for answer in denied:
        status = answer["status"]
        assert status["reason"] == Reason.BORROWING_LIMIT_EXCEEDED.value
        assert status["code"] == Reason.BORROWING_LIMIT_EXCEEDED.http_code
        message = status["message"]
        assert message.startswith("ana asked for 1 slice(s) of SKU small"), message
        assert "queue ml/train" in message
        assert f"{TRAIN_CEILING} in use + 1 requested would exceed it by 1" in message
        assert "Ask your department admin" in message

    allocations = ledger.list_allocations(store)
    assert len(allocations) == TRAIN_CEILING
    admitted_uids = {
        b["request"]["uid"] for b, a in zip(bodies, answers, strict=True) if a["allowed"]
    }
    assert {a.request_uid for a in allocations} == admitted_uids
    assert ledger.usage(store)[scopes.queue("ml", "train")].slices == TRAIN_CEILING
    denials = ledger.recent_denials(store, limit=100)
    assert len(denials) == PODS - TRAIN_CEILING
    assert {d.reason for d in denials} == {Reason.BORROWING_LIMIT_EXCEEDED.value}

    commits = _counter(metrics.text, METRIC_ADMISSION_LEDGER_COMMITS_TOTAL)
    writes = _counter(metrics.text, METRIC_ADMISSION_LEDGER_WRITES_TOTAL)
    assert writes >= commits > 0
    assert writes >= PODS  # every GPU pod's reservation went through the group commit
