#!/usr/bin/env bash
# examples/generate on a checkpoint that examples/train writes here: the same seed gives the same text, greedy
# decoding is repeatable and starts with the prompt, the run ends with prefill and decode tokens/s, train
# --sample-every prints samples, and bad input exits 1 with a message saying what was expected.
set -euo pipefail
train=$1
generate=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for i in $(seq 200); do printf 'the quick brown fox jumps over the lazy dog. ' ; done > "$work/text.txt"
"$train" --preset char_mini --data "$work/text.txt" --steps 30 --batch 4 --seq 48 --warmup 3 --t-start 6 --dt 6 \
  --eval-interval 15 --eval-batches 2 --sample-every 15 --sample-tokens 24 --threads 1 --checkpoint-dir "$work/ck" \
  --log "$work/run.jsonl" > /dev/null 2> "$work/train.err"
grep -q "sample at step 15: " "$work/train.err"
[ "$(grep -c '"type":"sample"' "$work/run.jsonl")" -eq 2 ]
echo "train --sample-every: 2 samples"

gen() { "$generate" --checkpoint "$work/ck" --threads 1 "$@"; }
a=$(gen --prompt "the quick " --tokens 40 --seed 7 --top-k 20 --top-p 0.9 2> "$work/a.err")
b=$(gen --prompt "the quick " --tokens 40 --seed 7 --top-k 20 --top-p 0.9 2> /dev/null)
[ "$a" = "$b" ] && [ "${a:0:10}" = "the quick " ] && [ ${#a} -eq 50 ]
grep -qE "^prefill 10 tokens: [0-9]+ tokens/s \| decode 39 tokens: [0-9]+ tokens/s$" "$work/a.err"
grep -q "preset char_mini | cpu fp32 | structure layer" "$work/a.err"
echo "seeded sampling: repeatable ($a)"
g1=$(gen --prompt "the " --tokens 30 --temperature 0 2> /dev/null)
g2=$(gen --prompt "the " --tokens 30 --temperature 0 --seed 99 2> /dev/null)
[ "$g1" = "$g2" ] && [ ${#g1} -eq 34 ]
echo "greedy: the same text whatever the seed ($g1)"
[ ${#g2} -eq 34 ]
[ "$(gen --prompt-ids 116,104,101 --tokens 5 --temperature 0 --quiet 2>&1 | grep -c 'decode 4 tokens')" -eq 1 ]

set +e
fails=0
expect() {  # expect "message part" args...
  local want=$1
  shift
  local out rc
  out=$("$generate" --threads 1 "$@" 2>&1)
  rc=$?
  if [ $rc -ne 1 ] || ! grep -qF -- "$want" <<< "$out"; then
    echo "FAIL ($rc): generate $* -> $out"
    fails=$((fails + 1))
  else
    echo "ok: $want"
  fi
}
expect "the prompt is empty: expected --prompt TEXT or --prompt-ids with at least one token" --prompt "" --tokens 4 --checkpoint "$work/ck"
expect "the prompt (5 tokens) plus 200 new tokens needs a context of 204, beyond the preset's maximum sequence 128" \
  --prompt "hello" --tokens 200 --checkpoint "$work/ck"
expect "inference: prompt 0 (5 tokens) plus 20 new tokens is beyond the context of 16 the cache was built for" \
  --prompt "hello" --tokens 20 --context 16 --checkpoint "$work/ck"
expect "--prompt-ids: token 256 at position 1 is outside the vocabulary [0, 256)" --prompt-ids 1,256 --tokens 2 --checkpoint "$work/ck"
expect "sampling: expected top_p in (0, 1], found 0" --prompt "a" --top-p 0 --checkpoint "$work/ck"
expect "sampling: expected top_p in (0, 1], found 1.5" --prompt "a" --top-p 1.5 --checkpoint "$work/ck"
expect "sampling: expected a temperature >= 0 (0 = greedy), found -1" --prompt "a" --temperature -1 --checkpoint "$work/ck"
expect "the checkpoint's model config" --prompt-ids 1 --preset tiny --tokens 2 --checkpoint "$work/ck"
expect "no checkpoint at" --prompt "a" --checkpoint "$work/missing"
exit $fails
