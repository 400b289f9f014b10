"""The demo's workload: pods shaped from the Alibaba GPU trace, sent by the example
organisation's people and pipelines. Pure: the trace, a seed and the fleet in, a plan
out; the same seed gives the same pods in the same order.

**Shapes.** Each planned pod is one of the trace's GPU pods (``simulator.trace``), in
the trace's order from a point the seed picks: its GPU count, its share of each GPU
(``gpu_milli``), its CPU and memory, and how long it lived. A pod with whole GPUs is a
training job on whole cards; a pod with a share of one GPU is inference or a notebook
on the smallest slice that covers its share.

**Time.** A pod lives its trace duration divided by ``speed`` (trace seconds per demo
second), kept between :data:`MIN_POD_S` and :data:`MAX_POD_S` so that every pod is
seen running and the trace's months-long services turn over within a demo. Arrivals
keep the trace's pattern (its gaps, in order, with their bursts and lulls) but not its
pace: the trace's cluster has about 6,200 GPUs, so its pace would leave a demo fleet of
tens idle. The gaps are scaled so that the pods ask, on average, for :data:`LOAD`
times the fleet's GPUs: enough for quotas and pools to fill and deny. The replay
starts mid-stream: the pods that would already be running at the start (those that
arrived in the :data:`WARM_S` before it and have not ended) come first, at once, so
the console is busy from the first minute.

**Who asks.** :data:`TENANTS` maps each kind of pod onto examples/org.yaml: the
department's namespaces, the queue (by label, or the department's default queue), the
SKU (by label, by the SKU's own resource, by the HAMi form, or plain ``nvidia.com/gpu``
for the queue's default SKU), and who creates it (a person, or a Job or ReplicaSet
controller creating it as a service account). A few pods are sent wrong on purpose
(:data:`MISFITS`): by people or service accounts without the right, in namespaces no
department owns, asking a SKU the queue does not offer; pods over quota need no help.
"""

from __future__ import annotations

import enum
import itertools
import math
import random
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from kubernetes import client

from demo import models
from demo.apiserver import User
from governance import rbac
from simulator.trace import MILLI_PER_GPU
from simulator.trace import Pod as TracePod

JSON = dict[str, Any]

LOAD = 1.1
"""What the workload asks for, on average, as a multiple of the fleet's GPUs."""
MIN_POD_S = 2.0
MAX_POD_S = 300.0
WARM_S = 300.0
"""The replay starts this many demo seconds into the workload (see the module doc)."""
WHOLE_CARD_SERVICES = 0.25
"""Share of the trace's one-GPU, whole-card pods served as inference on a whole card
(most of them are latency-sensitive services in the trace); the rest train."""

CONTROLLERS = {
    "Job": "system:serviceaccount:kube-system:job-controller",
    "ReplicaSet": "system:serviceaccount:kube-system:replicaset-controller",
}
"""The identities kube-controller-manager creates each kind's pods as."""
CONTROLLER_GROUPS = (rbac.SA_GROUP, f"{rbac.SA_GROUP}:kube-system", rbac.AUTHENTICATED)


class Kind(enum.StrEnum):
    TRAINING = "training"
    INFERENCE = "inference"
    NOTEBOOK = "notebook"


class Intent(enum.StrEnum):
    """What a planned pod was made to show; the webhook decides what happens."""

    ADMIT = "admit"
    """Sent by someone with the right, in a namespace of its department."""
    FORBIDDEN = "forbidden"
    UNOWNED = "unowned-namespace"
    NOT_OFFERED = "sku-not-offered"


class Form(enum.StrEnum):
    """How a pod asks for its slices (docs/protocol.md)."""

    PLAIN = "plain"
    """``nvidia.com/gpu: N``: N slices of the queue's default SKU."""
    LABEL = "label"
    """Label ``gpupool.io/sku: S`` and ``nvidia.com/gpu: N``."""
    RESOURCE = "resource"
    """Label ``gpupool.io/sku: S`` and the SKU's own resource ``gpupool.io/S: N``."""
    HAMI = "hami"
    """``nvidia.com/gpu`` with ``nvidia.com/gpumem`` and ``nvidia.com/gpucores``."""


