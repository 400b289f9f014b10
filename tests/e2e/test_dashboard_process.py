"""``gpupool dashboard`` as a process: a configuration applied to a real store, an
exporter served over HTTP, identities from proxy headers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dashboard.pages import overview as overview_page
from governance.storage import revisions
from governance.storage.store import Store
from tests.support import dashboard as sup
from tests.support.org import org_document

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
OVERVIEW = list(overview_page.Outputs.spec())


@pytest.fixture
def console(tmp_path: Path) -> Iterator[str]:
    store_url = f"sqlite:///{tmp_path / 'gpupool.db'}"
    store = Store(store_url)
    org = revisions.apply(store, org_document(), source="test").org
    store.close()
    with (
        sup.exporter_server(sup.exposition(sup.make_fleet(org))) as exporter,
        sup.console_process(
            *("--store", store_url, "--exporter", exporter, "--trust-proxy-headers"),
            *("--scrape-interval", "5"),
        ) as (url, _),
    ):
        yield url


def overview(url: str, headers: dict[str, str]) -> httpx.Response:
    body = sup.callback_body(OVERVIEW, [("range", "value", "1h"), ("tick", "n_intervals", 0)])
    return httpx.post(f"{url}/_dash-update-component", json=body, headers=headers, timeout=30)


def test_the_console_serves_the_applied_organisation_per_viewer(console: str) -> None:
    assert httpx.get(f"{console}/").status_code == 401
    page = httpx.get(f"{console}/", headers={"X-Forwarded-User": "root"})
    assert page.status_code == 200 and "gpupool console" in page.text
    admin = overview(console, {"X-Forwarded-User": "root"})
    assert admin.status_code == 200
    assert "Pool capacity" in admin.text and "8 GPUs" in admin.text
    assert '"department": "ml"' in admin.text.replace('":"', '": "')
    member = overview(console, {"X-Forwarded-User": "ana", "X-Forwarded-Groups": "ml-team"})
    assert "Pool capacity" not in member.text and "Slice utilisation" in member.text
    stranger = overview(console, {"X-Forwarded-User": "eve", "X-Forwarded-Groups": "other"})
    assert "No department to show" in stranger.text and "ml-" not in stranger.text
