#!/usr/bin/env bash
# scripts/experiments.sh's logic on the CPU: the same flags with examples/train on tiny settings (char_micro,
# 2 seeds, 40 steps, two loop layers), then tools/summarize.py's tables. Skipped (exit 77) without python3.
train=$1
root=$2
command -v python3 > /dev/null || { echo "python3 is missing: skipped"; exit 77; }
source "$(dirname "$0")/checks.sh"
cat "$root/README.md" "$root/docs/RESULTS.md" > "$work/text.txt"
OUT="$work/out" SGT_TRAIN="$train" SGT_PRECISION=fp32 SGT_DATA="$work/text.txt" SGT_PRESET=char_micro \
  SGT_BATCH=2 SGT_SEQ=32 SGT_SEEDS="1 2" SGT_STEPS=40 SGT_LOOP_LAYERS="1 3" SGT_EVAL_BATCHES=2 \
  OMP_NUM_THREADS=1 bash "$root/scripts/experiments.sh" > "$work/stdout.txt" 2>&1 || fail "experiments.sh exited $?"
logs=$(ls "$work/out/logs/"*.jsonl 2> /dev/null | wc -l)
[ "$logs" -eq 28 ] || fail "expected 28 logs (14 configurations x 2 seeds), found $logs"
grep -q FAILED "$work/out/progress.txt" && fail "a run failed: $(grep FAILED "$work/out/progress.txt")"
summary="$work/out/summary.md"
for want in "### Table 1" "### Table 2" "### Table 3" "### Table 9" "| SGT K_max=3 | " "| **layer 3** |" \
            "| High-Entropy Loop (top-2) | " "| S2D (SGT K_max=1) | " "t_start = 1, Δt = 1" "t_start = 2, Δt = 2" \
            "t_start = 4, Δt = 4" "seeds 1, 2; 28 runs"; do
  grep -qF -- "$want" "$summary" || fail "summary.md lacks '$want'"
done
grep -q "(not run)" "$summary" && fail "summary.md has configurations not run: $(grep '(not run)' "$summary")"
# Every mean ± std row: two seeds each.
rows=$(grep -c " ± " "$summary")
[ "$rows" -ge 20 ] || fail "expected at least 20 rows with mean ± std, found $rows"
# A deadline already passed: every run after the first is skipped and the script still ends with a summary.
OUT="$work/late" SGT_TRAIN="$train" SGT_PRECISION=fp32 SGT_DATA="$work/text.txt" SGT_PRESET=char_micro \
  SGT_BATCH=2 SGT_SEQ=32 SGT_SEEDS="1" SGT_STEPS=24 SGT_LOOP_LAYERS="1" SGT_EVAL_BATCHES=2 SGT_DEADLINE_S=0 \
  OMP_NUM_THREADS=1 bash "$root/scripts/experiments.sh" > /dev/null 2>&1
late=$(grep -c "skipped (would end after" "$work/late/progress.txt")
[ "$late" -eq 10 ] || fail "with the deadline passed, expected 10 of 11 runs skipped, found $late"
[ $fails -eq 0 ] || tail -20 "$work/stdout.txt"
finish "ok: 28 runs, Tables 1, 2, 3 and 9 summarised; the deadline skips runs"
