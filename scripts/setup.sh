#!/usr/bin/env bash
# Installs the Debian packages sgt needs, where missing, and configures + builds the given CMake targets.
# Used by demo.sh and test.sh; not meant to be called directly.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(g++ cmake make libeigen3-dev libfmt-dev nlohmann-json3-dev doctest-dev libcli11-dev
          libopenblas-dev)  # OpenBLAS: the CPU backend's matrix products (CMake's SGT_OPENBLAS)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "sgt: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# MPI (optional, examples/CMakeLists.txt): train under mpirun with no rendezvous to set (dist/mpi.hpp). A failed
# install only means programs without it.
if ! dpkg -s libopenmpi-dev >/dev/null 2>&1 || ! dpkg -s openmpi-bin >/dev/null 2>&1; then
  echo "sgt: installing libopenmpi-dev openmpi-bin (optional: MPI for train under mpirun)"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
      libopenmpi-dev openmpi-bin; } >/dev/null 2>&1 || echo "sgt: could not install MPI; train runs under mpirun with SGT_RENDEZVOUS"
fi

# cuDNN's fused attention (optional, cmake/cudnn.cmake): where the CUDA toolkit carries cuDNN, the header-only
# cudnn-frontend comes from PyPI (its headers only, --no-deps; the version we test). SGT_CUDNN=OFF skips it; a
# failed install only means a build on our own attention kernels.
if [ "${SGT_CUDNN:-AUTO}" != OFF ] && [ -f /usr/local/cuda/include/cudnn.h ] &&
   ! python3 -m pip show -q nvidia-cudnn-frontend >/dev/null 2>&1; then
  echo "sgt: installing nvidia-cudnn-frontend (headers for cuDNN's attention)"
  python3 -m pip install -q --no-deps "nvidia-cudnn-frontend==1.32.0" >/dev/null 2>&1 ||
    echo "sgt: could not install nvidia-cudnn-frontend; the CUDA backend builds on its own attention kernels"
fi

build_dir=${SGT_BUILD_DIR:-build}
jobs=${SGT_JOBS:-$(nproc)}
read -ra extra_args <<< "${SGT_CMAKE_ARGS:-}"  # SGT_CMAKE_ARGS: extra CMake arguments, space-separated
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DSGT_CUDNN="${SGT_CUDNN:-AUTO}" "${extra_args[@]}" >/dev/null
cmake --build "$build_dir" -j "$jobs" ${1:+--target "$@"}
