"""governance.placement: department and queue from the namespace, SKU resolution, what
each container is granted (SKU and HAMi forms), and a pod's single SKU."""

from __future__ import annotations

import pytest

from governance import placement
from governance.contract import SKU_CUSTOM, Reason, SliceGrant
from governance.errors import PlacementError
from governance.placement import SliceRequest
from governance.resources import Resources
from tests.support.core import GIB, make_department, make_org, make_pool, make_queue, make_sku

pytestmark = pytest.mark.unit

ORG = make_org(
    pools=[
        make_pool("a100", gpus=8, memory_mib_per_gpu=80 * GIB, backend="hami"),
        make_pool("l4", model="L4", gpus=4, memory_mib_per_gpu=24 * GIB, backend="nvidia-mps"),
    ],
    skus=[
        make_sku("a100-1g", memory_mib=10 * GIB, compute_pct=15),
        make_sku("a100-half", memory_mib=None, memory_pct=50, compute_pct=50),
        make_sku("a100-x2", memory_mib=80 * GIB, compute_pct=100, gpus_per_slice=2),
        make_sku("l4-half", memory_mib=None, memory_pct=50, compute_pct=50, pools=("l4",)),
        make_sku("shared", memory_mib=4 * GIB, compute_pct=10, pools=("a100", "l4")),
    ],
    departments=[
        make_department("ml", namespaces=("ml-*", "research"), default_queue="train"),
        make_department("serving", namespaces=("ml-serving", "prod-*"), default_queue="online"),
        make_department("nodefault", namespaces=("nd",), default_queue="gone"),
    ],
    queues=[
        make_queue("train", department="ml", pool="a100", default_sku="a100-half"),
        make_queue("inference", department="ml", pool="l4", skus=("shared",)),
        make_queue("online", department="serving", pool="l4", default_sku="l4-half"),
        make_queue("batch", department="serving", pool="a100"),
    ],
)


def target(namespace: str = "ml-team", queue: str | None = None) -> placement.Target:
    return placement.resolve_target(ORG, namespace=namespace, queue=queue)


# -- resolve_target ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("namespace", "queue", "department", "queue_name", "pool"),
    [
        pytest.param("ml-team", None, "ml", "train", "a100", id="glob-and-default-queue"),
        pytest.param("research", "inference", "ml", "inference", "l4", id="exact-and-named-queue"),
        pytest.param("ml-serving", None, "serving", "online", "l4", id="exact-name-beats-glob"),
        pytest.param("prod-eu", "batch", "serving", "batch", "a100", id="other-departments-glob"),
    ],
)
def test_resolve_target(
    namespace: str, queue: str | None, department: str, queue_name: str, pool: str
) -> None:
    t = placement.resolve_target(ORG, namespace=namespace, queue=queue)
    assert (t.department.name, t.queue.name, t.pool.name) == (department, queue_name, pool)
    assert t.pool is ORG.pools[pool]


def test_namespace_of_no_department_is_not_owned() -> None:
    with pytest.raises(PlacementError) as info:
        target("default")
    assert info.value.code is Reason.NAMESPACE_NOT_OWNED
    assert "'default'" in str(info.value)
    assert "Ask a platform admin" in str(info.value)


def test_unknown_queue_lists_the_departments_queues() -> None:
    with pytest.raises(PlacementError) as info:
        target("ml-team", "nope")
    assert info.value.code is Reason.UNKNOWN_QUEUE
    assert info.value.choices == ("inference", "train")
    assert str(info.value) == (
        "department 'ml' has no queue 'nope'. Valid choices: inference, train."
    )


def test_queue_of_another_department_is_named_as_such() -> None:
    with pytest.raises(PlacementError) as info:
        target("ml-team", "online")
    assert info.value.code is Reason.QUEUE_OF_OTHER_DEPARTMENT
    assert info.value.choices == ("inference", "train")
    message = str(info.value)
    assert "belongs to department 'serving'" in message
    assert "'ml' which owns namespace 'ml-team'" in message


def test_missing_default_queue_is_an_unknown_queue() -> None:
    with pytest.raises(PlacementError) as info:
        target("nd")
    assert info.value.code is Reason.UNKNOWN_QUEUE
    assert info.value.choices == ()


# -- resolve_sku ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("namespace", "queue", "name", "expected"),
    [
        pytest.param("ml-team", None, None, "a100-half", id="queue-default-sku"),
        pytest.param("ml-team", None, "a100-1g", "a100-1g", id="named-sku-on-the-pool"),
        pytest.param("ml-team", None, "shared", "shared", id="sku-on-several-pools"),
        pytest.param("research", "inference", "shared", "shared", id="sku-in-the-queues-list"),
    ],
)
def test_resolve_sku(namespace: str, queue: str | None, name: str | None, expected: str) -> None:
    assert placement.resolve_sku(ORG, target(namespace, queue), name) is ORG.skus[expected]


