#!/usr/bin/env bash
# scripts/experiments.sh [BIN_DIR]: the paper's Tables 1, 2, 3 and 9 at small scale, 3 seeds each, on one GPU,
# in under 9 minutes (docs/RESULTS.md). Byte-level Tiny Shakespeare, the 12-layer preset char_12l, bf16.
#
#   Table 1  Vanilla, Block Loop (L = 3), SGT K_max = 1, 2, 3            vanilla block sgt_k1 sgt_k2 sgt_k3
#   Table 2  one loop step on one layer (1, 6, 11 of 0..11) over all heads, the 2 highest-entropy heads, the 2
#            lowest-entropy heads                                         attn_l<L> high_l<L> low_l<L>
#   Table 3  SGT K_max = 1 growing shallow to deep (D2S is Table 1's)    s2d_k1
#   Table 9  SGT K_max = 1 with t_start = Δt at 2% and 10% of the run (5% is Table 1's)    sgt_k1_ts<N>
#
# BIN_DIR (default .gpu) holds train_cuda and the libraries the GPU machine lacks (it has the CUDA toolkit, but
# not fmt), built on a machine with the toolkit (no GPU needed), and the data goes inside the repository
# (shared/data is not on the GPU machine; .gpu/ and .data/ are ignored by git):
#     cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90
#     cmake --build build-gpu -j2 --target train_cuda
#     mkdir -p .gpu .data && cp build-gpu/examples/train_cuda /lib/x86_64-linux-gnu/libfmt.so.9 \
#         /lib/x86_64-linux-gnu/libgomp.so.1 .gpu/
#     cp ../shared/data/tinyshakespeare.txt .data/
# Then, on the GPU machine (carrying .gpu and .data):   bash scripts/experiments.sh .gpu     (writes under $OUT)
# The script checks with ldd that nothing is missing and names what is.
#
# Output under $OUT (default ./experiments-out): logs/<run>_s<seed>.jsonl (one per run), progress.txt,
# summary.md (tools/summarize.py: mean ± std, FLOPs and time overheads), figures/*.png (tools/plot.py, when
# matplotlib is there), device.txt.
#
# Time: SGT_PARALLEL runs go side by side on the GPU (default 8 where nvidia-smi sees a GPU, else 1; a 12.7M model
# leaves most of an H200 idle, so 8 at a time finish far sooner than 8 one after the other; the time overheads are
# then measured under that sharing, see docs/RESULTS.md). A calibration (SGT_PARALLEL vanilla runs side by side)
# measures the time of a step and of a run's fixed costs, and the step count is chosen so that all runs fit in
# SGT_BUDGET_S seconds (default 420; at most SGT_MAX_STEPS = 5000 steps, at least SGT_MIN_STEPS = 200). Runs
# start seed by seed (every configuration of seed 1, then seed 2, then 3), and a run that would end after
# SGT_DEADLINE_S (default 500) seconds from the start is skipped, so the script ends in time (the tables and
# figures take a few seconds more) and what ran is complete per seed.
#
# Every setting is an environment variable, so the logic runs on a CPU in seconds (tests/examples/experiments.sh):
#   SGT_TRAIN (BIN_DIR/train_cuda)  SGT_PRECISION (bf16)  SGT_DATA (.data/tinyshakespeare.txt)  SGT_PRESET (char_12l)
#   SGT_BATCH (32)  SGT_SEQ (256)  SGT_LR (2e-3)  SGT_DROPOUT (0.1)  SGT_SEEDS ("1 2 3")  SGT_STEPS (calibrated)
#   SGT_LOOP_LAYERS ("1 6 11")  SGT_EVAL_BATCHES (16)  SGT_BUDGET_S  SGT_DEADLINE_S  SGT_MIN_STEPS  SGT_MAX_STEPS
#   SGT_PARALLEL
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$here/.gpu}
out=${OUT:-$here/experiments-out}
train=${SGT_TRAIN:-$bin/train_cuda}
precision=${SGT_PRECISION:-bf16}
data=${SGT_DATA:-$here/.data/tinyshakespeare.txt}
preset=${SGT_PRESET:-char_12l}
batch=${SGT_BATCH:-32}
seq=${SGT_SEQ:-256}
lr=${SGT_LR:-2e-3}
dropout=${SGT_DROPOUT:-0.1}
seeds=${SGT_SEEDS:-1 2 3}
loop_layers=${SGT_LOOP_LAYERS:-1 6 11}
eval_batches=${SGT_EVAL_BATCHES:-16}
budget=${SGT_BUDGET_S:-420}
deadline=${SGT_DEADLINE_S:-500}
min_steps=${SGT_MIN_STEPS:-200}
max_steps=${SGT_MAX_STEPS:-5000}
# Runs side by side on the one GPU (a small model leaves most of an H200 idle); one at a time without a GPU.
parallel=${SGT_PARALLEL:-$(nvidia-smi -L > /dev/null 2>&1 && echo 8 || echo 1)}
start=$(date +%s.%N)
elapsed() { awk -v s="$start" -v n="$(date +%s.%N)" 'BEGIN { printf "%.1f", n - s }'; }

