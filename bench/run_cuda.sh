#!/usr/bin/env bash
# bench/run_cuda.sh BIN_DIR [PRESETS]: our CUDA training step next to the same models in PyTorch (eager and
# torch.compile, SDPA, bf16 autocast), in one run on one GPU. One JSON line per result; docs/BENCHMARKS.md
# records the tables.
set -uo pipefail
bin=$1
presets=${2:-"char_small gpt2"}
here=$(dirname "$0")
export PYTHONUNBUFFERED=1
status=0  # a failed run fails the script; the runs after it still run
for p in $presets; do
    "$bin/bench_cuda_step" --preset "$p" --variants vanilla,sgt,block --precision bf16 --steps 20 --warmup 5 ||
        { echo "run_cuda: bench_cuda_step --preset $p failed" >&2; status=1; }
    python3 "$here/torch_step.py" --preset "$p" --variants vanilla,sgt,block --modes eager,compile --precision bf16 \
        --steps 20 --warmup 5 || { echo "run_cuda: torch_step.py --preset $p failed" >&2; status=1; }
done
exit $status
