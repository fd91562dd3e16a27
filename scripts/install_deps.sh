#!/usr/bin/env bash
# Installs every Debian package lightrl builds, tests or runs with. Idempotent: packages already
# present are left alone; apt-get update runs only when something is missing.
# Usage: sudo scripts/install_deps.sh   (as root on Debian 12; no other package source is used)
set -euo pipefail

PKGS=(
  build-essential cmake ninja-build ccache pkg-config git
  libtorch-dev                      # libtorch 1.13.1 CPU (Debian); code also builds against 2.x
  libopenblas0-openmp libopenblas-dev  # the reference BLAS is 20-35x slower
  libopenmpi-dev openmpi-bin        # MPI collectives and the launcher
  libzmq3-dev cppzmq-dev            # data plane between roles
  libyaml-cpp-dev                   # configs
  libhdf5-dev hdf5-tools            # checkpoints
  libspdlog-dev libfmt-dev          # logging
  nlohmann-json3-dev                # JSON (wire metadata, metrics, safetensors headers)
  libcli11-dev                      # command line
  googletest libgtest-dev libgmock-dev  # unit tests
  libbenchmark-dev                  # micro benchmarks
  libcpp-httplib-dev                # OpenAI-compatible server
  libpcre2-dev                      # tokenizer pre-tokenizer regex
  libgmp-dev                        # exact arithmetic for the math verifier
  zlib1g-dev                        # checksums (crc32) of checkpoint datasets
  bubblewrap libseccomp-dev         # code-executor sandbox
  python3-minimal                   # sandboxed Python test runs
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all ${#PKGS[@]} packages present"
else
  echo "install_deps: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Make OpenBLAS (OpenMP) the BLAS/LAPACK that libtorch links against at run time.
arch=$(dpkg --print-architecture)
case "$arch" in amd64) triplet=x86_64-linux-gnu ;; arm64) triplet=aarch64-linux-gnu ;; *) triplet="" ;; esac
if [ -n "$triplet" ]; then
  # libopenblas.so.0 too: libtorch links it directly, and its default is the pthread build,
  # whose own busy-waiting thread pool fights libgomp's for the cores.
  for alt in "libblas.so.3-$triplet" "liblapack.so.3-$triplet" "libopenblas.so.0-$triplet"; do
    target=$(update-alternatives --list "$alt" 2>/dev/null | grep openblas | grep openmp | head -n1 || true)
    if [ -n "$target" ]; then
      ${SUDO:-} update-alternatives --set "$alt" "$target" >/dev/null
    fi
  done
fi
echo "install_deps: done"