[ -x "$train" ] || { echo "experiments: no program at $train, expected train_cuda built as the header says"; exit 1; }
[ -f "$data" ] || { echo "experiments: no data at $data, expected tinyshakespeare.txt copied into .data/"; exit 1; }
export LD_LIBRARY_PATH="$(dirname "$train"):/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
if missing=$(ldd "$train" 2>/dev/null | grep "not found"); then
    echo "experiments: $train needs libraries this machine lacks (copy them next to it):"
    echo "$missing"
    exit 1
fi
mkdir -p "$out/logs"
rm -f "$out"/logs/*.jsonl
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no GPU (nvidia-smi absent)"
  date -u +"%Y-%m-%d %H:%M UTC"; } > "$out/device.txt"
say() { echo "[$(elapsed) s] $*" | tee -a "$out/progress.txt"; }
say "device: $(head -1 "$out/device.txt") | preset $preset | batch $batch x $seq | $precision | data $data"

# The flags every run shares (steps and the schedule times are added per run).
common=(--data "$data" --preset "$preset" --batch "$batch" --seq "$seq" --lr "$lr" --dropout "$dropout"
        --eval-batches "$eval_batches" --quiet --precision "$precision")

# The configurations: name | flags. t_start and Δt are filled in from the step count (TS: 5% of the run).
configs() {
    echo "vanilla|--variant vanilla"
    echo "block|--variant block --L 3"
    for k in 1 2 3; do echo "sgt_k$k|--variant sgt --L 3 --h 2 --k-max $k"; done
    for l in $loop_layers; do
        echo "attn_l$l|--variant attention --loop-layer $l --loop-k 1"
        echo "high_l$l|--variant high --loop-layer $l --loop-k 1 --h 2"
        echo "low_l$l|--variant low --loop-layer $l --loop-k 1 --h 2"
    done
    echo "s2d_k1|--variant sgt --L 3 --h 2 --k-max 1 --direction s2d"
    echo "sgt_k1_ts@2|--variant sgt --L 3 --h 2 --k-max 1"
    echo "sgt_k1_ts@10|--variant sgt --L 3 --h 2 --k-max 1"
}
n_configs=$(configs | wc -l)
n_seeds=$(wc -w <<< "$seeds")
n_runs=$((n_configs * n_seeds))

# Calibration: $parallel short vanilla runs side by side (as the runs will be) give the seconds per training step
# and a run's fixed cost (start-up, data, model, evaluation).
if [ -n "${SGT_STEPS:-}" ]; then
    steps=$SGT_STEPS
    say "steps: $steps (SGT_STEPS), $parallel runs at a time"
else
    cal_steps=60
    t0=$(date +%s.%N)
    for p in $(seq "$parallel"); do
        "$train" "${common[@]}" --steps "$cal_steps" --warmup 5 --eval-interval "$cal_steps" --variant vanilla \
            --seed "$p" --log "$out/calibration_$p.jsonl" > "$out/calibration_$p.txt" 2>&1 < /dev/null &
    done
    wait || true
    t1=$(date +%s.%N)
    for p in $(seq "$parallel"); do
        grep -q '"type":"summary"' "$out/calibration_$p.jsonl" 2> /dev/null \
            || { echo "experiments: the calibration run failed:"; tail -5 "$out/calibration_$p.txt"; exit 1; }
    done
    train_s=$(cat "$out"/calibration_*.jsonl | grep '"type":"summary"' \
        | sed -E 's/.*"seconds":([0-9.eE+-]+).*/\1/' | sort -g | tail -1)
    # Loops add work: Block Loop a quarter of the layers twice, the rest a few percent; 1.08 on average, and the
    # evaluations (8 per run, eval_batches forwards each, a third of a step per forward) on top.
    steps=$(awk -v b="$budget" -v used="$(elapsed)" -v wall="$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')" \
        -v ts="$train_s" -v n="$n_runs" -v p="$parallel" -v cs="$cal_steps" -v eb="$eval_batches" \
        -v lo="$min_steps" -v hi="$max_steps" 'BEGIN {
            per_step = ts / cs; fixed = wall - ts; if (fixed < 0) fixed = 0
            waves = int((n + p - 1) / p)
            s = ((b - used) / waves - fixed) / (1.08 * per_step) - 8 * eb / 3
            s = int(s / 50) * 50; if (s < lo) s = lo; if (s > hi) s = hi; print s }')
    say "calibration ($parallel runs at a time): $(awk -v t="$train_s" -v c="$cal_steps" 'BEGIN{printf "%.1f", 1000*t/c}') ms per step," \
        "$(awk -v a="$t0" -v b="$t1" -v t="$train_s" 'BEGIN{printf "%.1f", b-a-t}') s fixed per run -> $steps steps" \
        "for $n_runs runs"
