#!/usr/bin/env bash
# Runs the CPU step benchmark matrix (one process per result, so that peak memory is per configuration) and
# prints one JSON object per line. Usage: bash bench/run_cpu.sh [build-dir]
set -euo pipefail
b=${1:-build}/bench/bench_cpu_step
for plan in vanilla sgt block; do
  "$b" --preset tiny --plan "$plan" --batch 8 --seq 32 --steps 20 --warmup 3
done
for plan in vanilla sgt block; do
  "$b" --preset char_small --plan "$plan" --batch 8 --seq 256 --steps 5 --warmup 1
done
