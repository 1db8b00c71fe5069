#!/usr/bin/env bash
# examples/train --gates (sgt/gates.hpp): 24 steps straight and 12 + checkpoint + --resume 12 give the same losses
# and gate sparsities, bit for bit (the gates and the gate allocation's growth state are in the checkpoint); the
# sparsity is logged; self-distillation (--distill-gates) from a trained dense checkpoint lowers its loss and
# reports sparsity and LM losses; --sample-every samples a gated model, and examples/generate decodes its checkpoint
# with its gates, reporting the head reads the closed gates skipped; a σReparam run samples and decodes too; bad
# gate options are refused with messages.
set -euo pipefail
train=$1
generate=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
common=(--preset char_mini --batch 2 --seq 48 --warmup 4 --t-start 6 --dt 4 --eval-interval 6 --eval-batches 2
        --dropout 0.1 --quiet --threads 1 --gates --gate-lambda 0.05 --n-dense 1 --allocation gate)
"$train" "${common[@]}" --steps 24 --log "$work/straight.jsonl" > "$work/straight.out"
grep -q "gate sparsity" "$work/straight.out"
"$train" "${common[@]}" --steps 24 --log "$work/first.jsonl" --checkpoint-dir "$work/ck" --checkpoint-every 12 > /dev/null
echo "step_00000012" > "$work/ck/latest"
"$train" "${common[@]}" --steps 24 --log "$work/second.jsonl" --resume "$work/ck" > /dev/null 2> "$work/second.err"
steps() { grep '"type":"step"' "$1" | sed -E 's/.*"gate_sparsity":([^,]*),.*"loss":([^,]*),.*"step":([0-9]+).*/\3 \2 \1/' | sort -n; }
[ "$(steps "$work/straight.jsonl" | wc -l)" -eq 24 ]
diff <(steps "$work/straight.jsonl" | awk '$1 > 12') <(steps "$work/second.jsonl")
[ "$(steps "$work/second.jsonl" | wc -l)" -eq 12 ]
echo "gates resume: steps 13..24 identical (loss and gate sparsity)"

# Decoding with the gates (GATES.md Sec. 3.1): generate reads the gate options from the checkpoint.
"$generate" --checkpoint "$work/ck" --prompt "ROMEO:" --tokens 24 --seed 3 > "$work/gen.out" 2> "$work/gen.err"
grep -E "gates \(θ 0.3, 1 dense heads\): [0-9]+ of [1-9][0-9]* gated head reads skipped" "$work/gen.err"
"$train" "${common[@]}" --steps 6 --sample-every 6 --sample-tokens 12 --log "$work/sample.jsonl" > /dev/null
grep -q '"type":"sample"' "$work/sample.jsonl"
echo "gated decoding: generate and --sample-every run the gates"

# σReparam (GATES.md Sec. 5): a run samples, and generate decodes its checkpoint (Ŵ = (γ/σ) W folded in).
"$train" --preset char_mini --batch 2 --seq 48 --steps 12 --warmup 2 --quiet --threads 1 --sigma-reparam \
    --sample-every 12 --sample-tokens 8 --log "$work/sigma.jsonl" --checkpoint-dir "$work/sigma" > /dev/null
grep -q '"type":"sample"' "$work/sigma.jsonl"
"$generate" --checkpoint "$work/sigma" --prompt "ROMEO:" --tokens 8 --seed 1 > /dev/null 2> "$work/sigma_gen.err"
grep -q "decode 7 tokens" "$work/sigma_gen.err"
echo "σReparam: --sample-every and generate run the folded weights"

# Self-distillation (GATES.md Sec. 4): a dense char_mini trained 60 steps, then its gates alone for 60 steps.
"$train" --preset char_mini --batch 4 --seq 48 --steps 60 --variant vanilla --quiet --threads 1 \
    --checkpoint-dir "$work/dense" > /dev/null
"$train" --preset char_mini --batch 4 --seq 48 --steps 60 --variant vanilla --quiet --threads 1 --gates --lr 0.1 \
    --warmup 1 --distill-gates "$work/dense" --log "$work/distill.jsonl" > "$work/distill.out"
grep "distillation" -A1 "$work/distill.out"
bce() { grep '"type":"step"' "$work/distill.jsonl" | sed -E 's/.*"gate_loss":([^,]*),.*"step":([0-9]+).*/\2 \1/' | sort -n; }
first=$(bce | head -5 | awk '{s += $2} END {print s / NR}')
last=$(bce | tail -5 | awk '{s += $2} END {print s / NR}')
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < 0.9 * a) }' || { echo "distillation loss did not fall: $first -> $last"; exit 1; }
grep -q '"type":"distill"' "$work/distill.jsonl"
echo "distillation: BCE(s, tau) over the first 5 steps $first, over the last 5 $last"

expect_error() {  # expect_error MESSAGE ARGS...
    local msg=$1; shift
    set +e
    out=$("$train" --steps 30 --quiet "$@" 2>&1)
    rc=$?
    set -e
    [ $rc -eq 1 ] && grep -qF -- "$msg" <<< "$out" || { echo "expected '$msg', got rc $rc: $out"; exit 1; }
}
expect_error "gates: expected a threshold θ in (0, 1), found 1.5" --gates --gate-threshold 1.5
expect_error "gates: expected a sparsity weight λ ≥ 0, found -1" --gates --gate-lambda -1
expect_error "gates: expected n_dense ≤ 4 (the head count), found 9" --gates --n-dense 9
expect_error "the gate options (--gate-*, --n-dense, --allocation gate, --distill-gates) need --gates" --allocation gate
expect_error "--distill-gates) need --gates" --distill-gates "$work/dense"
expect_error "differs from this model's" --preset char_small --gates --distill-gates "$work/dense"
expect_error "--allocation: expected entropy or gate, found 'x'" --allocation x
echo "bad gate options: refused with messages"
