#!/usr/bin/env bash
# bench/compare_cuda.sh and bench/run_cuda.sh on stand-ins (no GPU here): bench_cuda_step and torch_step.py
# written by this test print the JSON lines of their real twins with step times it sets. Checked: compare_cuda's
# table (means, change, ratio to torch.compile, overheads over vanilla, worked out by hand), its JSON lines, a
# failing build (its message, the other rows still printed, exit status 1), and run_cuda's exit status when a run
# fails. Skipped (exit 77) where python3 is missing.
compare=$1
run=$2
command -v python3 > /dev/null || { echo "python3 is missing: skipped"; exit 77; }
source "$(dirname "$0")/checks.sh"

# A stand-in bench_cuda_step: vanilla VANILLA ms, sgt SGT ms, block BLOCK ms, plus 1 ms for each earlier call
stub() {  # stub DIR VANILLA SGT BLOCK
  mkdir -p "$1"
  cat > "$1/bench_cuda_step" << EOF2
#!/usr/bin/env bash
echo "\$*" >> "$1/args.txt"
calls=\$(cat "$1/calls" 2> /dev/null || echo 0)
echo \$((calls + 1)) > "$1/calls"
echo "progress on stderr" >&2
for v in vanilla:$2 sgt:$3 block:$4; do
  echo "{\"preset\":\"gpt2\",\"variant\":\"\${v%%:*}\",\"step_ms_median\":\$((\${v#*:} + calls)),\"peak_mem_mib\":900}"
done
EOF2
  chmod +x "$1/bench_cuda_step"
}
stub "$work/before" 40 44 48
stub "$work/after" 30 32 36
# torch_step.py's stand-in, beside a copy of the script (compare_cuda runs $(dirname $0)/torch_step.py)
mkdir -p "$work/bench"
cp "$compare" "$run" "$work/bench/"
cat > "$work/bench/torch_step.py" << 'EOF2'
import sys
print("compiling", file=sys.stderr)
for v, ms in (("vanilla", 35.0), ("sgt", 38.5), ("block", 42.0)):
    print(f'{{"preset":"gpt2","variant":"{v}","step_ms_median":{ms}}}')
EOF2

OUT="$work" bash "$work/bench/$(basename "$compare")" "$work/before" "$work/after" gpt2 2 > "$work/table.md" 2>&1 ||
  fail "compare_cuda: rc $?"
# before: vanilla 40, 41 (40.5); after 30, 31 (30.5): -24.7%, 30.5 / 35 = 0.871x
# sgt before 44, 45 (44.5), after 32, 33 (32.5): -27.0%, 32.5 / 38.5 = 0.844x, +6.6% over vanilla's 30.5;
# compile 38.5 / 35: +10.0%
expect "$work/table.md" "| gpt2 | vanilla | 40.50 (40.00, 41.00) | 30.50 (30.00, 31.00) | -24.7% | 35.00 (35.00) | 0.871x | – | 900 |"
expect "$work/table.md" "| gpt2 | sgt | 44.50 (44.00, 45.00) | 32.50 (32.00, 33.00) | -27.0% | 38.50 (38.50) | 0.844x | +6.6% (+10.0%) | 900 |"
[ "$(grep -c '"side":"after","round":2' "$work/compare.jsonl")" = 3 ] || fail "the JSON lines name side and round"
grep -q "progress on stderr" "$work/table.md" && fail "a run's progress in the table"

# A build that fails: its message with the last line it wrote, the other side's rows, exit status 1
mkdir -p "$work/broken"
printf '#!/usr/bin/env bash\necho "error: out of memory" >&2\nexit 1\n' > "$work/broken/bench_cuda_step"
chmod +x "$work/broken/bench_cuda_step"
OUT="$work" SGT_NO_TORCH=1 bash "$work/bench/$(basename "$compare")" "$work/after" "$work/broken" gpt2 1 \
  > "$work/broken.md" 2>&1
rc=$?
[ $rc = 1 ] || fail "a failing build: rc $rc, expected 1"
expect "$work/broken.md" "compare_cuda: $work/broken/bench_cuda_step failed (after, round 1): error: out of memory"

# run_cuda.sh: every result line, exit status 0; a failing bench_cuda_step gives 1, and torch_step.py still runs
bash "$work/bench/$(basename "$run")" "$work/after" gpt2 > "$work/run.txt" 2>&1 || fail "run_cuda: rc $?"
[ "$(grep -c '^{' "$work/run.txt")" = 6 ] || fail "run_cuda: expected 6 result lines"
bash "$work/bench/$(basename "$run")" "$work/broken" gpt2 > "$work/run_broken.txt" 2>&1
rc=$?
[ $rc = 1 ] || fail "run_cuda with a failing build: rc $rc, expected 1"
expect "$work/run_broken.txt" "run_cuda: bench_cuda_step --preset gpt2 failed"
[ "$(grep -c '^{' "$work/run_broken.txt")" = 3 ] || fail "run_cuda: torch_step.py's lines after the failure"

finish "compare_cuda and run_cuda: all checks passed"
