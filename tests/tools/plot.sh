#!/usr/bin/env bash
# tools/plot.py on a short log of examples/train (SGT growing, entropies every 2 steps, the contribution flow at
# every evaluation): every figure is written as a PNG; a log without entropy records is refused with a message.
# Skipped (exit 77) where python3 or matplotlib is missing.
train=$1
plot=$2
python3 -c "import matplotlib" 2> /dev/null || { echo "matplotlib is not importable: skipped"; exit 77; }
source "$(dirname "$0")/checks.sh"

"$train" --steps 16 --batch 4 --seq 32 --warmup 2 --t-start 2 --dt 2 --k-max 2 --eval-interval 8 --eval-batches 1 \
  --entropy-every 2 --log-flow --quiet --threads 1 --log "$work/run.jsonl" > /dev/null 2>&1 \
  || { echo "FAIL: train did not run"; exit 1; }
grep -q '"type":"flow"' "$work/run.jsonl" || fail "the log has no flow records"
[ "$(grep -c '"type":"entropy"' "$work/run.jsonl")" -eq 8 ] || fail "expected 8 entropy records (every 2 steps of 16)"
out=$(python3 "$plot" "$work/run.jsonl" --out "$work/figures" 2>&1) || fail "plot.py failed: $out"
for f in entropy_heatmap entropy_trajectories entropy_variance growth_timeline loss_vs_flops contribution_flow; do
  png="$work/figures/$f.png"
  if [ ! -s "$png" ] || [ "$(head -c 8 "$png" | od -An -tx1 | tr -d ' \n')" != 89504e470d0a1a0a ]; then
    fail "$f.png is missing or not a PNG"
  fi
done

grep -v '"type":"entropy"' "$work/run.jsonl" > "$work/no_entropy.jsonl"
out=$(python3 "$plot" "$work/no_entropy.jsonl" --out "$work/none" 2>&1)
rc=$?
want='the log has no entropy records ("type": "entropy")'
if [ $rc -eq 0 ] || ! grep -qF "$want" <<< "$out"; then fail "($rc) a log without entropies: $out"; fi
[ ! -e "$work/none" ] || fail "a refused log still created the output directory"
out=$(python3 "$plot" "$work/no_entropy.jsonl" --out "$work/flops" --figures flops,growth 2>&1) \
  || fail "loss against FLOPs needs no entropies: $out"
[ -s "$work/flops/loss_vs_flops.png" ] || fail "loss_vs_flops.png missing"
finish "ok: 6 figures drawn; a log without entropies refused"
