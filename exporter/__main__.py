"""``python -m exporter``: the same command as ``gpupool exporter``."""

from exporter.cli import main

main()