@pytest.mark.parametrize(
    ("namespace", "queue", "name", "reason", "choices", "fragment"),
    [
        pytest.param(
            "ml-team",
            None,
            "h100-1g",
            Reason.UNKNOWN_SKU,
            ("a100-1g", "a100-half", "a100-x2", "shared"),
            "unknown SKU 'h100-1g'.",
            id="unknown-sku-with-choices",
        ),
        pytest.param(
            "ml-team",
            None,
            "l4-half",
            Reason.SKU_NOT_OFFERED,
            ("a100-1g", "a100-half", "a100-x2", "shared"),
            "SKU 'l4-half' is not offered in queue ml/train (pool a100).",
            id="sku-of-another-pool",
        ),
        pytest.param(
            "research",
            "inference",
            "l4-half",
            Reason.SKU_NOT_OFFERED,
            ("shared",),
            "not offered in queue ml/inference (pool l4)",
            id="sku-on-the-pool-but-not-in-the-queues-list",
        ),
        pytest.param(
            "prod-x",
            "batch",
            None,
            Reason.INVALID_REQUEST,
            ("a100-1g", "a100-half", "a100-x2", "shared"),
            "queue serving/batch has no default SKU",
            id="no-sku-and-no-default",
        ),
    ],
)
def test_resolve_sku_refuses(
    namespace: str,
    queue: str | None,
    name: str | None,
    reason: Reason,
    choices: tuple[str, ...],
    fragment: str,
) -> None:
    with pytest.raises(PlacementError) as info:
        placement.resolve_sku(ORG, target(namespace, queue), name)
    assert info.value.code is reason
    assert info.value.choices == choices
    assert fragment in str(info.value)
    assert str(info.value).endswith(f"Valid choices: {', '.join(choices)}.")


def test_offered_skus_is_sorted_and_narrowed_by_the_queue() -> None:
    assert ORG.offered_skus(ORG.queues[("ml", "train")]) == (
        "a100-1g",
        "a100-half",
        "a100-x2",
        "shared",
    )
    assert ORG.offered_skus(ORG.queues[("ml", "inference")]) == ("shared",)


# -- grant -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("namespace", "queue", "request_", "expected"),
    [
        pytest.param(
            "ml-team",
            None,
            SliceRequest(count=2),
            SliceGrant(
                count=2,
                memory_mib=40 * GIB,
                compute_pct=50,
                backend="hami",
                pool="a100",
                sku="a100-half",
            ),
            id="default-sku-memory-pct-on-the-pools-card",
        ),
        pytest.param(
            "ml-team",
            None,
            SliceRequest(count=1, sku="a100-x2"),
            SliceGrant(
                count=1,
                memory_mib=80 * GIB,
                compute_pct=100,
                backend="hami",
                pool="a100",
                sku="a100-x2",
                gpus_per_slice=2,
            ),
            id="multi-gpu-sku",
        ),
        pytest.param(
            "ml-serving",
            None,
            SliceRequest(count=1),
            SliceGrant(
                count=1,
                memory_mib=12 * GIB,
                compute_pct=50,
                backend="nvidia-mps",
                pool="l4",
                sku="l4-half",
            ),
            id="pools-backend",
        ),
        pytest.param(
            "ml-team",
            None,
            SliceRequest(count=2, custom=True, memory_mib=8 * GIB, compute_pct=30),
            SliceGrant(
                count=2,
                memory_mib=8 * GIB,
                compute_pct=30,
                backend="hami",
                pool="a100",
                sku=SKU_CUSTOM,
            ),
            id="hami-memory-mib-and-cores",
        ),
        pytest.param(
            "ml-team",
            None,
            SliceRequest(count=1, custom=True, memory_pct=25),
            SliceGrant(
                count=1,
                memory_mib=20 * GIB,
                compute_pct=100,
                backend="hami",
                pool="a100",
                sku=SKU_CUSTOM,
            ),
            id="hami-memory-percentage-and-default-cores",
        ),
        pytest.param(
            "ml-team",
            None,
            SliceRequest(count=1, custom=True),
            SliceGrant(
                count=1,
                memory_mib=80 * GIB,
                compute_pct=100,
                backend="hami",
                pool="a100",
                sku=SKU_CUSTOM,
            ),
            id="hami-nothing-given-is-a-whole-card",
        ),
        pytest.param(
            "ml-team",
            None,
            SliceRequest(count=1, custom=True, memory_mib=80 * GIB, compute_pct=100),
            SliceGrant(
                count=1,
                memory_mib=80 * GIB,
                compute_pct=100,
                backend="hami",
                pool="a100",
                sku=SKU_CUSTOM,
            ),
            id="hami-upper-bounds-inclusive",
        ),
        pytest.param(
            "ml-team",
            None,
            SliceRequest(count=1, custom=True, memory_mib=1, memory_pct=1, compute_pct=1),
            SliceGrant(
                count=1, memory_mib=1, compute_pct=1, backend="hami", pool="a100", sku=SKU_CUSTOM
            ),
            id="hami-lower-bounds-inclusive-mib-wins-over-pct",
        ),
    ],
)
def test_grant(
    namespace: str, queue: str | None, request_: SliceRequest, expected: SliceGrant
) -> None:
    assert placement.grant(ORG, target(namespace, queue), request_) == expected


