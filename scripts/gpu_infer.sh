#!/usr/bin/env bash
# scripts/gpu_infer.sh BIN_DIR [bench]: the GPU side of inference (issue 10), on a machine with an NVIDIA GPU, from
# the repository root. BIN_DIR holds gpu_test_cuda_infer, gpu_test_cuda_ops, gpu_test_cuda_model, train_cuda,
# generate_cuda and bench_infer, built where the toolkit and the C++ dependencies are (the GPU machine has no
# Eigen or fmt: `cmake --build build --target <those>`, then copy them with libfmt.so.9 and libgomp.so.1, or pack
# them with scripts/pack_gpu.sh), and:
#   1. the GPU tests: gpu_test_cuda_infer (decode ops, prefill + decode against the CPU for every loop structure,
#      the CUDA graph, greedy tokens), gpu_test_cuda_ops and gpu_test_cuda_model; compute-sanitizer memcheck on
#      gpu_test_cuda_infer, racecheck on its case of the decode pass kernel (decode_pass.cuh's shared memory);
#   2. train_cuda writes a checkpoint and generate_cuda samples from it (fp32 and bf16);
#   3. with `bench`: bench_infer (prefill/decode tokens/s, batch 1 and 32, context 1024 and 4096, vanilla, SGT, Block
#      Loop, gpt2 size and char_small, cache bytes; SGT with the pass kernel on and off) and, where torch +
#      transformers are installed, bench/torch_infer.py (Hugging Face generate and our cached PyTorch model, eager
#      and torch.compile) in the same job, as docs/BENCHMARKS.md ran them.
# Everything is logged under $OUT (or ./gpu-infer).
set -uo pipefail
bin=$(realpath "${1:?usage: gpu_infer.sh BIN_DIR [bench]}")
out=${OUT:-gpu-infer}
mkdir -p "$out"
status=0
export LD_LIBRARY_PATH="$bin:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
for b in gpu_test_cuda_infer gpu_test_cuda_ops gpu_test_cuda_model train_cuda generate_cuda bench_infer; do
    [ -x "$bin/$b" ] || { echo "gpu_infer: no $b in $bin (build it as the header says)" >&2; exit 2; }
done
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
export OMP_NUM_THREADS=1  # the tests' CPU references: more threads only slow them on a many-core machine
for t in gpu_test_cuda_infer gpu_test_cuda_ops gpu_test_cuda_model; do
    echo "== $t"
    "$bin/$t" -s 2>&1 | tee "$out/$t.log" | grep -E "rel error|greedy|SUCCESS|FAIL|ERROR|test cases|assertions"
    rc=${PIPESTATUS[0]}  # the test's own status (under pipefail, `|| true` here would have hidden it)
    [ "$rc" -eq 0 ] || { echo "   ($t: exit $rc)"; status=1; }
done
echo "== compute-sanitizer memcheck (gpu_test_cuda_infer)"
compute-sanitizer --tool memcheck --error-exitcode 3 "$bin/gpu_test_cuda_infer" > "$out/memcheck_infer.log" 2>&1 \
    || status=1
tail -2 "$out/memcheck_infer.log"
echo "== compute-sanitizer racecheck (the decode pass kernel's case)"
compute-sanitizer --tool racecheck --error-exitcode 3 "$bin/gpu_test_cuda_infer" \
    --test-case="*run of decode attention passes*" > "$out/racecheck_pass.log" 2>&1 || status=1
tail -1 "$out/racecheck_pass.log"

echo "== train_cuda + generate_cuda"
work=$(mktemp -d)
for _ in $(seq 400); do printf 'the quick brown fox jumps over the lazy dog. '; done > "$work/text.txt"
"$bin/train_cuda" --preset char_mini --data "$work/text.txt" --steps 200 --batch 16 --seq 128 --t-start 50 \
    --dt 25 --sample-every 100 --checkpoint-dir "$work/ck" --quiet > "$out/train_cuda.log" 2>&1 || status=1
for p in fp32 bf16; do
    "$bin/generate_cuda" --checkpoint "$work/ck" --prompt "the quick " --tokens 100 --seed 1 --precision $p \
        2>&1 | tee "$out/generate_cuda_$p.log" || status=1
done
rm -rf "$work"

if [ "${2:-}" = bench ]; then
    echo "== bench_infer"
    "$bin/bench_infer" | tee "$out/bench_infer.jsonl" || status=1
    "$bin/bench_infer" --batches 1 --contexts 1024 --models gpt2 --variants vanilla,sgt --no-graph \
        | tee "$out/bench_infer_no_graph.jsonl" || status=1
    "$bin/bench_infer" --models gpt2 --variants sgt --batches 1,2 --contexts 1024,4096 --pass-kernel on,off \
        | tee "$out/bench_infer_pass_kernel.jsonl" || status=1
    if python3 -c "import torch, transformers" 2> /dev/null; then
        echo "== Hugging Face generate (static cache) and our cached PyTorch model"
        for a in "--impls hf --models gpt2 --modes eager" "--impls ref --models gpt2 --modes eager" \
                 "--impls hf --models gpt2 --modes compile --batches 1" \
                 "--impls ref --models gpt2 --modes compile --batches 1 --contexts 4096"; do
            # shellcheck disable=SC2086  # $a holds several flags on purpose
            python3 bench/torch_infer.py $a | tee -a "$out/torch_infer.jsonl" || status=1
        done
    else
        echo "torch/transformers not installed: Hugging Face comparison skipped" | tee "$out/torch_infer.jsonl"
    fi
fi
echo "gpu_infer status $status"
exit $status
