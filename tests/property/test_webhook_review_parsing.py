"""No body makes the webhook crash or answer 500: arbitrary JSON, and well-formed
AdmissionReviews whose pod fields are replaced by arbitrary values (served over HTTPS
on loopback, one connection kept alive)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from governance.contract import Reason
from governance.storage.store import Store
from tests.support import admission as A

pytestmark = pytest.mark.property

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
quantities = st.one_of(
    st.text(alphabet="0123456789.-+eEmkMGiKT ", max_size=8),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["1", "2", "0", "1.5", "-1", "8Gi", "1000m", "", "1e3", "80000"]),
)
resource_names = st.sampled_from(
    [
        "nvidia.com/gpu",
        "nvidia.com/gpumem",
        "nvidia.com/gpumem-percentage",
        "nvidia.com/gpucores",
        "gpupool.io/small",
        "gpupool.io/nope",
        "gpupool.io/",
        "nvidia.com/mig-1g.10gb",
        "cpu",
        "memory",
    ]
)
label_values = st.sampled_from(["small", "large", "custom", "", "h100", "train", "serve", "x"])


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    path: Path = tmp_path_factory.mktemp("prop")
    store = Store(f"sqlite:///{path / 'gpupool.db'}")
    A.apply_org(store)
    with A.serve(store, path) as hook, hook.client() as c:
        yield c
    store.close()


def _check(client: httpx.Client, content: bytes) -> None:
    r = client.post("/mutate", content=content, headers={"content-type": "application/json"})
    assert r.status_code in (200, 400, 413), r.text
    body = r.json()
    if r.status_code == 200:
        response = body["response"]
        assert isinstance(response["allowed"], bool)
        if not response["allowed"]:
            assert response["status"]["reason"] != Reason.INTERNAL_ERROR.value, response
            assert response["status"]["message"]
    else:
        assert body["reason"] == Reason.MALFORMED_REVIEW.value and body["message"]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=json_values)
def test_arbitrary_json_never_crashes(client: httpx.Client, value: Any) -> None:
    _check(client, json.dumps(value).encode())


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_never_crash(client: httpx.Client, data: bytes) -> None:
    _check(client, data)


@settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    limits=st.dictionaries(resource_names, quantities, max_size=4),
    requests=st.dictionaries(resource_names, quantities, max_size=3),
    labels=st.dictionaries(
        st.sampled_from(["gpupool.io/sku", "gpupool.io/queue", "app"]), label_values, max_size=3
    ),
    operation=st.sampled_from(["CREATE", "UPDATE", "DELETE", "CONNECT"]),
    namespace=st.sampled_from(["ml", "lab", "scratch", "", "vision"]),
    replace=st.sampled_from(
        [
            None,
            "spec",
            "metadata",
            "containers",
            "resources",
            "labels",
            "userInfo",
            "kind",
            "uid",
            "dryRun",
        ]
    ),
    junk=json_values,
    init=st.booleans(),
)
def test_fuzzed_pods_never_crash(
    client: httpx.Client,
    limits: dict[str, Any],
    requests: dict[str, Any],
    labels: dict[str, str],
    operation: str,
    namespace: str,
    replace: str | None,
    junk: Any,
    init: bool,
) -> None:
    body = A.review(
        A.pod(A.container(), namespace=namespace or "ml"),
        operation=operation,
        namespace=namespace,
        old=A.pod(A.container()),
    )
    pod = body["request"]["object"]
    target = pod["spec"]["initContainers" if init else "containers"] = pod["spec"]["containers"]
    target[0]["resources"] = {"limits": limits, "requests": requests}
    pod["metadata"]["labels"] = labels
    if replace == "spec":
        pod["spec"] = junk
    elif replace == "metadata":
        pod["metadata"] = junk
    elif replace == "containers":
        pod["spec"]["containers"] = junk
    elif replace == "resources":
        target[0]["resources"] = junk
    elif replace == "labels":
        pod["metadata"]["labels"] = junk
    elif replace is not None:
        body["request"][replace] = junk
    try:
        content = json.dumps(body, allow_nan=True).encode()
    except (ValueError, OverflowError):
        return
    _check(client, content)
