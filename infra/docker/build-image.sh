#!/usr/bin/env bash
# Build the Docker runner image offline (`make runner-image`): no registry, the rootfs is imported from this
# machine's interpreter, its stdlib and the shared libraries they link (stepcoder/execution/runner_image.py).
#
#   infra/docker/build-image.sh [--python PATH] [--tag stepcoder-runner:latest]
#
# Default interpreter: the cheapest for coverage that works here (Python >= 3.12: sys.monitoring).
# Needs a running engine (infra/docker/start-dockerd.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON_BIN:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
exec "$PY" -m stepcoder.execution.runner_image "$@"
