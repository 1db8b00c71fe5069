#!/usr/bin/env bash
# scripts/isoflop.sh [TRAIN]: the isoFLOP comparison of GATES.md Sec. 6. Dense, gated at several λ, SGT and Block
# Loop trained to the same total training FLOPs (spec Sec. 6, the gates' cost included), the step count of each
# chosen to match the dense run's, seeds each; one table of final validation loss against gate sparsity, FLOPs
# and time.
#
#   bash scripts/isoflop.sh                      # examples/train of build/, Tiny Shakespeare of ../shared/data
#   bash scripts/isoflop.sh build-gpu/examples/train_cuda        (adds --precision $SGT_PRECISION)
#
# Matching the FLOPs: a model's FLOPs per step depend on its structure only (the growth operator's events fall
# at fixed steps, whichever heads it picks) and are proportional to the batch. So each configuration first runs
# at batch 1 until its structure is final (SGT: t_start + (L·K_max + 1)·Δt steps; Block Loop: t_start + 1;
# dense and gated: 2), its logged FLOPs per step are scaled to the batch and extended with the last one, and
# its step count is the one whose cumulative FLOPs come nearest the dense run's (SGT_STEPS steps). The table
# gives each run's FLOPs so that the match can be checked.
#
# Environment: OUT (default ./isoflop-out): logs/, table.md; SGT_DATA (default ../shared/data/tinyshakespeare.txt)
# SGT_PRESET (char_mini)  SGT_BATCH (8)  SGT_SEQ (128)  SGT_STEPS (400, the dense run)  SGT_LR (2e-3)
# SGT_SEEDS ("1 2 3")  SGT_LAMBDAS ("0.001 0.01 0.05")  SGT_T_START (20)  SGT_DT (10)  SGT_EVAL_BATCHES (16)
# SGT_THREADS (2; CPU only)  SGT_PRECISION (bf16; train_cuda only)
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
train=${1:-$here/build/examples/train}
out=${OUT:-$here/isoflop-out}
data=${SGT_DATA:-$here/../shared/data/tinyshakespeare.txt}
preset=${SGT_PRESET:-char_mini}
batch=${SGT_BATCH:-8}
seq=${SGT_SEQ:-128}
steps=${SGT_STEPS:-400}
lr=${SGT_LR:-2e-3}
seeds=${SGT_SEEDS:-1 2 3}
lambdas=${SGT_LAMBDAS:-0.001 0.01 0.05}
t_start=${SGT_T_START:-20}
dt=${SGT_DT:-10}
eval_batches=${SGT_EVAL_BATCHES:-16}
L=3 h=2 k_max=3

