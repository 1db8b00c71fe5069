#!/usr/bin/env bash
# tools/ncu_summary.py on a small file in Nsight Compute's CSV form (written here: 4 launches of 3 kernels, 2 steps,
# with the profiled program's own lines mixed in): the kinds of work, the per-step times, the bandwidth against the
# copy rate, two runs side by side, and its messages on bad input. The expected numbers are worked out by hand in
# the comments. Skipped (exit 77) where python3 is missing.
tool=$1
command -v python3 > /dev/null || { echo "python3 is missing: skipped"; exit 77; }
source "$(dirname "$0")/checks.sh"

header='"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size","Grid Size","Device","CC","Section Name","Metric Name","Metric Unit","Metric Value"'
norm='void sgt::detail::rmsnorm_forward_kernel<8, __nv_bfloat16>(__nv_bfloat16 *, float *, const __nv_bfloat16 *, int)'
row() { echo "\"$1\",\"1\",\"bench_cuda_step\",\"host\",\"$2\",\"1\",\"7\",\"(256, 1, 1)\",\"(2048, 1, 1)\",\"0\",\"9.0\",\"Command line profiler metrics\",\"$3\",\"$4\",\"$5\""; }
write() {  # write FILE NORM_US: rmsnorm twice (10 and 20 µs, or NORM_US each), a product of 100 µs, cuDNN's 50 µs
  {
    echo "==PROF== Connected to process 1"
    echo '{"impl":"sgt-cuda"}'
    echo "$header"
    row 0 "$norm" dram__bytes_read.sum Mbyte 30
    row 0 "$norm" dram__bytes_write.sum Mbyte 12
    row 0 "$norm" gpu__time_duration.sum usecond "${2:-10}"
    row 1 nvjet_sm90_tst_128x256_64x4_2x1_v_bz_coopA_NTT gpu__time_duration.sum nsecond "100,000"
    row 2 "$norm" dram__bytes_read.sum Mbyte 40
    row 2 "$norm" dram__bytes_write.sum byte 0
    row 2 "$norm" gpu__time_duration.sum usecond "${2:-20}"
    row 3 cudnn_generated_fort_native_sdpa_sm90_flash_fprop_kernel0_0 gpu__time_duration.sum msecond 0.05
  } > "$1"
}
write "$work/before.csv"
write "$work/after.csv" 5

python3 "$tool" "$work/before.csv" --steps 2 > "$work/one.md" 2>&1 || fail "one file: rc $?"
# per step: products 100 µs / 2 = 0.050 ms (5/9 of 0.090), cuDNN 0.025 (5/18), RMSNorm 30 / 2 = 0.015 (1/6)
expect "$work/one.md" "| matrix products (cuBLASLt) | 0.5 | 0.050 | 55.6% |"
expect "$work/one.md" "| attention core | 0.5 | 0.025 | 27.8% |"
expect "$work/one.md" "| RMSNorm | 1 | 0.015 | 16.7% |"
expect "$work/one.md" "| **sum** | 2 | 0.090 | 100% |"
# RMSNorm moved 82 MB in 30 µs: 2.73 TB/s, 65% of 4.2; the product has no bytes
expect "$work/one.md" "| \`rmsnorm_forward_kernel<8, __nv_bfloat16>\` | RMSNorm | 1 | 0.015 | 16.7% | 15.0 | 2.73 (65%) |"
expect "$work/one.md" "| 0.5 | 0.050 | 55.6% | 100.0 | – |"

# Some Nsight Compute versions write the base units short ("ns", "us", "ms"): the same tables
sed 's/"nsecond"/"ns"/; s/"usecond"/"us"/; s/"msecond"/"ms"/' "$work/before.csv" > "$work/short.csv"
grep -qF '"us"' "$work/short.csv" || fail "the short units were not written"
python3 "$tool" "$work/short.csv" --steps 2 > "$work/short.md" 2>&1 || fail "short units: rc $?"
cmp -s "$work/one.md" "$work/short.md" || { fail "short units give other tables:"; diff "$work/one.md" "$work/short.md"; }

python3 "$tool" "$work/before.csv" "$work/after.csv" --steps 2 --top 1 --copy-tbs 8.2 > "$work/two.md" 2>&1 ||
  fail "two files: rc $?"
# after: RMSNorm 2 x 5 µs / 2 = 0.005 ms, 0.010 less; the sum 0.090 -> 0.080
expect "$work/two.md" "| RMSNorm | 1 | 0.015 | 1 | 0.005 | -0.010 |"
expect "$work/two.md" "| **sum** | 2 | 0.090 | 2 | 0.080 | -0.010 |"
expect "$work/two.md" "The 1 kernels that take the most time (after):"
expect "$work/two.md" "DRAM TB/s (of 8.2)"
# after, RMSNorm: 82 MB in 2 x 5 µs = 8.2 TB/s, 100% of the given rate, 5 µs a launch (listed when --top reaches it)
python3 "$tool" "$work/after.csv" --top 3 --copy-tbs 8.2 > "$work/after.md" 2>&1
expect "$work/after.md" "| 2 | 0.010 | 6.2% | 5.0 | 8.20 (100%) |"

# cuDNN's deterministic backward: its dQ product and dO·O sums (cudnn:: kernels named without "cudnn") count as
# attention, not as "the rest"
{
  echo "$header"
  row 0 'void cudnn::matmul_dq<1, 64>(const void *, const void *, void *, unsigned int)' gpu__time_duration.sum us 30
  row 1 'void cudnn::compute_dot_do_o_specialized<1, 64>(const void *, void *)' gpu__time_duration.sum us 10
} > "$work/dq.csv"
python3 "$tool" "$work/dq.csv" > "$work/dq.md" 2>&1 || fail "cuDNN's dQ kernels: rc $?"
expect "$work/dq.md" "| attention core | 2 | 0.040 | 100.0% |"
expect "$work/dq.md" "| \`matmul_dq<1, 64>\` | attention core | 1 | 0.030 | 75.0% |"

echo "not a profile" > "$work/empty.csv"
out=$(python3 "$tool" "$work/empty.csv" 2>&1) && fail "a file without CSV rows was accepted"
[[ $out == *"holds no CSV rows of Nsight Compute"* ]] || fail "message for a file without rows: $out"
sed 's/"usecond"/"fortnight"/' "$work/before.csv" > "$work/unit.csv"
out=$(python3 "$tool" "$work/unit.csv" 2>&1) && fail "an unknown unit was accepted"
[[ $out == *"unit 'fortnight' of gpu__time_duration.sum not known"* ]] || fail "message for an unknown unit: $out"
grep -v gpu__time_duration "$work/before.csv" > "$work/notime.csv"
out=$(python3 "$tool" "$work/notime.csv" 2>&1) && fail "a file without kernel times was accepted"
[[ $out == *"has no gpu__time_duration.sum"* ]] || fail "message for a file without times: $out"

finish "ncu_summary: all checks passed"
