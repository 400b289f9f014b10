"""charts/gpupool rendered by the real Helm library, linted, and validated against the
Kubernetes API schemas (kubernetes-validate) of 1.30 and the newest version it ships.

Every notable combination of values (tests/support/chart.py, COMBINATIONS) is rendered;
then the objects are checked for what the components need: the agreed command lines,
the store wiring, the security contexts, the webhook configuration, the TLS paths.
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import chart

helm_python = pytest.importorskip("helm_python", reason="helm-python-sdk is not installed")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.latest_version())
CRD_KINDS = {
    ("cert-manager.io/v1", "Certificate"),
    ("cert-manager.io/v1", "Issuer"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
"""Kinds of CRDs that kubernetes-validate has no schema for (checked by their own
structure below)."""

COMBINATIONS = pytest.mark.parametrize(
    "values", [pytest.param(v, id=name) for name, v in chart.COMBINATIONS.items()]
)


def _containers(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in obj["spec"]["template"]["spec"]["containers"]}


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def _mounts(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in container.get("volumeMounts", [])}


# -- lint and schemas ---------------------------------------------------------------


@COMBINATIONS
def test_helm_lint_reports_nothing_of_severity_warning_or_more(values: dict[str, Any]) -> None:
    # helm-python-sdk's lint never fails by itself: severity 2 is a warning, 3 an error.
    report = helm_python.lint(chart.CHART, values, namespace=chart.NAMESPACE, strict=True)
    serious = [m for m in report["messages"] if m["severity"] >= 2]
    assert serious == [], serious
    assert report["errors"] == []


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_of_every_combination_is_valid_for_kubernetes(version: str) -> None:
    # Most objects are the same in several combinations: each distinct one once.
    distinct: dict[str, tuple[str, dict[str, Any]]] = {}
    for name, values in chart.COMBINATIONS.items():
        for obj in chart.manifests(values):
            if (obj["apiVersion"], obj["kind"]) not in CRD_KINDS:
                distinct.setdefault(json.dumps(obj, sort_keys=True), (name, obj))
    invalid = []
    for name, obj in distinct.values():
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            invalid.append(f"{name}: {obj['kind']}/{obj['metadata']['name']}: {exc.message}")
    assert invalid == []
    assert len(distinct) >= 50


def test_only_crd_kinds_are_left_to_their_own_checks() -> None:
    kinds = {
        (o["apiVersion"], o["kind"]) for o in chart.manifests(chart.COMBINATIONS["everything-ha"])
    }
    unknown = []
    for api_version, kind in kinds - CRD_KINDS:
        try:
            kubernetes_validate.validate(
                {"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}}, "1.30"
            )
        except kubernetes_validate.SchemaNotFoundError:
            unknown.append(kind)
        except kubernetes_validate.ValidationError:
            pass
    assert unknown == []
    assert {kind for _, kind in kinds & CRD_KINDS} == {k for _, k in CRD_KINDS}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param(
            {"store": {"type": "mysql"}},
            "at '/store/type': value must be one of 'sqlite', 'postgresql'",
            id="unknown-store",
        ),
        pytest.param(
            {"webhook": {"timeoutSeconds": 45}},
            "at '/webhook/timeoutSeconds': maximum: got 45, want 30",
            id="timeout-over-30",
        ),
        pytest.param(
            {"webhook": {"failurePolicy": "fail"}},
            "at '/webhook/failurePolicy': value must be one of 'Fail', 'Ignore'",
            id="failure-policy-case",
        ),
        pytest.param(
            {"webhok": {"replicas": 2}},
            "additional properties 'webhok' not allowed",
            id="misspelt-key",
        ),
        pytest.param(
            {"webhook": {"replicas": 0}},
            "at '/webhook/replicas': minimum: got 0, want 1",
            id="no-replicas",
        ),
        pytest.param(
            {"webhook": {"clientAuth": {"mode": "none"}}},
            "at '/webhook/clientAuth/mode': value must be one of 'clientCA', 'unauthenticated'",
            id="client-auth-mode",
        ),
        pytest.param(
            {"logLevel": "INFO-ish"},
            "at '/logLevel': value must be one of 'debug', 'info', 'warning', 'error'",
            id="log-level",
        ),
        pytest.param(
            {"image": {"digest": "latest"}},
            "at '/image/digest': 'latest' does not match pattern",
            id="digest",
        ),
        pytest.param(
            {"store": {"type": "postgresql", "postgresql": {"url": "mysql://db/gp"}}},
            "at '/store/postgresql/url': 'mysql://db/gp' does not match pattern",
            id="store-url-scheme",
        ),
        pytest.param(
            {"admissionPolicy": {"validationActions": ["Reject"]}},
            "at '/admissionPolicy/validationActions/0': value must be one of 'Deny', 'Warn'",
            id="validation-action",
        ),
        pytest.param(
            {"webhook": {"resources": {"limits": {"memory": "lots"}}}},
            "at '/webhook/resources/limits/memory'",
            id="quantity",
        ),
    ],
)
def test_schema_rejects_bad_values_naming_the_key(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmValuesError) as caught:
        chart.render(values)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param(
            {"webhook": {"replicas": 2}},
            "webhook.replicas is 2, but store.type is sqlite: SQLite serves one webhook replica",
            id="two-webhooks-on-sqlite",
        ),
        pytest.param(
            {"reconciler": {"replicas": 2}},
            "reconciler.replicas is more than 1, but store.type is sqlite",
            id="two-reconcilers-on-sqlite",
        ),
        pytest.param(
            {"store": {"type": "postgresql"}},
            "store.type is postgresql but no server is named: set store.postgresql.existingSecret",
            id="postgresql-without-server",
        ),
        pytest.param(
            {"webhook": {"requestBudgetSeconds": 10}},
            "webhook.requestBudgetSeconds (10) must be below webhook.timeoutSeconds (10)",
            id="budget-not-below-timeout",
        ),
        pytest.param(
            {"organisation": {"config": {"pools": []}, "existingConfigMap": "org"}},
            "give either organisation.config",
            id="two-organisations",
        ),
        pytest.param(
            {"webhook": {"clientAuth": {"caConfigMap": ""}}},
            "webhook.clientAuth.mode is clientCA but no CA is given",
            id="client-ca-without-ca",
        ),
        pytest.param(
            {"webhook": {"allowUnownedNamespaces": True}},
            "set admissionPolicy.namespaceSelector",
            id="unowned-namespaces-vs-policy",
        ),
        pytest.param(
            chart.merge(chart.CONSOLE, {"console": {"prometheusUrl": ""}}),
            "console.prometheusUrl is empty",
            id="console-without-prometheus",
        ),
        pytest.param(
            chart.merge(chart.CONSOLE, {"console": {"oauth2Proxy": {"oidcIssuerUrl": ""}}}),
            "console.oauth2Proxy.oidcIssuerUrl is empty",
            id="console-without-issuer",
        ),
        pytest.param(
            chart.merge(chart.CONSOLE, {"console": {"oauth2Proxy": {"existingSecret": ""}}}),
            "oauth2-proxy has no credentials",
            id="console-without-credentials",
        ),
        pytest.param(
            chart.merge(chart.CONSOLE, {"console": {"ingress": {"enabled": True}}}),
            "console.ingress.host is empty",
            id="ingress-without-host",
        ),
    ],
)
def test_inconsistent_values_fail_with_what_to_do(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmRenderError) as caught:
        chart.render(values)
    assert message in str(caught.value)


# -- the webhook ----------------------------------------------------------------------


def test_webhook_replicas_follow_the_store() -> None:
    sqlite = chart.find(chart.manifests(), "Deployment", "-webhook")
    postgres = chart.find(chart.manifests(chart.POSTGRES), "Deployment", "-webhook")
    assert sqlite["spec"]["replicas"] == 1
    assert sqlite["spec"]["strategy"] == {"type": "Recreate"}
    assert postgres["spec"]["replicas"] == 2
    assert "strategy" not in postgres["spec"]
    spread = postgres["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    term = spread["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"] == postgres["spec"]["selector"]["matchLabels"]
    pdb = chart.find(chart.manifests(chart.POSTGRES), "PodDisruptionBudget", "-webhook")
    assert pdb["spec"]["selector"] == postgres["spec"]["selector"]
    assert pdb["spec"]["maxUnavailable"] == 1


def test_webhook_runs_the_agreed_command_line() -> None:
    objects = chart.manifests(chart.ORGANISATION)
    webhook = _containers(chart.find(objects, "Deployment", "-webhook"))["webhook"]
    args = webhook["args"]
    assert args[0] == "webhook"
    for flag in (
        "--config=/etc/gpupool/org.yaml",
        "--tls-cert=/tls/tls.crt",
        "--tls-key=/tls/tls.key",
        "--client-ca=/client-ca/ca.crt",
        "--host=0.0.0.0",
        "--port=8443",
        "--request-budget=8",
        "--trusted-controller=system:serviceaccount:kube-system:*",
        "--trusted-controller=system:kube-controller-manager",
        "--log-level=info",
    ):
        assert flag in args
    assert "--allow-unauthenticated" not in args
    mounts = _mounts(webhook)
    assert {"/tls", "/client-ca", "/etc/gpupool", "/data", "/tmp"} <= set(mounts)
    assert all(mounts[p]["readOnly"] for p in ("/tls", "/client-ca", "/etc/gpupool"))
    assert webhook["livenessProbe"]["httpGet"] == {
        "path": "/healthz",
        "port": "https",
        "scheme": "HTTPS",
    }
    assert webhook["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_webhook_without_client_ca_says_so_explicitly() -> None:
    values = {"webhook": {"clientAuth": {"mode": "unauthenticated"}}}
    webhook = _containers(chart.find(chart.manifests(values), "Deployment", "-webhook"))["webhook"]
    assert "--allow-unauthenticated" in webhook["args"]
    assert not [a for a in webhook["args"] if a.startswith("--client-ca")]
    assert "/client-ca" not in _mounts(webhook)
    notes = chart.render(values)["gpupool/templates/NOTES.txt"]
    assert "WARNING: webhook.clientAuth.mode=unauthenticated" in notes


def test_client_ca_comes_from_the_cluster_ca_or_a_given_bundle() -> None:
    default = chart.find(chart.manifests(), "Deployment", "-webhook")
    volumes = {v["name"]: v for v in default["spec"]["template"]["spec"]["volumes"]}
    assert volumes["client-ca"]["configMap"]["name"] == "kube-root-ca.crt"
    values = {"webhook": {"clientAuth": {"caBundle": chart.TEST_CA}}}
    objects = chart.manifests(values)
    bundle = chart.find(objects, "ConfigMap", "-client-ca")
    assert bundle["data"]["ca.crt"].strip() == chart.TEST_CA
    deployment = chart.find(objects, "Deployment", "-webhook")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["client-ca"]["configMap"]["name"] == bundle["metadata"]["name"]


def test_mutating_webhook_configuration_fails_closed_and_skips_system_namespaces() -> None:
    values = {"webhook": {"excludedNamespaces": ["gpu-operator"]}}
    objects = chart.manifests(values)
    config = chart.find(objects, "MutatingWebhookConfiguration")
    (hook,) = config["webhooks"]
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["sideEffects"] == "NoneOnDryRun"
    assert hook["failurePolicy"] == "Fail"
    assert hook["reinvocationPolicy"] == "IfNeeded"
    assert hook["timeoutSeconds"] == 10
    assert hook["rules"][0]["operations"] == ["CREATE", "UPDATE"]
    assert hook["rules"][0]["resources"] == ["pods"]
    (expression,) = hook["namespaceSelector"]["matchExpressions"]
    assert expression["key"] == "kubernetes.io/metadata.name"
    assert expression["operator"] == "NotIn"
    assert expression["values"] == ["kube-system", chart.NAMESPACE, "gpu-operator"]
    service = chart.find(objects, "Service", "-webhook")
    assert hook["clientConfig"]["service"] == {
        "name": service["metadata"]["name"],
        "namespace": chart.NAMESPACE,
        "path": "/mutate",
        "port": service["spec"]["ports"][0]["port"],
    }
    assert [c["name"] for c in hook["matchConditions"]] == ["gpu-or-gpupool-pod"]
    binding = chart.find(objects, "ValidatingAdmissionPolicyBinding")
    policy_selector = binding["spec"]["matchResources"]["namespaceSelector"]
    assert policy_selector == hook["namespaceSelector"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    policy = chart.find(objects, "ValidatingAdmissionPolicy")
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert policy["spec"]["failurePolicy"] == "Fail"


def test_admission_policy_can_be_watched_before_it_denies() -> None:
    values = {"admissionPolicy": {"validationActions": ["Warn", "Audit"]}}
    binding = chart.find(chart.manifests(values), "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["validationActions"] == ["Warn", "Audit"]
    off = chart.manifests({"admissionPolicy": {"enabled": False}})
    assert not [o for o in off if o["kind"].startswith("ValidatingAdmissionPolicy")]


# -- TLS --------------------------------------------------------------------------------


def test_cert_manager_issues_the_secret_the_webhook_mounts_and_injects_its_ca() -> None:
    objects = chart.manifests({"tls": {"certManager": {"enabled": True}}})
    certificate = chart.find(objects, "Certificate", "-webhook")
    deployment = chart.find(objects, "Deployment", "-webhook")
    service = chart.find(objects, "Service", "-webhook")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == certificate["spec"]["secretName"]
    svc = service["metadata"]["name"]
    assert f"{svc}.{chart.NAMESPACE}.svc" in certificate["spec"]["dnsNames"]
    assert certificate["spec"]["privateKey"]["rotationPolicy"] == "Always"
    config = chart.find(objects, "MutatingWebhookConfiguration")
    injected = config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
    assert injected == f"{chart.NAMESPACE}/{certificate['metadata']['name']}"
    issuer = chart.find(objects, "Issuer", "-ca")
    assert certificate["spec"]["issuerRef"] == {
        "name": issuer["metadata"]["name"],
        "kind": "Issuer",
    }
    assert not [o for o in objects if o["kind"] == "Job"]


def test_without_cert_manager_hook_jobs_make_the_secret_then_patch_the_ca_in() -> None:
    objects = chart.manifests()
    deployment = chart.find(objects, "Deployment", "-webhook")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    secret = volumes["tls"]["secret"]["secretName"]
    create = chart.find(objects, "Job", "-certgen-create")
    patch = chart.find(objects, "Job", "-certgen-patch")
    assert create["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert patch["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    create_args = create["spec"]["template"]["spec"]["containers"][0]["args"]
    patch_args = patch["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--secret-name={secret}" in create_args
    assert f"--secret-name={secret}" in patch_args
    assert "--cert-name=tls.crt" in create_args and "--key-name=tls.key" in create_args
    config = chart.find(objects, "MutatingWebhookConfiguration")
    assert f"--webhook-name={config['metadata']['name']}" in patch_args
    assert "--patch-validating=false" in patch_args
    role = chart.find(objects, "ClusterRole", "-certgen")
    assert role["rules"] == [
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["mutatingwebhookconfigurations"],
            "resourceNames": [config["metadata"]["name"]],
            "verbs": ["get", "update", "patch"],
        }
    ]
    # Every object the Jobs need exists before them: hooks of the same phases.
    for kind in ("ServiceAccount", "Role", "RoleBinding", "ClusterRoleBinding"):
        hooks = chart.find(objects, kind, "-certgen")["metadata"]["annotations"]["helm.sh/hook"]
        assert set(hooks.split(",")) >= {"pre-install", "pre-upgrade", "post-install"}


# -- store, reconciler, exporter, console -------------------------------------------


def test_sqlite_store_is_one_volume_on_the_webhooks_node() -> None:
    objects = chart.manifests(chart.CONSOLE)
    claim = chart.find(objects, "PersistentVolumeClaim", "-store")
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    webhook_labels = chart.find(objects, "Deployment", "-webhook")["spec"]["selector"][
        "matchLabels"
    ]
    for suffix in ("-webhook", "-reconciler", "-console"):
        deployment = chart.find(objects, "Deployment", suffix)
        pod = deployment["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["store"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
        main = pod["containers"][0]
        assert _env(main)["GPUPOOL_STORE"] == "sqlite:////data/gpupool.db"
        assert "/data" in _mounts(main)
        if suffix != "-webhook":
            required = pod["affinity"]["podAffinity"][
                "requiredDuringSchedulingIgnoredDuringExecution"
            ]
            assert required[0]["labelSelector"]["matchLabels"] == webhook_labels
            assert required[0]["topologyKey"] == "kubernetes.io/hostname"


def test_postgresql_store_comes_from_a_secret() -> None:
    objects = chart.manifests(chart.merge(chart.POSTGRES, chart.CONSOLE))
    assert not [o for o in objects if o["kind"] == "PersistentVolumeClaim"]
    for suffix in ("-webhook", "-reconciler", "-console"):
        main = _containers(chart.find(objects, "Deployment", suffix))
        store = _env(next(iter(main.values())))["GPUPOOL_STORE"]
        assert store == {"secretKeyRef": {"name": "gpupool-db", "key": "url"}}
    inline = chart.manifests(chart.COMBINATIONS["postgresql-url"])
    secret = chart.find(inline, "Secret", "-store")
    assert secret["stringData"] == {"url": "postgresql://gp:pw@db/gp"}


def test_reconciler_elects_a_leader_on_its_own_lease() -> None:
    objects = chart.manifests(chart.POSTGRES)
    deployment = chart.find(objects, "Deployment", "-reconciler")
    name = deployment["metadata"]["name"]
    container = _containers(deployment)["reconciler"]
    assert container["args"][:5] == [
        "reconciler",
        f"--lease-name={name}",
        f"--lease-namespace={chart.NAMESPACE}",
        "--health-port=8081",
        "--log-level=info",
    ]
    assert deployment["spec"]["replicas"] == 2
    role = chart.find(objects, "Role", "-reconciler-lease")
    assert {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "resourceNames": [name],
        "verbs": ["get", "update"],
    } in role["rules"]
    cluster_role = chart.find(objects, "ClusterRole", "-reconciler")
    pods = next(r for r in cluster_role["rules"] if r["resources"] == ["pods"])
    assert pods["verbs"] == ["get", "list", "watch"]
    events = next(r for r in cluster_role["rules"] if r["resources"] == ["events"])
    assert "create" in events["verbs"]


def test_exporter_runs_on_gpu_nodes_with_the_least_host_access() -> None:
    objects = chart.manifests()
    daemonset = chart.find(objects, "DaemonSet", "-exporter")
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert "hostPID" not in pod and "hostNetwork" not in pod
    container = pod["containers"][0]
    assert _env(container)["NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert "--proc-root=/host/proc" in container["args"]
    assert "--backend=nvml" in container["args"] and "--port=9400" in container["args"]
    mounts = _mounts(container)
    assert mounts["/host/proc"]["readOnly"] is True
    assert mounts["/var/lib/kubelet/pod-resources"]["readOnly"] is True
    security = container["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    # root only for the kubelet's socket; without it, a high uid.
    assert security["runAsUser"] == 0
    plain = chart.find(chart.manifests({"exporter": {"podResources": False}}), "DaemonSet")
    plain_container = plain["spec"]["template"]["spec"]["containers"][0]
    assert plain_container["securityContext"]["runAsUser"] == 10001
    assert "/var/lib/kubelet/pod-resources" not in _mounts(plain_container)
    host_pid = chart.find(chart.manifests({"exporter": {"hostPID": True}}), "DaemonSet")
    assert host_pid["spec"]["template"]["spec"]["hostPID"] is True
    host_pid_container = host_pid["spec"]["template"]["spec"]["containers"][0]
    assert "--proc-root=/proc" in host_pid_container["args"]
    assert "/host/proc" not in _mounts(host_pid_container)


def test_console_is_reachable_only_through_oauth2_proxy() -> None:
    objects = chart.manifests(chart.COMBINATIONS["console-ingress"])
    deployment = chart.find(objects, "Deployment", "-console")
    containers = _containers(deployment)
    console = containers["console"]
    for flag in (
        "--trust-proxy-headers",
        "--trusted-proxy=127.0.0.1/32",
        "--host=127.0.0.1",
        "--port=8050",
        "--workers=2",
        "--prometheus=http://prometheus-operated.monitoring:9090",
    ):
        assert flag in console["args"]
    assert "ports" not in console
    proxy = containers["oauth2-proxy"]
    assert "--upstream=http://127.0.0.1:8050/" in proxy["args"]
    assert "--pass-user-headers=true" in proxy["args"]
    assert [p["containerPort"] for p in proxy["ports"]] == [4180]
    service = chart.find(objects, "Service", "-console")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    ingress = chart.find(objects, "Ingress", "-console")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": service["metadata"]["name"], "port": {"name": "http"}}
    policy = chart.find(objects, "NetworkPolicy", "-console")
    assert policy["spec"]["ingress"] == [{"ports": [{"port": 4180, "protocol": "TCP"}]}]


# -- security, RBAC -------------------------------------------------------------------


@COMBINATIONS
def test_every_container_is_locked_down(values: dict[str, Any]) -> None:
    for obj in chart.manifests(values):
        if obj["kind"] not in ("Deployment", "DaemonSet", "Job"):
            continue
        pod = obj["spec"]["template"]["spec"]
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"]:
            where = f"{obj['kind']}/{obj['metadata']['name']}/{container['name']}"
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["capabilities"] == {"drop": ["ALL"]}, where
            assert security.get("privileged", False) is False, where
            assert "limits" in container["resources"] and "requests" in container["resources"]
            if obj["kind"] != "DaemonSet":
                assert security["runAsNonRoot"] is True, where
                assert security["runAsUser"] >= 10000, where


def test_rbac_grants_no_wildcards_and_no_secrets_cluster_wide() -> None:
    objects = chart.manifests(chart.COMBINATIONS["everything-ha"]) + chart.manifests()
    for role in (o for o in objects if o["kind"] in ("ClusterRole", "Role")):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], role
            if role["kind"] == "ClusterRole":
                assert "secrets" not in rule["resources"], role
    tokens = {
        o["metadata"]["name"].rsplit("-", 1)[-1]: o["automountServiceAccountToken"]
        for o in chart.manifests(chart.CONSOLE)
        if o["kind"] == "ServiceAccount"
    }
    assert tokens == {
        "webhook": False,
        "console": False,
        "reconciler": True,
        "exporter": True,
        "certgen": True,
    }


# -- organisation, monitoring, files ------------------------------------------------


def test_organisation_values_reach_the_webhook_as_the_file_gpupool_applies() -> None:
    from governance import config

    objects = chart.manifests(chart.ORGANISATION)
    config_map = chart.find(objects, "ConfigMap", "-organisation")
    text = config_map["data"]["org.yaml"]
    assert yaml.safe_load(text) == yaml.safe_load(chart.EXAMPLE_ORG.read_text())
    org = config.build_org(config.load_document(text, source="org.yaml"))
    assert org.departments
    deployment = chart.find(objects, "Deployment", "-webhook")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["organisation"]["configMap"]["name"] == config_map["metadata"]["name"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["checksum/organisation"]
    existing = {"organisation": {"existingConfigMap": "my-org", "existingConfigMapKey": "o.yaml"}}
    deployment = chart.find(chart.manifests(existing), "Deployment", "-webhook")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["organisation"]["configMap"] == {
        "name": "my-org",
        "items": [{"key": "o.yaml", "path": "org.yaml"}],
    }
    bare = _containers(chart.find(chart.manifests(), "Deployment", "-webhook"))["webhook"]
    assert not [a for a in bare["args"] if a.startswith("--config")]
    assert "No organisation is configured" in chart.render()["gpupool/templates/NOTES.txt"]


def test_monitoring_crds_appear_only_when_asked_for() -> None:
    kinds = {o["kind"] for o in chart.manifests()}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
    objects = chart.manifests(chart.MONITORING)
    rule = chart.find(objects, "PrometheusRule")
    files = chart.CHART / "files"
    expected = [
        *yaml.safe_load((files / "recording-rules.yaml").read_text())["groups"],
        *yaml.safe_load((files / "alerts.yaml").read_text())["groups"],
    ]
    assert rule["spec"]["groups"] == expected
    monitor = chart.find(objects, "ServiceMonitor", "-webhook")
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["scheme"] == "https" and endpoint["port"] == "https"
    assert endpoint["tlsConfig"]["ca"]["secret"]["key"] == "ca"
    cm_monitor = chart.find(
        chart.manifests(chart.merge(chart.MONITORING, {"tls": {"certManager": {"enabled": True}}})),
        "ServiceMonitor",
    )
    assert cm_monitor["spec"]["endpoints"][0]["tlsConfig"]["ca"]["secret"]["key"] == "ca.crt"
    pod_monitors = {o["metadata"]["name"]: o for o in objects if o["kind"] == "PodMonitor"}
    assert sorted(n.rsplit("-", 1)[-1] for n in pod_monitors) == ["exporter", "reconciler"]
    # The alert rules find the scrape jobs by these names (files/alerts.yaml).
    for name in (*pod_monitors, monitor["metadata"]["name"]):
        assert fnmatch.fnmatch(name, "*gpupool-*")
    dashboard = chart.find(objects, "ConfigMap", "-grafana-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["data"]["gpupool.json"] == (
        files / "grafana-dashboard.json"
    ).read_text().rstrip("\n")


def test_recording_rules_in_the_chart_are_the_consoles() -> None:
    shipped = (chart.CHART / "files" / "recording-rules.yaml").read_text()
    assert shipped == (ROOT / "dashboard" / "recording-rules.yaml").read_text()


# -- the chart and the components agree ----------------------------------------------


def _gpupool_containers(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(object/container, container) of every container that runs the project's image."""
    repository = yaml.safe_load((chart.CHART / "values.yaml").read_text())["image"]["repository"]
    found = []
    for obj in objects:
        spec = obj.get("spec", {})
        pod = spec.get("template", spec.get("jobTemplate", {}).get("spec", {}).get("template"))
        if not pod:
            continue
        pod_spec = pod["spec"]
        for container in pod_spec.get("initContainers", []) + pod_spec["containers"]:
            if container["image"].startswith(repository):
                found.append(
                    (f"{obj['kind']}/{obj['metadata']['name']}/{container['name']}", container)
                )
    return found


@COMBINATIONS
def test_every_command_line_the_chart_writes_is_one_the_cli_accepts(values: dict[str, Any]) -> None:
    """Each gpupool container's arguments name a real subcommand, only options that it
    declares, and a value each Choice option accepts: the chart and the components are
    written apart, and a flag renamed on one side must fail here, not in a cluster."""
    import click

    from governance.cli import cli

    containers = _gpupool_containers(chart.manifests(values))
    assert containers, "the chart runs no gpupool container"
    root = click.Context(cli)
    for where, container in containers:
        args = container.get("args", [])
        assert args, f"{where}: no arguments (the image's entry point is gpupool)"
        command = cli.get_command(root, args[0])
        assert command is not None, f"{where}: gpupool has no subcommand {args[0]!r}"
        options = {
            name: param
            for param in command.params
            if isinstance(param, click.Option)
            for name in (*param.opts, *param.secondary_opts)
        }
        for arg in args[1:]:
            if not arg.startswith("-"):
                continue
            flag, _, value = arg.partition("=")
            assert flag in options, f"{where}: `gpupool {args[0]}` has no option {flag}"
            kind = options[flag].type
            if value and isinstance(kind, click.Choice):
                kind.convert(value, options[flag], click.Context(command))