@dataclass(frozen=True, kw_only=True)
class Requester:
    """Who creates the pod: a person (``user``, ``groups``), or a controller that creates
    it as ``service_account`` (``controller`` Job or ReplicaSet)."""

    user: str
    groups: tuple[str, ...] = ()
    controller: str = ""
    service_account: str = ""

    def identity(self) -> User:
        """The ``userInfo`` of the create request, as the API server's authenticator
        gives it."""
        if self.controller:
            return User(CONTROLLERS[self.controller], CONTROLLER_GROUPS)
        return User(self.user, (*self.groups, rbac.AUTHENTICATED))

    @property
    def who(self) -> str:
        if self.controller:
            return f"{self.controller} as {self.service_account}"
        return self.user


@dataclass(frozen=True, kw_only=True)
class SkuChoice:
    sku: str
    compute_pct: int
    """Each GPU's compute: the smallest choice whose compute covers a pod's share wins."""
    form: Form
    gpus_per_slice: int = 1


@dataclass(frozen=True, kw_only=True)
class Tenant:
    """One kind of pod that someone in examples/org.yaml sends."""

    name: str
    prefix: str
    """How its pods (and their Jobs) are named."""
    kind: Kind
    department: str
    queue: str
    queue_label: bool
    """Write ``gpupool.io/queue`` (False: the department's default queue)."""
    namespaces: tuple[str, ...]
    requester: Requester
    skus: tuple[SkuChoice, ...]
    image: str
    weight: float
    load: tuple[float, float]
    """Share of its slice's compute a running pod uses (uniform in this range)."""
    idle_share: float = 0.0
    """Share of its pods that hold their slice and never run a GPU process."""

    def choose(self, share_pct: float) -> SkuChoice:
        for choice in self.skus:
            if choice.compute_pct >= share_pct:
                return choice
        return self.skus[-1]


def _user(name: str, *groups: str) -> Requester:
    return Requester(user=f"{name}@northwind.example", groups=groups)


def _sa(controller: str, namespace: str, name: str) -> Requester:
    return Requester(
        user=f"system:serviceaccount:{namespace}:{name}",
        controller=controller,
        service_account=name,
    )


MIG = (
    SkuChoice(sku="h100-1g.10gb", compute_pct=14, form=Form.LABEL),
    SkuChoice(sku="h100-2g.20gb", compute_pct=28, form=Form.LABEL),
    SkuChoice(sku="h100-3g.40gb", compute_pct=42, form=Form.LABEL),
)
A100_FRACTIONS = (
    SkuChoice(sku="a100-quarter", compute_pct=25, form=Form.LABEL),
    SkuChoice(sku="a100-half", compute_pct=50, form=Form.LABEL),
)
L40S_SLICES = (
    SkuChoice(sku="l40s-quarter", compute_pct=25, form=Form.LABEL),
    SkuChoice(sku="l40s-half", compute_pct=50, form=Form.PLAIN),  # serving's default
    SkuChoice(sku="l40s-whole", compute_pct=100, form=Form.LABEL),
)
ASCEND_FRACTIONS = (
    SkuChoice(sku="ascend-910b-quarter", compute_pct=25, form=Form.RESOURCE),
    SkuChoice(sku="ascend-910b-half", compute_pct=50, form=Form.RESOURCE),
)

