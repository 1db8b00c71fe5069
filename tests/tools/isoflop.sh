#!/usr/bin/env bash
# scripts/isoflop.sh on tiny settings (char_micro, 2 seeds, 40 dense steps): one row per configuration, each run's
# training FLOPs within one step of the dense run's, the gated rows with a sparsity; bad input is named.
# Skipped (exit 77) without python3.
train=$1
root=$2
command -v python3 > /dev/null || { echo "python3 is missing: skipped"; exit 77; }
source "$(dirname "$0")/checks.sh"
cat "$root/README.md" "$root/docs/RESULTS.md" > "$work/text.txt"
tiny=(SGT_DATA="$work/text.txt" SGT_PRESET=char_micro SGT_BATCH=2 SGT_SEQ=32 SGT_STEPS=40 SGT_T_START=4 SGT_DT=2
      SGT_EVAL_BATCHES=2 SGT_THREADS=1)
env OUT="$work/out" SGT_SEEDS="1 2" SGT_LAMBDAS="0.01 0.1" "${tiny[@]}" bash "$root/scripts/isoflop.sh" "$train" \
    > "$work/stdout.txt" 2>&1 || fail "isoflop.sh exited $?: $(tail -3 "$work/stdout.txt")"
table="$work/out/table.md"
for want in "| Dense | 40 |" "| Gated, λ = 0.01 |" "| Gated, λ = 0.1 |" "| SGT K_max = 3 |" "| Block Loop (L = 3) |" \
            "seeds 1, 2"; do
  grep -qF -- "$want" "$table" || fail "table.md lacks '$want'"
done
[ "$(ls "$work/out/logs/"*.jsonl | wc -l)" -eq 10 ] || fail "expected 10 logs (5 configurations x 2 seeds)"
# Equal FLOPs: every run within one of its own steps of the dense total (the nearest step count).
python3 - "$work/out/logs" <<'PY' || fail "FLOPs not matched"
import json, sys
from pathlib import Path
runs = {}
for p in Path(sys.argv[1]).glob("*.jsonl"):
    recs = [json.loads(l) for l in open(p)]
    s = next(r for r in recs if r.get("type") == "summary")
    last = [r for r in recs if r.get("type") == "step"][-1]
    runs[p.stem] = (s["flops"], last["flops"])
dense = runs["dense_s1"][0]
bad = [f"{n}: {f:.4g} against {dense:.4g}" for n, (f, step) in runs.items() if abs(f - dense) > step]
if bad: print("\n".join(bad))
sys.exit(1 if bad else 0)
PY
grep -q "Gated, λ = 0.1 .*%.*|" "$table" || fail "the gated row has no sparsity"
# Bad input: no data, a negative λ (the trainer's message comes through).
out=$(env OUT="$work/bad" "${tiny[@]}" SGT_DATA="$work/missing.txt" bash "$root/scripts/isoflop.sh" "$train" 2>&1)
[ $? -ne 0 ] && grep -qF "isoflop: no text at $work/missing.txt" <<< "$out" || fail "missing data: $out"
out=$(env OUT="$work/bad" "${tiny[@]}" SGT_LAMBDAS="-1" bash "$root/scripts/isoflop.sh" "$train" 2>&1)
[ $? -ne 0 ] && grep -qF "the calibration of gated_l-1 failed" <<< "$out" && grep -qi "λ" <<< "$out" \
    || fail "negative λ: $out"
finish "ok: 5 configurations x 2 seeds at equal FLOPs, table written, bad input named"
