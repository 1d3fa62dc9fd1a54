#!/usr/bin/env bash
# The main job: set up, then `superconv train` on the default dataset (Fashion-MNIST).
# Extra arguments go to `superconv train`, e.g. `bash scripts/main.sh --epochs 4`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/superconv train "$@"
