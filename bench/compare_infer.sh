#!/usr/bin/env bash
# bench/compare_infer.sh BEFORE_DIR AFTER_DIR [MODELS] [ROUNDS]: two builds' decode steps in one job on one GPU,
# interleaved (before, after, before, after, ... ROUNDS times, default 2) so that both see the same clocks and the
# same neighbours: bench_infer of each directory (decode steps replayed as a CUDA graph, the median of its steps).
# Prints a markdown table per model, context and batch (none with ROUNDS 0, for SGT_NCU alone): each variant's
# decode step before and after (the mean of the rounds, with each round's), the change, and the looped variants'
# overhead over vanilla on each side (issue 10's bar: SGT's decode overhead no more than its per-token FLOPs and
# cache-bytes overhead). The JSON lines go to
# $OUT/compare_infer.jsonl (or ./compare_infer.jsonl). Steps move between GPUs and jobs by more than most kernel
# changes (docs/BENCHMARKS.md): compare builds within one run of this script, not across runs.
#   SGT_INFER_ARGS: bench_infer's arguments for both sides (default below: vanilla and SGT, batches 32, 16 and 1,
#                   context 1024);
#   SGT_BEFORE_ARGS, SGT_AFTER_ARGS: more arguments for one side, so that one build can be compared with itself
#                   under another setting, e.g. decode attention's multiply-adds against its tensor cores:
#   SGT_BEFORE_ARGS="--decode-tensor-cores off" bench/compare_infer.sh BIN BIN gpt2 2
#   SGT_NCU=1:      then each side's decode steps under Nsight Compute, one kernel at a time (bench_infer --no-graph
#                   --profile-decode: the steps after the first, no prefill), into $OUT/ncu_before.csv and
#                   ncu_after.csv, and tools/ncu_summary.py's tables of both side by side, per decode step;
#   SGT_NCU_ARGS:   bench_infer's arguments there (default: gpt2's SGT at batch 32, context 1024, 3 decode tokens, of
#                   which 2 are profiled; one model, variant, batch and context).
set -uo pipefail
[ $# -ge 2 ] || { echo "usage: bench/compare_infer.sh BEFORE_DIR AFTER_DIR [MODELS] [ROUNDS]" >&2; exit 2; }
before=$1
after=$2
models=${3:-gpt2,char_small}
rounds=${4:-2}
for dir in "$before" "$after"; do
    [ -x "$dir/bench_infer" ] || { echo "compare_infer: no bench_infer in $dir" >&2; exit 2; }
done
here=$(dirname "$0")
out=${OUT:-.}
log=$out/compare_infer.jsonl
: > "$log"
read -ra common <<< "${SGT_INFER_ARGS:---variants vanilla,sgt --batches 32,16,1 --contexts 1024}"
status=0
use_side() {  # use_side before|after: its build directory (dir) and its own arguments (side_args)
    local args=${SGT_BEFORE_ARGS:-}
    dir=$before
    [ "$1" = after ] && dir=$after args=${SGT_AFTER_ARGS:-}
    read -ra side_args <<< "$args"
}
for r in $(seq "$rounds"); do
    for side in before after; do
        use_side $side
        lines=$("$dir/bench_infer" --models "$models" "${common[@]}" "${side_args[@]}") ||
            { echo "compare_infer: $dir/bench_infer failed ($side, round $r)" >&2; status=1; }
        grep '^{' <<< "$lines" | sed "s/^{/{\"side\":\"$side\",\"round\":$r,/" >> "$log"
    done
done
if [ "$rounds" -gt 0 ]; then
python3 - "$log" << 'PY' || status=1
import json, sys
from collections import defaultdict
runs = defaultdict(list)  # (model, context, batch, variant, side) -> decode step medians, ms
for line in open(sys.argv[1]):
    j = json.loads(line)
    runs[(j["model"], j["context"], j["batch"], j["variant"], j["side"])].append(j["decode_step_ms"])
if not runs:
    sys.exit("compare_infer: no results")
mean = lambda xs: sum(xs) / len(xs)
cell = lambda xs: f"{mean(xs):.4f} ({', '.join(f'{x:.4f}' for x in xs)})" if xs else "–"
print("| model | context | batch | variant | before ms | after ms | change | over vanilla: before → after |")
print("| --- | ---: | ---: | --- | ---: | ---: | ---: | --- |")
for shape in dict.fromkeys(k[:3] for k in runs):
    variants = list(dict.fromkeys(k[3] for k in runs if k[:3] == shape))
    for variant in sorted(variants, key=lambda v: v != "vanilla"):  # vanilla first, the rest as they ran
        b, a = (runs.get(shape + (variant, s), []) for s in ("before", "after"))
        change = f"{100 * (mean(a) / mean(b) - 1):+.1f}%" if a and b else "–"
        over = "–"
        if variant != "vanilla":
            o = []
            for s, xs in (("before", b), ("after", a)):
                v0 = runs.get(shape + ("vanilla", s))
                o.append(f"{100 * (mean(xs) / mean(v0) - 1):+.1f}%" if xs and v0 else "–")
            over = " → ".join(o)
        model, context, batch = shape
        print(f"| {model} | {context} | {batch} | {variant} | {cell(b)} | {cell(a)} | {change} | {over} |")
PY
fi
[ -n "${SGT_NCU:-}" ] || exit $status
read -ra ncu_args <<< "${SGT_NCU_ARGS:---models gpt2 --variants sgt --batches 32 --contexts 1024 --decode-tokens 3}"
profiled=0  # the decode steps profiled: --decode-tokens less the first
for ((i = 0; i + 1 < ${#ncu_args[@]}; ++i)); do
    [ "${ncu_args[i]}" = --decode-tokens ] && profiled=$((ncu_args[i + 1] - 1))
done
[ $profiled -ge 1 ] || { echo "compare_infer: SGT_NCU_ARGS needs --decode-tokens of at least 2" >&2; exit 2; }
for side in before after; do
    use_side $side
    ncu --profile-from-start off --csv --print-units base --cache-control none --clock-control none \
        --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum \
        "$dir/bench_infer" "${ncu_args[@]}" "${side_args[@]}" --no-graph --profile-decode > "$out/ncu_$side.csv" ||
        { echo "compare_infer: ncu over $dir/bench_infer failed ($side)" >&2; status=1; }
done
echo
echo "Decode steps one kernel at a time (ncu; $profiled steps of bench_infer ${ncu_args[*]}), per step:"
python3 "$here/../tools/ncu_summary.py" "$out/ncu_before.csv" "$out/ncu_after.csv" --steps $profiled || status=1
exit $status
