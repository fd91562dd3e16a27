#!/usr/bin/env bash
# The test command of the README: configures and builds (Ninja, RelWithDebInfo) into
# ${BUILD_DIR:-build}, then runs every ctest suite: single-process tests in parallel, then the
# tests labelled `mpi` (they launch mpirun and oversubscribe the cores) one at a time.
# Extra arguments go to both ctest invocations (e.g. `-L model` or `-R lightning`).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
t0=$(date +%s)
cmake --build "$BUILD_DIR" -j "$JOBS"
echo "build: $(( $(date +%s) - t0 )) s"
t0=$(date +%s)
ctest --test-dir "$BUILD_DIR" --output-on-failure --no-tests=error -LE mpi -j "$JOBS" "$@"
if ctest --test-dir "$BUILD_DIR" -N -L mpi "$@" | grep -q "Total Tests: [1-9]"; then
  ctest --test-dir "$BUILD_DIR" --output-on-failure -L mpi "$@"
fi
echo "tests: $(( $(date +%s) - t0 )) s"
