#!/usr/bin/env bash
# The whole test gate: lint, types, import layering, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check .
ruff format --check governance admission exporter dashboard simulator demo
mypy
lint-imports
python -m pytest -q -p no:cacheprovider "$@"
