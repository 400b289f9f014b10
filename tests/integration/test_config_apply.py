"""revisions.apply against a real store (SQLite and PostgreSQL): revisions, idempotence,
diffs, dry runs, quotas below usage, and SnapshotSource."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from governance import config, placement, quotas, scopes
from governance.errors import ConfigError
from governance.resources import Resources
from governance.scopes import Scope
from governance.storage import ledger, revisions, schema
from governance.storage.source import SnapshotSource
from governance.storage.store import Store
from tests.support.org import GIB, org_document, with_change

pytestmark = pytest.mark.integration


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    yield s
    s.close()


def set_usage(
    store: Store, scope: Scope, *, slices: int = 0, memory_mib: int = 0, compute_pct: int = 0
) -> None:
    """What the ledger would have recorded for live allocations in ``scope``."""
    with store.write() as conn:
        conn.execute(schema.usage.delete().where(schema.usage.c.scope == scope.key))
        conn.execute(
            schema.usage.insert().values(
                scope=scope.key, slices=slices, memory_mib=memory_mib, compute_pct=compute_pct
            )
        )


def counts(store: Store) -> int:
    with store.read() as conn:
        revisions = conn.execute(
            sa.select(sa.func.count()).select_from(schema.config_revisions)
        ).scalar_one()
    return int(revisions)


def test_first_apply_records_a_revision(store: Store) -> None:
    doc = org_document()
    result = revisions.apply(store, doc, source="org.yaml")

    assert result.changed
    assert result.revision == 1
    assert "+ department ml" in result.diff
    assert result.org.departments["ml"].default_queue == "train"
    latest = store.latest_config()
    assert latest is not None and latest.source == "org.yaml" and latest.document == doc
    assert revisions.current_org(store) == result.org


def test_applying_the_same_document_again_records_nothing(store: Store) -> None:
    first = revisions.apply(store, org_document(), source="org.yaml")
    before = counts(store)

    again = revisions.apply(store, org_document(), source="org.yaml")

    assert not again.changed
    assert again.diff == []
    assert again.revision == first.revision
    assert counts(store) == before


def test_a_change_records_a_new_revision_with_its_diff(store: Store) -> None:
    revisions.apply(store, org_document(), source="org.yaml")
    doc = with_change(org_document(), "departments[0].queues[0].quota.memory", "240Gi")
    doc = with_change(
        doc, "role_bindings[2]", {"role": "viewer", "department": "ml", "subjects": ["user:vic"]}
    )

    result = revisions.apply(store, doc, source="org.yaml")

    assert result.changed and result.revision == 2
    assert result.diff == [
        "~ queue ml/train nominal memory 160Gi -> 240Gi",
        "+ binding viewer in ml for user:vic",
    ]
    assert store.latest_revision() == 2
    current = revisions.current_org(store)
    assert current is not None and current.role_bindings == result.org.role_bindings


def test_a_reformatted_document_is_recorded_without_effective_change(store: Store) -> None:
    revisions.apply(store, org_document(), source="org.yaml")
    doc = with_change(org_document(), "departments[0].queues[0].quota.memory", 160 * GIB)
    result = revisions.apply(store, doc, source="org.yaml")
    assert result.changed
    assert result.diff == ["~ document changed without changing the organisation"]


def test_dry_run_reports_the_diff_and_writes_nothing(store: Store) -> None:
    result = revisions.apply(store, org_document(), source="org.yaml", dry_run=True)
    assert result.changed and result.revision is None
    assert "+ queue ml/infer" in result.diff
    assert counts(store) == 0
    assert revisions.current_org(store) is None

    revisions.apply(store, org_document(), source="org.yaml")
    before = counts(store)
    doc = with_change(org_document(), "departments[0].quota.slices", 32)
    dry = revisions.apply(store, doc, source="org.yaml", dry_run=True)
    assert dry.diff == ["~ department ml quota slices 16 -> 32"]
    assert counts(store) == before
    assert store.latest_revision() == 1


def test_an_invalid_document_is_refused_before_anything_is_written(store: Store) -> None:
    doc = with_change(org_document(), "skus[0].pools", ["v100"])
    with pytest.raises(ConfigError, match="unknown pool 'v100'"):
        revisions.apply(store, doc, source="org.yaml")
    assert counts(store) == 0


BELOW_USAGE = [
    pytest.param(
        scopes.department("ml"),
        {"slices": 10},
        "departments[0].quota.slices",
        8,
        "departments[0].quota.slices",
        "department ml quota for slices would be 8 but 10 is in use. Set it to at least 10",
        id="department-total",
    ),
    pytest.param(
        scopes.queue("ml", "train"),
        {"memory_mib": 200 * GIB},
        "departments[0].queues[0].borrowing_limit.memory",
        "20Gi",
        "departments[0].queues[0].quota.memory",
        "queue ml/train nominal quota + borrowing limit for memory would be 180Gi but 200Gi "
        "is in use",
        id="queue-nominal-plus-borrowing",
    ),
    pytest.param(
        scopes.parse("department/ml/sku/a100-1g"),
        {"slices": 3},
        "departments[0].quota.per_sku",
        {"a100-1g": {"slices": 2}},
        "departments[0].quota.per_sku.a100-1g.slices",
        "department ml quota for SKU a100-1g for slices would be 2 but 3 is in use",
        id="department-per-sku",
    ),
    pytest.param(
        scopes.parse("queue/ml/infer/pool/a100"),
        {"compute_pct": 150},
        "departments[0].queues[1].quota",
        {"per_pool": {"a100": {"compute": "100%"}}},
        "departments[0].queues[1].quota.per_pool.a100.compute",
        "queue ml/infer quota on pool a100 for compute would be 100% but 150% is in use",
        id="queue-per-pool",
    ),
    pytest.param(
        scopes.pool("a100"),
        {"memory_mib": 500 * GIB},
        "pools[0].gpus",
        4,
        "pools[0]",
        "pool a100 sellable capacity (gpus x memory_per_gpu x over-subscription) for memory "
        "would be 320Gi but 500Gi is in use",
        id="pool-capacity",
    ),
]


@pytest.mark.parametrize(("scope", "used", "change", "value", "path", "message"), BELOW_USAGE)
def test_a_quota_below_what_is_in_use_is_refused(
    store: Store,
    scope: str,
    used: dict[str, int],
    change: str,
    value: Any,
    path: str,
    message: str,
) -> None:
    revisions.apply(store, org_document(), source="org.yaml")
    set_usage(store, scope, **used)
    before = counts(store)
    doc = with_change(org_document(), change, value)

    for dry_run in (True, False):
        with pytest.raises(ConfigError) as err:
            revisions.apply(store, doc, source="org.yaml", dry_run=dry_run)
        assert err.value.path == path
        assert message in err.value.reason, err.value.reason
    assert counts(store) == before


def test_a_quota_at_exactly_what_is_in_use_is_accepted(store: Store) -> None:
    revisions.apply(store, org_document(), source="org.yaml")
    set_usage(store, scopes.department("ml"), slices=10)
    doc = with_change(org_document(), "departments[0].quota.slices", 10)
    assert revisions.apply(store, doc, source="org.yaml").revision == 2


def test_removing_a_queue_in_use_is_refused(store: Store) -> None:
    revisions.apply(store, org_document(), source="org.yaml")
    set_usage(store, scopes.queue("ml", "infer"), slices=1, memory_mib=10 * GIB, compute_pct=15)
    doc = with_change(
        org_document(), "departments[0].queues", org_document()["departments"][0]["queues"][:1]
    )
    with pytest.raises(
        ConfigError,
        match=r"removes queue ml/infer, which has 1 slices, 10Gi "
        r"memory, 15% compute in use",
    ):
        revisions.apply(store, doc, source="org.yaml")
    # Once it is idle it may go.
    set_usage(store, scopes.queue("ml", "infer"))
    assert "- queue ml/infer" in revisions.apply(store, doc, source="org.yaml").diff


def test_an_apply_racing_another_is_refused(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    revisions.apply(store, org_document(), source="org.yaml")
    real = config.diff

    def meanwhile(*args: Any, **kwargs: Any) -> list[str]:
        # Another apply commits after this one read the newest revision, before it writes.
        with store.write() as conn:
            store.save_config(conn, {"racing": True}, source="other.yaml")
        return real(*args, **kwargs)

    monkeypatch.setattr(config, "diff", meanwhile)
    doc = with_change(org_document(), "departments[0].quota.slices", 20)
    with pytest.raises(ConfigError, match=r"another configuration \(revision 2\) was applied"):
        revisions.apply(store, doc, source="org.yaml")
    assert store.latest_revision() == 2


# -- SnapshotSource ------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_snapshot_source_before_any_apply_says_what_to_do(store: Store) -> None:
    source = SnapshotSource(store)
    with pytest.raises(
        ConfigError, match=r"no configuration has been applied .*`gpupool apply -f org.yaml`"
    ):
        source.get()


def test_snapshot_source_rereads_only_new_revisions_and_at_most_every_refresh(
    store: Store,
) -> None:
    clock = Clock()
    revisions.apply(store, org_document(), source="org.yaml")
    source = SnapshotSource(store, refresh_s=2.0, clock=clock)
    first = source.get()
    assert source.revision == 1
    assert source.get() is first

    revisions.apply(
        store, with_change(org_document(), "departments[0].quota.slices", 40), source="org.yaml"
    )
    clock.now += 1.0
    assert source.get() is first, "re-read before refresh_s elapsed"
    clock.now += 1.5
    second = source.get()
    assert second is not first
    assert second.org.departments["ml"].quota.total.slices.value == 40
    assert source.revision == 2
    clock.now += 5
    assert source.get() is second, "same revision: not rebuilt"


def test_usage_recorded_by_the_ledger_blocks_a_lower_quota_until_released(store: Store) -> None:
    org = revisions.apply(store, org_document(), source="org.yaml").org
    target = placement.resolve_target(org, namespace="ml-dev", queue="train")
    grant = placement.grant(org, target, placement.SliceRequest(count=4, sku="a100-half"))
    demand = quotas.Demand(
        department="ml",
        queue="train",
        sku="a100-half",
        pool="a100",
        amount=Resources.of_grant(grant),
    )
    reservation = ledger.reserve(
        store, org, demand=demand, request_uid="req-1", namespace="ml-dev", grants={"c": grant}
    )
    assert reservation.allocation is not None
    doc = with_change(org_document(), "departments[0].quota.slices", 3)

    with pytest.raises(ConfigError) as err:
        revisions.apply(store, doc, source="org.yaml")
    assert err.value.path == "departments[0].quota.slices"
    assert "would be 3 but 4 is in use" in err.value.reason

    ledger.release(store, reservation.allocation.id)
    assert revisions.apply(store, doc, source="org.yaml").revision == 2


def test_a_stored_revision_that_no_longer_validates_does_not_block_the_fix(store: Store) -> None:
    with store.write() as conn:
        store.save_config(conn, {"pools": "not a list"}, source="old.yaml")
    result = revisions.apply(store, org_document(), source="org.yaml")
    assert result.revision == 2
    assert result.diff[0].startswith("! revision 1 in force no longer validates (")
    assert "+ department ml" in result.diff


def test_set_quota_never_overwrites_a_revision_applied_while_it_was_checked(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``gpupool set quota`` edits the revision it read; one applied by someone else in
    the meantime (here between the read and the record) makes it fail, never silently
    reverted by a document built from the older revision."""
    from governance import rbac
    from governance.storage import source

    revisions.apply(store, org_document(), source="org.yaml")
    theirs = with_change(org_document(), "departments[0].quota.slices", 32)
    built = source.of_revision

    def someone_applies_meanwhile(latest: Any) -> Any:
        snapshot = built(latest)
        revisions.apply(store, theirs, source="their org.yaml")
        return snapshot

    monkeypatch.setattr(source, "of_revision", someone_applies_meanwhile)
    with pytest.raises(ConfigError, match=r"another configuration .* was applied"):
        revisions.change_quota(
            store,
            identity=rbac.Identity(user="root"),
            department="ml",
            queue="infer",
            values={"slices": "4"},
        )
    latest = store.latest_config()
    assert latest is not None and latest.source == "their org.yaml"
    assert latest.document["departments"][0]["quota"]["slices"] == 32
