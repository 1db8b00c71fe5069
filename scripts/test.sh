#!/usr/bin/env bash
# Builds everything (library tests, examples, benchmarks, CUDA targets where nvcc is found) and runs the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cd "${SGT_BUILD_DIR:-build}"
ctest --output-on-failure -j "${SGT_JOBS:-$(nproc)}" "$@"
