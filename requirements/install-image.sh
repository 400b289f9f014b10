#!/bin/sh
# Install gpupool into a new virtualenv exactly as the image does:
#
#   sh requirements/install-image.sh VENV [SOURCE]
#
# The Dockerfile's build stage runs it; tests/integration/test_chart_image.py runs it as
# a non-root user. Every dependency comes from requirements/image.txt, pinned and checked
# against its hashes, as wheels only (nothing is compiled); gpupool itself is built from
# SOURCE (default: this checkout) with the locked build backend and no index.
set -eu
venv=$1
source=${2:-$(cd "$(dirname "$0")/.." && pwd)}
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --no-cache-dir --disable-pip-version-check \
    --require-hashes --only-binary=:all: --no-deps -r "$source/requirements/image.txt"
# setuptools builds in the source tree: build a copy, so SOURCE may be read-only.
cp -R "$source/pyproject.toml" "$source/README.md" "$source/governance" "$source/admission" \
    "$source/exporter" "$source/dashboard" "$build/"
"$venv/bin/python" -m pip install --no-cache-dir --disable-pip-version-check \
    --no-deps --no-index --no-build-isolation "$build"
"$venv/bin/python" -m pip check
