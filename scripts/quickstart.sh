#!/usr/bin/env bash
# First command of the README: installs dependencies, builds `lightrl`, and runs the main job on
# the tiny default: CISPO on the tiny hybrid model (configs/cispo_tiny.yaml) under mpirun with
# trainer, rollout and reward roles, one rank each. Metrics: runs/tiny/metrics.jsonl.
# Extra arguments are config overrides, e.g. `bash scripts/quickstart.sh trainer.total_steps=5`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
BUILD_DIR=${BUILD_DIR:-build}
RUN_DIR=${RUN_DIR:-runs/tiny}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)" --target lightrl
MPI_FLAGS=(-np 3 --oversubscribe --bind-to none)
if [ "$(id -u)" -eq 0 ]; then MPI_FLAGS+=(--allow-run-as-root); fi
mpirun "${MPI_FLAGS[@]}" "$BUILD_DIR/app/lightrl" train configs/cispo_tiny.yaml "$@" \
  --run-dir "$RUN_DIR" --resume auto
echo "quickstart: metrics in $RUN_DIR/metrics.jsonl, checkpoints in $RUN_DIR/checkpoints/"
