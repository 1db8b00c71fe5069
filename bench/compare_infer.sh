#!/usr/bin/env bash
# bench/compare_infer.sh BEFORE_DIR AFTER_DIR [MODELS] [ROUNDS]
# bench/compare_infer.sh NAME=DIR[:ARGS] NAME=DIR[:ARGS] [NAME=DIR[:ARGS] ...] [MODELS] [ROUNDS]
# Two or more builds' decode steps in one job on one GPU, interleaved (each side in turn, ROUNDS times, default 2) so
# that all see the same clocks and the same neighbours: bench_infer of each directory (decode steps replayed as a
# CUDA graph, the median of its steps). The first form names its sides before and after; the second names each
# side and may give it arguments of its own after a colon (DIR itself without one), e.g. a chain of builds that each
# add one change, and the last build under another setting:
#   bench/compare_infer.sh main=B/main p1=B/p1 p12=B/p12 br=B/br "br-ticket=B/br:--decode-merge ticket" gpt2 2
# Prints a markdown table per model, context and batch (none with ROUNDS 0, for SGT_NCU alone): each variant's
# decode step on each side (the mean of the rounds, with each round's), the change from the side before it, and
# the looped variants' overhead over vanilla on each side (issue 10's bar: SGT's decode overhead no more than its
# per-token FLOPs and cache-bytes overhead). The JSON lines go to
# $OUT/compare_infer.jsonl (or ./compare_infer.jsonl), each with its "side" and "round". Steps move between GPUs and
# jobs by more than most kernel changes (docs/BENCHMARKS.md): compare builds within one run of this script, not
# across runs.
#   SGT_INFER_ARGS: bench_infer's arguments for every side (default below: vanilla and SGT, batches 32, 16 and 1,
#                   context 1024);
#   SGT_BEFORE_ARGS, SGT_AFTER_ARGS: more arguments for one side of the first form, so that one build can be
#                   compared with itself under another setting, e.g. decode attention's multiply-adds against its
#                   tensor cores:
#   SGT_BEFORE_ARGS="--decode-tensor-cores off" bench/compare_infer.sh BIN BIN gpt2 2
#   SGT_NCU=1:      then the first and the last side's decode steps under Nsight Compute, one kernel at a time
#                   (bench_infer --no-graph --profile-decode: the steps after the first, no prefill), into
#                   $OUT/ncu_NAME.csv (ncu_before.csv and ncu_after.csv in the first form), and
#                   tools/ncu_summary.py's tables of both side by side, per decode step;
#   SGT_NCU_ARGS:   bench_infer's arguments there (default: gpt2's SGT at batch 32, context 1024, 3 decode tokens, of
#                   which 2 are profiled; one model, variant, batch and context).
set -uo pipefail
usage() {
    echo "usage: bench/compare_infer.sh BEFORE_DIR AFTER_DIR [MODELS] [ROUNDS]" >&2
    echo "       bench/compare_infer.sh NAME=DIR[:ARGS] NAME=DIR[:ARGS] [NAME=DIR[:ARGS] ...] [MODELS] [ROUNDS]" >&2
    exit 2
}
names=() dirs=() own_args=()  # the sides in order: name, build directory, its own bench_infer arguments
if [[ ${1:-} == *=* ]]; then
    while [[ ${1:-} == *=* ]]; do
        name=${1%%=*} rest=${1#*=}
        args=""
        [[ $rest == *:* ]] && args=${rest#*:}
        [[ $name =~ ^[A-Za-z0-9_.-]+$ ]] ||
            { echo "compare_infer: a side's NAME is letters, digits, _ . -, found '$name' in '$1'" >&2; exit 2; }
        [[ " ${names[*]} " == *" $name "* ]] && { echo "compare_infer: side $name is named twice" >&2; exit 2; }
        names+=("$name") dirs+=("${rest%%:*}") own_args+=("$args")
        shift
    done
    [ ${#names[@]} -ge 2 ] || usage
    [ -z "${SGT_BEFORE_ARGS:-}${SGT_AFTER_ARGS:-}" ] ||
        { echo "compare_infer: with named sides, give a side's own arguments after a colon (NAME=DIR:ARGS), not" \
               "in SGT_BEFORE_ARGS or SGT_AFTER_ARGS" >&2; exit 2; }
else
    [ $# -ge 2 ] || usage
    names=(before after) dirs=("$1" "$2") own_args=("${SGT_BEFORE_ARGS:-}" "${SGT_AFTER_ARGS:-}")
    shift 2
fi
models=${1:-gpt2,char_small}
rounds=${2:-2}
[[ $rounds =~ ^[0-9]+$ ]] || { echo "compare_infer: ROUNDS is a count of rounds, found '$rounds'" >&2; exit 2; }
for dir in "${dirs[@]}"; do
    [ -x "$dir/bench_infer" ] || { echo "compare_infer: no bench_infer in $dir" >&2; exit 2; }
done
here=$(dirname "$0")
out=${OUT:-.}
log=$out/compare_infer.jsonl
: > "$log"
read -ra common <<< "${SGT_INFER_ARGS:---variants vanilla,sgt --batches 32,16,1 --contexts 1024}"
status=0
for r in $(seq "$rounds"); do
    for i in "${!names[@]}"; do
        read -ra side_args <<< "${own_args[i]}"
        lines=$("${dirs[i]}/bench_infer" --models "$models" "${common[@]}" "${side_args[@]}") ||
            { echo "compare_infer: ${dirs[i]}/bench_infer failed (${names[i]}, round $r)" >&2; status=1; }
        grep '^{' <<< "$lines" | sed "s/^{/{\"side\":\"${names[i]}\",\"round\":$r,/" >> "$log"
    done
done
if [ "$rounds" -gt 0 ]; then
python3 - "$log" "${names[@]}" << 'PY' || status=1
import json, sys
from collections import defaultdict
sides = sys.argv[2:]
runs = defaultdict(list)  # (model, context, batch, variant, side) -> decode step medians, ms
for line in open(sys.argv[1]):
    j = json.loads(line)
    runs[(j["model"], j["context"], j["batch"], j["variant"], j["side"])].append(j["decode_step_ms"])
if not runs:
    sys.exit("compare_infer: no results")
mean = lambda xs: sum(xs) / len(xs)
cell = lambda xs: f"{mean(xs):.4f} ({', '.join(f'{x:.4f}' for x in xs)})" if xs else "–"
pct = lambda a, b: f"{100 * (mean(a) / mean(b) - 1):+.1f}%" if a and b else "–"
changes = ["change"] if len(sides) == 2 else [f"{s} vs {p}" for p, s in zip(sides, sides[1:])]
print("| model | context | batch | variant | " + " | ".join(f"{s} ms" for s in sides) + " | " + " | ".join(changes) +
      " | over vanilla: " + " → ".join(sides) + " |")
print("| --- | ---: | ---: | --- | " + "---: | " * (2 * len(sides) - 1) + "--- |")
for shape in dict.fromkeys(k[:3] for k in runs):
    variants = list(dict.fromkeys(k[3] for k in runs if k[:3] == shape))
    for variant in sorted(variants, key=lambda v: v != "vanilla"):  # vanilla first, the rest as they ran
        xs = [runs.get(shape + (variant, s), []) for s in sides]
        over = "–"
        if variant != "vanilla":
            over = " → ".join(pct(x, runs.get(shape + ("vanilla", s))) for x, s in zip(xs, sides))
        model, context, batch = shape
        print(f"| {model} | {context} | {batch} | {variant} | " + " | ".join(cell(x) for x in xs) + " | " +
              " | ".join(pct(a, b) for b, a in zip(xs, xs[1:])) + f" | {over} |")
PY
fi
[ -n "${SGT_NCU:-}" ] || exit $status
read -ra ncu_args <<< "${SGT_NCU_ARGS:---models gpt2 --variants sgt --batches 32 --contexts 1024 --decode-tokens 3}"
profiled=0  # the decode steps profiled: --decode-tokens less the first
for ((i = 0; i + 1 < ${#ncu_args[@]}; ++i)); do
    [ "${ncu_args[i]}" = --decode-tokens ] && profiled=$((ncu_args[i + 1] - 1))
done
[ $profiled -ge 1 ] || { echo "compare_infer: SGT_NCU_ARGS needs --decode-tokens of at least 2" >&2; exit 2; }
profiled_sides=(0 $((${#names[@]} - 1)))  # the first side and the last
for i in "${profiled_sides[@]}"; do
    read -ra side_args <<< "${own_args[i]}"
    ncu --profile-from-start off --csv --print-units base --cache-control none --clock-control none \
        --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum \
        "${dirs[i]}/bench_infer" "${ncu_args[@]}" "${side_args[@]}" --no-graph --profile-decode \
        > "$out/ncu_${names[i]}.csv" ||
        { echo "compare_infer: ncu over ${dirs[i]}/bench_infer failed (${names[i]})" >&2; status=1; }
done
echo
echo "Decode steps one kernel at a time (ncu; $profiled steps of bench_infer ${ncu_args[*]}), per step:"
python3 "$here/../tools/ncu_summary.py" "$out/ncu_${names[0]}.csv" "$out/ncu_${names[-1]}.csv" --steps $profiled ||
    status=1
exit $status
