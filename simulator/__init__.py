"""``gpupool simulate``: capacity planning on real GPU cluster traces.

One module per concept: :mod:`~simulator.trace` and :mod:`~simulator.workload` read pod
lists (the Alibaba 2023 trace natively, gpupool's own CSV/JSON-lines format) and
:mod:`~simulator.synthetic` makes them up from documented distributions;
:mod:`~simulator.fleet` holds the nodes and what is allocated on them;
:mod:`~simulator.fragmentation` measures GPU fragmentation against a target workload;
:mod:`~simulator.policies` are the placement policies, one module each, in one registry;
:mod:`~simulator.scheduler` places one pod at a time with a policy;
:mod:`~simulator.fill` is the FGD paper's fill experiment, :mod:`~simulator.replay`
the event-driven replay over time; :mod:`~simulator.report` prints and draws results;
:mod:`~simulator.cli` is the ``gpupool simulate`` command.

Everything here is pure and synchronous except the readers and the report writers.
The simulator may import governance's pure modules, never its store, and no other
component.
"""
