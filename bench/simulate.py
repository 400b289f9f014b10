"""The fill experiment on the full Alibaba trace, per placement policy: allocation and time.

Reads the default pod list (8,152 pods) and the node list (1,213 nodes, 6,212 GPUs)
from ../shared/data/alibaba-gpu-2023 (the nearest such folder above the repository),
runs the FGD paper's fill experiment for every policy over the seeds 42.. (the
published protocol: 10 seeds, 130%), and prints a table of the allocation at 100%
arrived workload next to the published figure, and the seconds per run (one seed).

Baseline, measured in the same run: the ``random`` policy's seconds per run (the same
engine with a policy that scores nothing); each policy's time is also given as a ratio
to it. The authors' Go simulator takes about ten minutes per run on 2 vCPUs
(experiments/README.md of hkust-adsl/kubernetes-scheduler-simulator).

Last line: one JSON object with ``fill_alloc_at_100_<policy>``,
``fill_seconds_<policy>`` (mean per run) and ``fill_seconds_ratio_<policy>`` for each
policy (``-`` in names becomes ``_``), and ``baseline_seconds``. ``--quick`` (one seed,
up to 100% arrived) ends within 30 s.

    python bench/simulate.py [--quick] [--seeds N] [--policy NAME ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simulator import fill, policies, trace

PUBLISHED_AT_100 = {
    "random": 86.3,
    "dot-product": 90.6,
    "clustering": 91.7,
    "packing": 91.8,
    "best-fit": 92.9,
    "fgd": 95.2,
}
"""Mean of 10 seeds at 100% arrived, default trace (the authors' expected_results)."""


def key(policy: str) -> str:
    return policy.replace("-", "_")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one seed, up to 100%%")
    parser.add_argument("--seeds", type=int, default=None, help="default 10, 1 with --quick")
    parser.add_argument("--policy", action="append", choices=list(policies.REGISTRY))
    args = parser.parse_args()
    seeds = args.seeds or (1 if args.quick else 10)
    ratio = 1.0 if args.quick else fill.DEFAULT_RATIO
    chosen = args.policy or list(policies.REGISTRY)
    if "random" not in chosen:
        chosen = ["random", *chosen]  # the baseline

    folder = trace.shared_trace_dir(Path(__file__).resolve().parents[1])
    pod_list, node_list = folder / trace.DEFAULT_POD_LIST, folder / trace.DEFAULT_NODE_LIST
    if not pod_list.is_file() or not node_list.is_file():
        print(f"skipped: the Alibaba trace is not in {folder}", file=sys.stderr)
        print(json.dumps({"skipped": f"no trace in {folder}"}))
        return
    pods, nodes = trace.read_pods(pod_list), trace.read_nodes(node_list)

    results = {p: fill.run(pods, nodes, p, seeds=seeds, ratio=ratio) for p in chosen}
    baseline = results["random"].seconds / seeds

    print(
        f"fill experiment: {len(pods)} pods, {len(nodes)} nodes, "
        f"{results['random'].total_gpus} GPUs, seeds {seeds}, up to {ratio:.0%}"
    )
    header = f"{'policy':<12} {'@100%':>7} {'published':>9} {'delta':>6} {'s/run':>6} {'x base':>7}"
    print(header)
    print("-" * len(header))
    out: dict[str, object] = {
        "seeds": seeds,
        "ratio": ratio,
        "baseline_seconds": round(baseline, 3),
    }
    for policy, result in results.items():
        at_100 = result.at(100)
        seconds = result.seconds / seeds
        published = PUBLISHED_AT_100.get(policy)
        delta = f"{at_100 - published:+.2f}" if published is not None else "-"
        print(
            f"{policy:<12} {at_100:>7.2f} {published if published is not None else '-':>9} "
            f"{delta:>6} {seconds:>6.2f} {seconds / baseline:>7.2f}"
        )
        out[f"fill_alloc_at_100_{key(policy)}"] = at_100
        out[f"fill_seconds_{key(policy)}"] = round(seconds, 3)
        out[f"fill_seconds_ratio_{key(policy)}"] = round(seconds / baseline, 2)
        if ratio >= 1.3:
            out[f"fill_alloc_at_130_{key(policy)}"] = result.at(130)
    print(f"baseline: the random policy, {baseline:.2f} s per run")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
