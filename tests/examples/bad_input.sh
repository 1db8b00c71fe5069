#!/usr/bin/env bash
# examples/train on bad input: each case exits non-zero and prints an error saying what was expected and found.
set -uo pipefail
train=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fails=0
expect() {  # expect "message part" args...
  local want=$1
  shift
  local out rc
  out=$("$train" --quiet --threads 1 "$@" 2>&1)
  rc=$?
  if [ $rc -eq 0 ] || ! grep -qF -- "$want" <<< "$out"; then
    echo "FAIL ($rc): train $* -> $out"
    fails=$((fails + 1))
  else
    echo "ok: $want"
  fi
}
: > "$work/empty.txt"
printf 'short text' > "$work/short.txt"
printf 'not a safetensors file, longer than eight bytes' > "$work/ck_model"
mkdir -p "$work/ck/step_00000001"
for f in model.safetensors optimizer.safetensors config.json; do cp "$work/ck_model" "$work/ck/step_00000001/$f"; done
echo step_00000001 > "$work/ck/latest"
expect "no such file" --data "$work/missing.txt" --steps 30
expect "the file is empty (0 bytes)" --data "$work/empty.txt" --steps 30
expect "expected at least T+1 = 33 for one sequence" --data "$work/short.txt" --steps 30
expect "sequence length 300 is outside [2, 128], the preset's maximum" --seq 300 --steps 30
expect "model.safetensors': header length" --resume "$work/ck" --steps 30
expect "training: the loss is not finite" --lr 1e30 --warmup 1 --steps 30 --clip 0
expect "--preset: huge not in {tiny,char_micro,char_mini,char_small,char_7m,char_12l,gpt2_12l,gpt2,p275m}" --preset huge
expect "--grad-accum must be at least 1 (micro-batches per optimizer step), found 0" --grad-accum 0
expect "--task-format: binary not in {compact,text}" --task-format binary
expect "--grad-accum 2 with --gates: the gates' loss term would count once per micro-batch" --grad-accum 2 --gates
exit $fails
