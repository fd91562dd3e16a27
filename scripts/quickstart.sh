#!/usr/bin/env bash
# First command of the README: installs dependencies, builds `lightrl`, and runs the main job on
# the tiny default. The main job is the model smoke run until the trainer lands, then the tiny
# CISPO recipe under mpirun (trainer, rollout and reward roles, one rank each).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)" --target lightrl
"$BUILD_DIR/app/lightrl" model-smoke configs/model/tiny.yaml
