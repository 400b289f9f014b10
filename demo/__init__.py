"""``gpupool demo``: the whole platform live on one machine, driven by a real trace.

This package sits above the components: it starts them as processes with their own
``gpupool`` subcommands and plays what a cluster would around them (an API server
stand-in, a scheduler, kubelets, users). No component imports it (import-linter).
See docs/demo.md.
"""