TENANTS: tuple[Tenant, ...] = (
    # -- training on whole cards ---------------------------------------------------------
    Tenant(
        name="research pretraining",
        prefix="pretrain",
        kind=Kind.TRAINING,
        department="research",
        queue="pretrain",
        queue_label=True,
        namespaces=("research-llm",),
        requester=_user("rhea", "research"),
        skus=(
            SkuChoice(sku="h100-whole", compute_pct=100, form=Form.LABEL),
            SkuChoice(sku="h100-8x", compute_pct=100, form=Form.RESOURCE, gpus_per_slice=8),
        ),
        image="registry.northwind.example/llm-pretrain:2.4",
        weight=1.2,
        load=(0.80, 0.97),
    ),
    Tenant(
        name="ml training pipeline",
        prefix="train",
        kind=Kind.TRAINING,
        department="ml",
        queue="train",
        queue_label=False,
        namespaces=("ml-pipelines",),
        requester=_sa("Job", "ml-pipelines", "trainer"),
        skus=(SkuChoice(sku="a100-whole", compute_pct=100, form=Form.PLAIN),),
        image="registry.northwind.example/trainer:5.1",
        weight=0.9,
        load=(0.70, 0.95),
    ),
    Tenant(
        name="vision training",
        prefix="npu-train",
        kind=Kind.TRAINING,
        department="vision",
        queue="npu-train",
        queue_label=False,
        namespaces=("vision",),
        requester=_user("vera", "vision"),
        skus=(SkuChoice(sku="ascend-910b-whole", compute_pct=100, form=Form.RESOURCE),),
        image="registry.northwind.example/detector-train:1.9",
        weight=0.9,
        load=(0.75, 0.95),
    ),
    # -- inference, fine-tuning and notebooks on slices ----------------------------------
    Tenant(
        name="product serving",
        prefix="ranker",
        kind=Kind.INFERENCE,
        department="product",
        queue="serving",
        queue_label=False,
        namespaces=("search", "recsys"),
        requester=_user("pablo", "product-eng"),
        skus=L40S_SLICES,
        image="registry.northwind.example/ranker-serve:7.2",
        weight=1.0,
        load=(0.25, 0.70),
        idle_share=0.05,
    ),
    Tenant(
        name="ml notebooks",
        prefix="notebook",
        kind=Kind.NOTEBOOK,
        department="ml",
        queue="notebooks",
        queue_label=True,
        namespaces=("notebooks-nia", "notebooks-omar"),
        requester=_user("nia", "ml-engineers"),
        skus=(
            SkuChoice(sku="l40s-quarter", compute_pct=25, form=Form.PLAIN),  # the default
            SkuChoice(sku="l40s-half", compute_pct=50, form=Form.LABEL),
        ),
        image="quay.io/jupyter/pytorch-notebook:cuda12",
        weight=1.0,
        load=(0.0, 0.35),
        idle_share=0.35,
    ),
    Tenant(
        name="ml fine-tuning",
        prefix="finetune",
        kind=Kind.INFERENCE,
        department="ml",
        queue="finetune",
        queue_label=True,
        namespaces=("ml-pipelines",),
        requester=_sa("Job", "ml-pipelines", "trainer"),
        skus=A100_FRACTIONS,
        image="registry.northwind.example/finetune:5.1",
        weight=0.8,
        load=(0.45, 0.90),
    ),
    Tenant(
        name="product batch scoring",
        prefix="scorer",
        kind=Kind.INFERENCE,
        department="product",
        queue="batch",
        queue_label=True,
        namespaces=("product-ranking",),
        requester=_user("dana", "product-eng"),
        skus=(
            SkuChoice(sku="custom", compute_pct=25, form=Form.HAMI),
            SkuChoice(sku="a100-half", compute_pct=50, form=Form.LABEL),
        ),
        image="registry.northwind.example/batch-scorer:3.0",
        weight=0.8,
        load=(0.30, 0.80),
        idle_share=0.05,
    ),
    Tenant(
        name="research experiments",
        prefix="experiment",
        kind=Kind.NOTEBOOK,
        department="research",
        queue="experiments",
        queue_label=False,
        namespaces=("research",),
        requester=_user("ravi", "research"),
        skus=MIG,
        image="registry.northwind.example/research-env:2.4",
        weight=6.0,
        load=(0.05, 0.60),
        idle_share=0.15,
    ),
    Tenant(
        name="research CI",
        prefix="ci",
        kind=Kind.INFERENCE,
        department="research",
        queue="experiments",
        queue_label=False,
        namespaces=("research-ci",),
        requester=_sa("Job", "research-ci", "ci-runner"),
        skus=(MIG[0],),
        image="registry.northwind.example/research-ci:2.4",
        weight=2.5,
        load=(0.40, 0.90),
    ),
    Tenant(
        name="vision inference",
        prefix="detector",
        kind=Kind.INFERENCE,
        department="vision",
        queue="npu-infer",
        queue_label=True,
        namespaces=("vision-serving",),
        requester=_user("vera", "vision"),
        skus=ASCEND_FRACTIONS,
        image="registry.northwind.example/detector-serve:1.9",
        weight=0.9,
        load=(0.20, 0.65),
        idle_share=0.05,
    ),
)


