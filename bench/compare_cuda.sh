#!/usr/bin/env bash
# bench/compare_cuda.sh BEFORE_DIR AFTER_DIR [PRESETS] [ROUNDS]: two builds' CUDA training steps in one job on one
# GPU, interleaved (before, after, before, after, ... ROUNDS times per preset, default 2) so that both see the same
# clocks and the same neighbours, then torch.compile's step of the same models (skipped with SGT_NO_TORCH=1).
# Prints a markdown table of the medians averaged over the rounds (with each round's), the change, the ratio of
# the after build to torch.compile and each variant's step-time overhead over vanilla; the JSON lines go to
# $OUT/compare.jsonl (or ./compare.jsonl). A step time moves by up to 0.7 ms between jobs on an H200
# (docs/BENCHMARKS.md): compare builds within one run of this script, not across runs.
# SGT_BEFORE_ARGS and SGT_AFTER_ARGS add bench_cuda_step arguments to one side, so that one build can be compared
# with itself under another setting, e.g. loop steps one by one against subspace runs:
#   SGT_BEFORE_ARGS="--loop-subspace off" bench/compare_cuda.sh BIN BIN "gpt2 gpt2_2k" 2
set -uo pipefail
before=$1
after=$2
presets=${3:-"gpt2"}
rounds=${4:-2}
here=$(dirname "$0")
log=${OUT:-.}/compare.jsonl
: > "$log"
export PYTHONUNBUFFERED=1
err=$(mktemp)  # a run's messages (its progress, or why it failed: the last line is shown)
trap 'rm -f "$err"' EXIT
status=0
flags=(--variants vanilla,sgt,block --precision bf16 --steps 20 --warmup 5)
for p in $presets; do
    for r in $(seq "$rounds"); do
        for side in before after; do
            dir=$before args=${SGT_BEFORE_ARGS:-}
            [ $side = after ] && dir=$after args=${SGT_AFTER_ARGS:-}
            read -ra side_flags <<< "$args"
            lines=$("$dir/bench_cuda_step" --preset "$p" "${flags[@]}" "${side_flags[@]}" 2> "$err") ||
                { echo "compare_cuda: $dir/bench_cuda_step failed ($side, round $r): $(tail -1 "$err")" >&2; status=1; }
            grep '^{' <<< "$lines" | sed "s/^{/{\"side\":\"$side\",\"round\":$r,/" >> "$log"
        done
    done
    if [ -z "${SGT_NO_TORCH:-}" ]; then
        lines=$(python3 "$here/torch_step.py" --preset "$p" --modes compile "${flags[@]}" 2> "$err") ||
            { echo "compare_cuda: torch_step.py failed: $(tail -1 "$err")" >&2; status=1; }
        grep '^{' <<< "$lines" | sed 's/^{/{"side":"compile",/' >> "$log"
    fi
done
python3 - "$log" << 'PY' || status=1
import json, sys
from collections import defaultdict
runs = defaultdict(list)  # (preset, variant, side) -> step medians
mem = {}
for line in open(sys.argv[1]):
    j = json.loads(line)
    key = (j["preset"], j["variant"], j["side"])
    runs[key].append(j["step_ms_median"])
    mem[key] = j.get("peak_mem_mib")
mean = lambda xs: sum(xs) / len(xs)
print("| preset | variant | before ms | after ms | change | torch.compile ms | after / compile | overhead (compile's) | after MiB |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for preset in dict.fromkeys(k[0] for k in runs):
    for variant in ("vanilla", "sgt", "block"):
        b, a, c = (runs.get((preset, variant, s)) for s in ("before", "after", "compile"))
        if not a:
            continue
        cell = lambda xs: f"{mean(xs):.2f} ({', '.join(f'{x:.2f}' for x in xs)})" if xs else "–"
        change = f"{100 * (mean(a) / mean(b) - 1):+.1f}%" if b else "–"
        ratio = f"{mean(a) / mean(c):.3f}x" if c else "–"
        v0, c0 = runs.get((preset, "vanilla", "after")), runs.get((preset, "vanilla", "compile"))
        over = "–"
        if variant != "vanilla" and v0:
            over = f"{100 * (mean(a) / mean(v0) - 1):+.1f}%"
            if c and c0:
                over += f" ({100 * (mean(c) / mean(c0) - 1):+.1f}%)"
        m = mem.get((preset, variant, "after"))
        m = f"{m:.0f}" if m is not None else "–"
        print(f"| {preset} | {variant} | {cell(b)} | {cell(a)} | {change} | {cell(c)} | {ratio} | {over} | {m} |")
PY
exit $status