@pytest.mark.parametrize(
    ("request_", "reason", "fragment"),
    [
        pytest.param(
            SliceRequest(count=0),
            Reason.INVALID_REQUEST,
            "GPU count must be a positive integer, got 0",
            id="zero-count",
        ),
        pytest.param(
            SliceRequest(count=-1, custom=True),
            Reason.INVALID_REQUEST,
            "got -1",
            id="negative-count-custom",
        ),
        pytest.param(
            SliceRequest(count=1, custom=True, memory_pct=0),
            Reason.INVALID_REQUEST,
            "GPU memory percentage must be 1..100, got 0",
            id="memory-pct-zero",
        ),
        pytest.param(
            SliceRequest(count=1, custom=True, memory_pct=101),
            Reason.INVALID_REQUEST,
            "got 101",
            id="memory-pct-above-100",
        ),
        pytest.param(
            SliceRequest(count=1, custom=True, memory_mib=80 * GIB + 1),
            Reason.INVALID_REQUEST,
            "GPU memory per GPU must be 1..81920 MiB (a whole A100-80GB card in pool a100), "
            "got 81921 MiB",
            id="memory-above-a-card",
        ),
        pytest.param(
            SliceRequest(count=1, custom=True, memory_mib=0),
            Reason.INVALID_REQUEST,
            "got 0 MiB",
            id="memory-zero",
        ),
        pytest.param(
            SliceRequest(count=1, custom=True, compute_pct=0),
            Reason.INVALID_REQUEST,
            "GPU cores per GPU must be 1..100 percent, got 0",
            id="cores-zero",
        ),
        pytest.param(
            SliceRequest(count=1, custom=True, compute_pct=101),
            Reason.INVALID_REQUEST,
            "got 101",
            id="cores-above-100",
        ),
        pytest.param(
            SliceRequest(count=1, sku="nope"),
            Reason.UNKNOWN_SKU,
            "unknown SKU 'nope'",
            id="unknown-sku",
        ),
    ],
)
def test_grant_refuses_invalid_shapes(
    request_: SliceRequest, reason: Reason, fragment: str
) -> None:
    with pytest.raises(PlacementError) as info:
        placement.grant(ORG, target(), request_)
    assert info.value.code is reason
    assert fragment in str(info.value)


def test_grant_amount_is_counted_as_sold() -> None:
    g = placement.grant(
        ORG, target(), SliceRequest(count=2, custom=True, memory_mib=8 * GIB, compute_pct=30)
    )
    assert Resources.of_grant(g) == Resources(slices=2, memory_mib=16 * GIB, compute_pct=60)
    multi = placement.grant(ORG, target(), SliceRequest(count=3, sku="a100-x2"))
    assert Resources.of_grant(multi) == Resources(
        slices=3, memory_mib=6 * 80 * GIB, compute_pct=600
    )
    # The ledger's demand and the grant agree.
    pool = ORG.pools["a100"]
    assert Resources.of_grant(multi) == ORG.skus["a100-x2"].demand(3, pool)


# -- pod_sku -------------------------------------------------------------------------------


def _grant(sku: str) -> SliceGrant:
    return SliceGrant(count=1, memory_mib=1, compute_pct=1, backend="hami", pool="a100", sku=sku)


@pytest.mark.parametrize(
    ("grants", "expected"),
    [
        pytest.param({}, SKU_CUSTOM, id="no-grants-is-custom"),
        pytest.param({"a": _grant("a100-1g")}, "a100-1g", id="one-container"),
        pytest.param(
            {"a": _grant("a100-1g"), "b": _grant("a100-1g")}, "a100-1g", id="same-sku-twice"
        ),
        pytest.param({"a": _grant(SKU_CUSTOM)}, SKU_CUSTOM, id="hami-form"),
    ],
)
def test_pod_sku(grants: dict[str, SliceGrant], expected: str) -> None:
    assert placement.pod_sku(grants) == expected


def test_pod_with_several_skus_is_refused() -> None:
    with pytest.raises(PlacementError) as info:
        placement.pod_sku({"b": _grant("a100-1g"), "a": _grant(SKU_CUSTOM), "c": _grant("a100-1g")})
    assert info.value.code is Reason.INVALID_REQUEST
    assert "its containers ask for a100-1g, custom" in str(info.value)