[ -x "$train" ] || { echo "isoflop: no program at $train (build it: bash scripts/test.sh, or pass its path)"; exit 1; }
[ -f "$data" ] || { echo "isoflop: no text at $data (set SGT_DATA to a text file)"; exit 1; }
command -v python3 > /dev/null || { echo "isoflop: python3 is needed for the table"; exit 1; }
device=(--threads "${SGT_THREADS:-2}")
[[ $(basename "$train") == *cuda* ]] && device=(--precision "${SGT_PRECISION:-bf16}")
mkdir -p "$out/logs" "$out/calibration"
rm -f "$out"/logs/*.jsonl "$out"/calibration/*.jsonl

common=(--data "$data" --preset "$preset" --seq "$seq" --lr "$lr" --t-start "$t_start" --dt "$dt" --quiet
        "${device[@]}")
# name | flags | steps until the structure is final
configs() {
    echo "dense|--variant vanilla|2"
    for l in $lambdas; do echo "gated_l$l|--variant vanilla --gates --gate-lambda $l|2"; done
    echo "sgt_k$k_max|--variant sgt --L $L --h $h --k-max $k_max|$((t_start + (L * k_max + 1) * dt))"
    echo "block|--variant block --L $L|$((t_start + 1))"
}

# Step counts: the cumulative FLOPs of a batch-1 run up to its final structure, scaled to the batch.
declare -A n_steps
target=""
while IFS='|' read -r name flags settle; do
    cal=$((settle < steps ? settle : steps))
    # shellcheck disable=SC2086  # $flags holds several words on purpose
    "$train" "${common[@]}" $flags --batch 1 --steps "$cal" --warmup 1 --eval-interval "$cal" --eval-batches 1 \
        --seed 1 --log "$out/calibration/$name.jsonl" > "$out/calibration/$name.txt" 2>&1 < /dev/null \
        || { echo "isoflop: the calibration of $name failed:"; tail -3 "$out/calibration/$name.txt"; exit 1; }
    read -r n total < <(python3 - "$out/calibration/$name.jsonl" "$batch" "$steps" "${target:-0}" <<'EOF'
import json, sys
path, B, dense_steps, target = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
per_step = [B * r["flops"] for r in map(json.loads, open(path)) if r.get("type") == "step"]
if target == 0:  # the dense run: its steps set the budget
    print(dense_steps, sum(per_step) + (dense_steps - len(per_step)) * per_step[-1])
    sys.exit()
cum, n = 0.0, 0
while True:  # the step count whose cumulative FLOPs come nearest the target (cum grows: stop when it would recede)
    f = per_step[n] if n < len(per_step) else per_step[-1]
    if abs(cum + f - target) >= abs(cum - target):
        break
    cum, n = cum + f, n + 1
print(n, cum)
EOF
)
    [ -z "$target" ] && target=$total
    n_steps[$name]=$n
    echo "$name: $n steps, $(awk -v t="$total" 'BEGIN { printf "%.4g", t }') FLOPs (dense: $steps steps)" \
        | tee -a "$out/steps.txt"
done < <(configs)

for seed in $seeds; do
    while IFS='|' read -r name flags _; do
        n=${n_steps[$name]}
        t0=$SECONDS
        # shellcheck disable=SC2086
        "$train" "${common[@]}" $flags --batch "$batch" --steps "$n" --warmup "$t_start" \
            --eval-interval "$(( n / 4 > 0 ? n / 4 : 1 ))" --eval-batches "$eval_batches" --seed "$seed" \
            --run-name "$name" --log "$out/logs/${name}_s$seed.jsonl" > "$out/logs/${name}_s$seed.txt" 2>&1 < /dev/null \
            || { echo "isoflop: $name seed $seed failed:"; tail -3 "$out/logs/${name}_s$seed.txt"; exit 1; }
        echo "$name seed $seed: $n steps, $(grep -o 'final val loss.*' "$out/logs/${name}_s$seed.txt"), $((SECONDS - t0)) s"
    done < <(configs)
done

python3 - "$out/logs" "$preset" "$batch" "$seq" "$seeds" > "$out/table.md" <<'EOF'
import json, statistics, sys
from pathlib import Path
logs, preset, B, T, seeds = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5].split()
runs = {}
for p in sorted(logs.glob("*.jsonl")):
    recs = [json.loads(l) for l in open(p)]
    summary = next(r for r in recs if r.get("type") == "summary")
    steps = [r for r in recs if r.get("type") == "step"]
    name = summary["run"]
    runs.setdefault(name, []).append(dict(loss=summary["val_loss"], flops=summary["flops"], seconds=summary["seconds"],
                                          steps=len(steps), sparsity=steps[-1].get("gate_sparsity")))
def ms(xs):
    return f"{statistics.mean(xs):.4f} ± {statistics.stdev(xs):.4f}" if len(xs) > 1 else f"{xs[0]:.4f}"
dense = statistics.mean(r["flops"] for r in runs["dense"])
print(f"isoFLOP comparison (GATES.md Sec. 6): preset {preset}, batch {B} x {T}, seeds {', '.join(seeds)}; every run "
      f"trained to the dense run's FLOPs ({dense:.4g}).\n")
print("| model | steps | training FLOPs (vs dense) | gate sparsity at θ (last step) | val loss (mean ± std) | time per run |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
def order(n):
    return (0 if n == "dense" else 1 if n.startswith("gated") else 2 if n.startswith("sgt") else 3, n)
for name in sorted(runs, key=order):
    rs = runs[name]
    label = {"dense": "Dense"}.get(name, name.replace("gated_l", "Gated, λ = ").replace("sgt_k", "SGT K_max = ")
                                   .replace("block", "Block Loop (L = 3)"))
    sp = [r["sparsity"] for r in rs if r["sparsity"] is not None]
    flops = statistics.mean(r["flops"] for r in rs)
    print(f"| {label} | {rs[0]['steps']} | {flops:.4g} ({100 * (flops / dense - 1):+.2f}%) | "
          f"{(f'{100 * statistics.mean(sp):.1f}%') if sp else '—'} | {ms([r['loss'] for r in rs])} | "
          f"{statistics.mean(r['seconds'] for r in rs):.1f} s |")
EOF
cat "$out/table.md"