fi
ts=$(( steps / 20 > 0 ? steps / 20 : 1 ))   # t_start = Δt = 5% of the run (the paper: 250 of 5035)
warmup=$ts
interval=$(( steps / 8 > 0 ? steps / 8 : 1 ))

# One run, in the background; its wall time goes to .last_run_s, the estimate for the deadline check.
run_one() {  # i name seed run_ts flags [extra flags...]
    local i=$1 name=$2 seed=$3 run_ts=$4 flags=$5 r0 est
    shift 5
    r0=$(date +%s.%N)
    # shellcheck disable=SC2086  # $flags holds several words on purpose
    if "$train" "${common[@]}" --steps "$steps" --warmup "$warmup" --t-start "$run_ts" --dt "$run_ts" \
        --eval-interval "$interval" --seed "$seed" --run-name "$name" $flags "$@" \
        --log "$out/logs/${name}_s$seed.jsonl" > "$out/logs/${name}_s$seed.txt" 2>&1 < /dev/null; then
        est=$(awk -v a="$r0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
        echo "$est" > "$out/.last_run_s"
        say "[$i/$n_runs] $name seed $seed: $(grep -o 'final val loss.*' "$out/logs/${name}_s$seed.txt")," \
            "$(grep -o '[0-9.]* s (' "$out/logs/${name}_s$seed.txt" | tr -d ' (') training, $(printf '%.1f' "$est") s in all"
    else
        say "[$i/$n_runs] $name seed $seed: FAILED: $(tail -1 "$out/logs/${name}_s$seed.txt")"
    fi
}

i=0
skipped=0
rm -f "$out/.last_run_s"
for seed in $seeds; do
    while IFS='|' read -r name flags; do
        i=$((i + 1))
        run_ts=$ts
        if [[ $name == *@* ]]; then  # sgt_k1_ts@P: t_start = Δt = P% of the run
            run_ts=$(( steps * ${name#*@} / 100 > 0 ? steps * ${name#*@} / 100 : 1 ))
            name="${name%@*}$run_ts"
        fi
        while [ "$(jobs -rp | wc -l)" -ge "$parallel" ]; do wait -n || true; done
        est=$(cat "$out/.last_run_s" 2> /dev/null || true)
        if [ -n "$est" ] && awk -v e="$(elapsed)" -v r="$est" -v d="$deadline" 'BEGIN { exit !(e + 1.3 * r > d) }'; then
            say "[$i/$n_runs] $name seed $seed: skipped (would end after the ${deadline} s deadline)"
            skipped=$((skipped + 1))
            continue
        fi
        extra=()
        if [ "$seed" = "$(awk '{print $1}' <<< "$seeds")" ]; then
            extra=(--entropy-every "$(( steps / 40 > 0 ? steps / 40 : 1 ))")
            [ "$name" = sgt_k3 ] && extra+=(--log-flow)
        fi
        run_one "$i" "$name" "$seed" "$run_ts" "$flags" "${extra[@]}" &
        [ "$parallel" -gt 1 ] || wait
    done < <(configs)
done
wait
say "runs done ($skipped skipped)"

if python3 "$here/tools/summarize.py" "$out/logs" --out "$out/summary.tables.md" > /dev/null; then
    { echo "Device: $(head -1 "$out/device.txt"); $(sed -n 2p "$out/device.txt"); $steps steps per run," \
           "$skipped runs skipped; command: bash scripts/experiments.sh"; echo; cat "$out/summary.tables.md"; } \
        > "$out/summary.md"
    rm -f "$out/summary.tables.md"
    say "summary: $out/summary.md"
else
    say "summary: tools/summarize.py failed"
fi
first=$(awk '{print $1}' <<< "$seeds")
if python3 -c "import matplotlib" 2> /dev/null; then
    python3 "$here/tools/plot.py" "$out/logs/sgt_k3_s$first.jsonl" --out "$out/figures" \
        --figures heatmap,trajectories,variance,flow > /dev/null \
        && say "figures of sgt_k3 seed $first: $out/figures"
    t1_logs=()
    for n in vanilla block sgt_k1 sgt_k2 sgt_k3; do
        [ -f "$out/logs/${n}_s$first.jsonl" ] && t1_logs+=("$out/logs/${n}_s$first.jsonl")
    done
    [ ${#t1_logs[@]} -gt 0 ] && python3 "$here/tools/plot.py" "${t1_logs[@]}" --out "$out/figures" \
        --figures growth,flops > /dev/null && say "growth timeline and loss against FLOPs: $out/figures"
else
    say "figures: matplotlib is not installed here (pip install -r tools/plot_requirements.txt)"
fi
cat "$out/summary.md" 2> /dev/null
say "done"