@dataclass(frozen=True, kw_only=True)
class Misfit:
    """A pod sent wrong on purpose: ``tenant``'s pod, but from ``requester``, in
    ``namespace`` (when given), or asking ``sku``."""

    intent: Intent
    description: str
    tenant: str
    requester: Requester | None = None
    namespace: str = ""
    sku: SkuChoice | None = None
    weight: float = 1.0


MISFITS: tuple[Misfit, ...] = (
    Misfit(
        intent=Intent.NOT_OFFERED,
        description="a pretraining job asking for A100s in a queue of H100s",
        tenant="research pretraining",
        sku=SkuChoice(sku="a100-whole", compute_pct=100, form=Form.LABEL),
    ),
    Misfit(
        intent=Intent.FORBIDDEN,
        description="an ML engineer starting a training job in research's namespace",
        tenant="research pretraining",
        requester=_user("omar", "ml-engineers"),
    ),
    Misfit(
        intent=Intent.UNOWNED,
        description="a training Job in a namespace no department owns",
        tenant="ml training pipeline",
        namespace="training-scratch",
    ),
    Misfit(
        intent=Intent.FORBIDDEN,
        description="a Deployment whose service account no role binding names",
        tenant="product serving",
        requester=_sa("ReplicaSet", "search", "search-api"),
    ),
    Misfit(
        intent=Intent.FORBIDDEN,
        description="an intern asking for more than the smallest L40S slice",
        tenant="product serving",
        requester=_user("ivan", "interns"),
        namespace="product-web",
        sku=L40S_SLICES[1],
    ),
    Misfit(
        intent=Intent.FORBIDDEN,
        description="a finance viewer trying to run a job",
        tenant="ml fine-tuning",
        requester=_user("fiona", "finance"),
        namespace="ml",
    ),
    Misfit(
        intent=Intent.FORBIDDEN,
        description="research CI asking for a slice its binding does not include",
        tenant="research CI",
        sku=MIG[2],
    ),
    Misfit(
        intent=Intent.FORBIDDEN,
        description="an ML engineer in the vision department's namespace",
        tenant="vision inference",
        requester=_user("omar", "ml-engineers"),
    ),
    Misfit(
        intent=Intent.UNOWNED,
        description="a GPU pod in a namespace no department owns",
        tenant="ml notebooks",
        requester=_user("sam", "ml-engineers"),
        namespace="sandbox",
    ),
    Misfit(
        intent=Intent.UNOWNED,
        description="a platform admin testing in the default namespace",
        tenant="product serving",
        requester=_user("alice", "platform-team"),
        namespace="default",
    ),
    Misfit(
        intent=Intent.NOT_OFFERED,
        description="a notebook asking for a whole L40S, which its queue does not sell",
        tenant="ml notebooks",
        sku=L40S_SLICES[2],
        weight=0.8,
    ),
)
MISFIT_SHARE = {Intent.FORBIDDEN: 0.06, Intent.UNOWNED: 0.025, Intent.NOT_OFFERED: 0.015}
"""Share of planned pods sent wrong, by what they show."""


@dataclass(frozen=True, kw_only=True)
class PlannedPod:
    """One pod of the plan: when it comes, how long it lives, what it asks, who sends it."""

    seq: int
    at_s: float
    """Demo seconds after the start when it is created."""
    duration_s: float
    source: str
    """The trace pod it is shaped from."""
    tenant: str
    kind: Kind
    intent: Intent
    namespace: str
    generate_name: str
    labels: Mapping[str, str]
    limits: Mapping[str, str]
    requester: Requester
    owner: str
    """The controller object's name (a Job or ReplicaSet), "" for a pod made directly."""
    image: str
    load: float
    processes: int
    """GPU processes per GPU once it runs; 0: an idle slice."""
    gpus: int
    """GPUs it asks for (the trace's ``num_gpu``)."""

    @property
    def ends_by_succeeding(self) -> bool:
        """A Job's pod ends Succeeded; others are deleted (scaled down, closed)."""
        return self.requester.controller == "Job"

    def pod(self) -> JSON:
        """The pod as its creator sends it, as API JSON."""
        owners = None
        if self.requester.controller:
            api_version = "batch/v1" if self.requester.controller == "Job" else "apps/v1"
            owners = [
                client.V1OwnerReference(
                    api_version=api_version,
                    kind=self.requester.controller,
                    name=self.owner,
                    uid=str(uuid.uuid5(uuid.NAMESPACE_URL, f"gpupool-demo/{self.owner}")),
                    controller=True,
                    block_owner_deletion=True,
                )
            ]
        restart = "Never" if self.requester.controller == "Job" else "Always"
        return models.serialise(
            client.V1Pod(
                api_version="v1",
                kind="Pod",
                metadata=client.V1ObjectMeta(
                    generate_name=self.generate_name,
                    namespace=self.namespace,
                    labels=dict(self.labels),
                    owner_references=owners,
                ),
                spec=client.V1PodSpec(
                    containers=[
                        client.V1Container(
                            name="main",
                            image=self.image,
                            resources=client.V1ResourceRequirements(limits=dict(self.limits)),
                        )
                    ],
                    restart_policy=restart,
                    service_account_name=self.requester.service_account or None,
                ),
            )
        )


