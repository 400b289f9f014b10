"""Rendering charts/gpupool with the real Helm library (helm-python-sdk), for the chart,
CEL and alert tests.

helm-python-sdk renders offline at a fixed Kubernetes version (1.36 in 0.2.2) and its
``lookup`` returns nothing, as ``helm template`` does.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[2] / "charts" / "gpupool"
RELEASE = "gpupool"
NAMESPACE = "gpu-platform"

TEST_CA = """-----BEGIN CERTIFICATE-----
MIIBdzCCAR2gAwIBAgIUJ1fM0mZ5r0p0yq6m3z5f5m2l7WAwCgYIKoZIzj0EAwIw
-----END CERTIFICATE-----"""
"""A PEM-shaped bundle: the chart copies it into a ConfigMap and never parses it."""

POSTGRES = {"store": {"type": "postgresql", "postgresql": {"existingSecret": "gpupool-db"}}}
CONSOLE = {
    "console": {
        "enabled": True,
        "prometheusUrl": "http://prometheus-operated.monitoring:9090",
        "oauth2Proxy": {
            "oidcIssuerUrl": "https://login.example.com/realms/gpu",
            "existingSecret": "gpupool-console-oidc",
        },
    }
}
MONITORING = {
    "monitoring": {
        "serviceMonitor": {"enabled": True},
        "podMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "grafanaDashboard": {"enabled": True},
    }
}
EXAMPLE_ORG = Path(__file__).resolve().parents[2] / "examples" / "org.yaml"
ORGANISATION = {"organisation": {"config": yaml.safe_load(EXAMPLE_ORG.read_text())}}


def merge(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge values layers, later ones winning (as helm's -f files do)."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, Mapping) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = value
    return out


COMBINATIONS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "cert-manager": {"tls": {"certManager": {"enabled": True}}},
    "cert-manager-own-issuer": {
        "tls": {
            "certManager": {"enabled": True, "issuerRef": {"name": "ca", "kind": "ClusterIssuer"}}
        }
    },
    "postgresql": POSTGRES,
    "postgresql-url": {
        "store": {"type": "postgresql", "postgresql": {"url": "postgresql://gp:pw@db/gp"}}
    },
    "monitoring": MONITORING,
    "console": CONSOLE,
    "console-ingress": merge(
        CONSOLE,
        {
            "console": {
                "ingress": {"enabled": True, "host": "gpu.example.com", "tlsSecretName": "gpu-tls"}
            }
        },
    ),
    "console-inline-credentials": merge(
        CONSOLE,
        {
            "console": {
                "oauth2Proxy": {
                    "existingSecret": "",
                    "clientID": "gpupool",
                    "clientSecret": "s3cret",
                    "cookieSecret": "0123456789abcdef0123456789abcdef",
                }
            }
        },
    ),
    "organisation": ORGANISATION,
    "client-ca-bundle": {"webhook": {"clientAuth": {"caBundle": TEST_CA}}},
    "unauthenticated": {"webhook": {"clientAuth": {"mode": "unauthenticated"}}},
    "exporter-hostpid-no-podresources": {"exporter": {"hostPID": True, "podResources": False}},
    "exporter-off": {"exporter": {"enabled": False}},
    "everything-ha": merge(
        POSTGRES,
        CONSOLE,
        MONITORING,
        ORGANISATION,
        {
            "tls": {"certManager": {"enabled": True}},
            "webhook": {"replicas": 3, "excludedNamespaces": ["gpu-operator"]},
            "console": {"ingress": {"enabled": True, "host": "gpu.example.com"}},
            "image": {"digest": "sha256:" + "a" * 64},
        },
    ),
}
"""Each notable combination of values the tests render, by name."""


def render(values: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Template path -> rendered text, as `helm template` would print them."""
    return dict(_render(json.dumps(values or {}, sort_keys=True)))


@functools.lru_cache(maxsize=64)
def _render(values_json: str) -> tuple[tuple[str, str], ...]:
    """One rendering per set of values (the chart's files do not change during a run)."""
    import helm_python

    with helm_python.Chart.load(CHART) as chart:
        rendered = chart.render(json.loads(values_json), name=RELEASE, namespace=NAMESPACE)
    return tuple(rendered.items())


def manifests(values: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every Kubernetes object the chart renders (hooks included, NOTES.txt not)."""
    return list(_objects(render(values)))


def _objects(rendered: Mapping[str, str]) -> Iterator[dict[str, Any]]:
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                yield doc


def find(objects: list[dict[str, Any]], kind: str, suffix: str = "") -> dict[str, Any]:
    """The one object of ``kind`` whose name ends with ``suffix``."""
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(suffix)]
    if len(found) != 1:
        names = [o["metadata"]["name"] for o in objects if o["kind"] == kind]
        raise AssertionError(f"expected one {kind} ending in {suffix!r}, found {names}")
    return found[0]
