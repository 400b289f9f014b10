#!/usr/bin/env bash
# Refresh requirements/image.txt, the lock the image installs from: every dependency of
# gpupool[all] and the build backend, each pinned with the hashes of its files.
# pyproject.toml keeps its ranges for library users; the image gets exactly these.
#
#   bash requirements/lock.sh              # after changing pyproject.toml's dependencies
#   bash requirements/lock.sh --upgrade    # newest versions the ranges allow
#
# Needs uv (in the test extra: pip install -e '.[test]').
set -euo pipefail
cd "$(dirname "$0")/.."
exec uv pip compile pyproject.toml requirements/build.in \
    --extra all \
    --generate-hashes \
    --no-strip-extras \
    --python-version 3.11 \
    --python-platform linux \
    --custom-compile-command "bash requirements/lock.sh" \
    --output-file requirements/image.txt \
    "$@"