def _limits(pod: TracePod, choice: SkuChoice, *, gpus: int, card_mib: int) -> dict[str, str]:
    limits = {"cpu": f"{max(pod.cpu_milli, 100)}m", "memory": f"{max(pod.memory_mib, 256)}Mi"}
    if choice.form is Form.HAMI:
        share = pod.gpu_milli / MILLI_PER_GPU
        limits["nvidia.com/gpu"] = "1"
        limits["nvidia.com/gpumem"] = str(max(1024, int(card_mib * share) // 1024 * 1024))
        limits["nvidia.com/gpucores"] = str(min(100, max(5, math.ceil(share * 20) * 5)))
        return limits
    slices = max(1, gpus // choice.gpus_per_slice)
    if choice.form is Form.RESOURCE:
        limits[f"gpupool.io/{choice.sku}"] = str(slices)
    else:
        limits["nvidia.com/gpu"] = str(slices)
    return limits


HAMI_CARD_MIB = 81920
"""The card the HAMi-form pods size their memory against (the A100 80GB pool)."""


GAP_QUANTILE = 0.99
"""Gaps between arrivals longer than this quantile of the trace's are cut to it: the
trace's first 110 days hold 17 pods (its long-running services), weeks apart."""


def gaps(pods: Sequence[TracePod]) -> list[float]:
    """The trace's gap before each pod after the first, in trace seconds, the longest
    cut to the :data:`GAP_QUANTILE` quantile; the gap after the last pod (the replay
    wraps around) is the mean."""
    raw = [
        max((b.arrival_s or 0.0) - (a.arrival_s or 0.0), 0.0) for a, b in itertools.pairwise(pods)
    ] or [1.0]
    ordered = sorted(raw)
    cap = ordered[min(int(len(ordered) * GAP_QUANTILE), len(ordered) - 1)]
    cut = [min(g, cap) for g in raw]
    return [*cut, sum(cut) / len(cut)]


def gpu_pods(pods: Sequence[TracePod]) -> list[TracePod]:
    """The trace's GPU pods in creation order (its CPU-only pods never reach gpupool)."""
    found = [p for p in pods if p.num_gpu > 0]
    return sorted(found, key=lambda p: (p.arrival_s or 0.0, p.name))


def pod_seconds(pod: TracePod, speed: float) -> float:
    """How long ``pod`` lives in the demo."""
    return min(max((pod.duration_s or 0.0) / speed, MIN_POD_S), MAX_POD_S)


def arrival_rate(pods: Sequence[TracePod], *, speed: float, fleet_gpus: int) -> float:
    """Pods per demo second such that they ask for :data:`LOAD` x ``fleet_gpus`` GPUs
    on average (Little's law: GPUs in use = rate x mean GPU-seconds per pod)."""
    gpu_seconds = sum(p.gpu_milli_total / MILLI_PER_GPU * pod_seconds(p, speed) for p in pods)
    return LOAD * fleet_gpus / (gpu_seconds / len(pods))


def plan(
    trace: Sequence[TracePod], *, seed: int, speed: float, fleet_gpus: int
) -> Iterator[PlannedPod]:
    """The endless workload of a run: pods in the order they are created."""
    pods = gpu_pods(trace)
    if not pods:
        raise ValueError("the trace has no GPU pods")
    rng = random.Random(seed)
    between = gaps(pods)
    mean_gap = sum(between) / len(between) or 1.0
    rate = arrival_rate(pods, speed=speed, fleet_gpus=fleet_gpus)
    scale = 1.0 / (rate * mean_gap)  # trace seconds of gap -> demo seconds
    tenants = {t.name: t for t in TENANTS}
    index = rng.randrange(len(pods))
    clock = -WARM_S
    seq = 0
    while True:
        pod = pods[index % len(pods)]
        planned = _shape(pod, seq=seq, at_s=clock, speed=speed, rng=rng, tenants=tenants)
        clock += between[index % len(pods)] * scale
        index += 1
        if planned.at_s + planned.duration_s <= 0:
            continue  # ended before the replay starts
        if planned.at_s < 0:  # running at the start: created first, for what it has left
            left = max(planned.at_s + planned.duration_s, MIN_POD_S)
            planned = replace(planned, at_s=0.0, duration_s=left)
        seq += 1
        yield planned


def _shape(
    pod: TracePod,
    *,
    seq: int,
    at_s: float,
    speed: float,
    rng: random.Random,
    tenants: Mapping[str, Tenant],
) -> PlannedPod:
    whole = pod.num_gpu > 1 or pod.gpu_milli >= MILLI_PER_GPU
    serving = pod.num_gpu == 1 and whole and rng.random() < WHOLE_CARD_SERVICES
    if serving:
        kinds: tuple[Kind, ...] = (Kind.INFERENCE,)
        fitting = [t for t in TENANTS if t.kind is Kind.INFERENCE and t.skus[-1].compute_pct >= 100]
    else:
        kinds = (Kind.TRAINING,) if whole else (Kind.INFERENCE, Kind.NOTEBOOK)
        fitting = [t for t in TENANTS if t.kind in kinds]
    tenant = rng.choices(fitting, weights=[t.weight for t in fitting])[0]
    intent_draw = rng.random()
    misfit = None
    bound = 0.0
    for intent, share in MISFIT_SHARE.items():
        bound += share
        if intent_draw < bound:
            options = [m for m in MISFITS if m.intent is intent and tenants[m.tenant].kind in kinds]
            if options:
                misfit = rng.choices(options, weights=[m.weight for m in options])[0]
            break
    if misfit is not None:
        tenant = tenants[misfit.tenant]
    share_pct = pod.gpu_milli / MILLI_PER_GPU * 100
    choice = tenant.choose(100.0 if pod.num_gpu > 1 else share_pct)
    if pod.num_gpu >= 8 and tenant.skus[-1].gpus_per_slice == 8:
        choice = tenant.skus[-1]
    requester = tenant.requester
    namespace = rng.choice(tenant.namespaces)
    if misfit is not None:
        requester = misfit.requester or requester
        namespace = misfit.namespace or namespace
        choice = misfit.sku or choice
    load = rng.uniform(*tenant.load)
    idle = rng.random() < tenant.idle_share
    labels = {"app.kubernetes.io/name": tenant.name.replace(" ", "-")}
    if tenant.queue_label:
        labels["gpupool.io/queue"] = tenant.queue
    if choice.form in (Form.LABEL, Form.RESOURCE):
        labels["gpupool.io/sku"] = choice.sku
    gpus = pod.num_gpu if whole else 1
    owner = f"{tenant.prefix}-{seq:05d}" if requester.controller else ""
    return PlannedPod(
        seq=seq,
        at_s=at_s,
        duration_s=pod_seconds(pod, speed),
        source=pod.name,
        tenant=tenant.name,
        kind=tenant.kind,
        intent=misfit.intent if misfit is not None else Intent.ADMIT,
        namespace=namespace,
        generate_name=f"{owner}-" if owner else f"{tenant.prefix}-",
        labels=labels,
        limits=_limits(pod, choice, gpus=gpus, card_mib=HAMI_CARD_MIB),
        requester=requester,
        owner=owner,
        image=tenant.image,
        load=0.0 if idle else load,
        processes=0 if idle else 1,
        gpus=gpus,
    )
