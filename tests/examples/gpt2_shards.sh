#!/usr/bin/env bash
# examples/train on llm.c GPT-2 token shards: shards whose token ids go above 255 (up to 50,303) train the
# gpt2_12l preset (vocabulary 50304) for a few steps; a shard with a token beyond a preset's vocabulary is refused
# with a message naming the shard, the token and the vocabulary.
set -uo pipefail
train=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# Little-endian int32 / uint16 as printf escapes.
le32() { printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(($1 & 255)) $((($1 >> 8) & 255)) $((($1 >> 16) & 255)) $((($1 >> 24) & 255)); }
le16() { printf '\\x%02x\\x%02x' $(($1 & 255)) $((($1 >> 8) & 255)); }
# write_shard PATH COUNT FIRST STRIDE: llm.c's uint16 layout (magic 20240520, version 1, count, zeros), then
# COUNT tokens (FIRST + i * STRIDE) mod 50304.
write_shard() {
  local path=$1 count=$2 first=$3 stride=$4 body="" i
  body+=$(le32 20240520)$(le32 1)$(le32 "$count")
  for ((i = 3; i < 256; i++)); do body+=$(le32 0); done
  for ((i = 0; i < count; i++)); do body+=$(le16 $(((first + i * stride) % 50304))); done
  printf "$body" > "$path"
}
write_shard "$work/gpt2_train_000000.bin" 1200 7 4099
write_shard "$work/gpt2_val_000000.bin" 300 50000 7919
size=$(stat -c %s "$work/gpt2_train_000000.bin")
[ "$size" -eq $((1024 + 2 * 1200)) ] || fail "the train shard has $size bytes, expected $((1024 + 2 * 1200))"

out=$("$train" --preset gpt2_12l --train-shards "$work/gpt2_train_*.bin" --val-shards "$work/gpt2_val_*.bin" \
  --steps 3 --batch 2 --seq 16 --warmup 1 --eval-interval 3 --eval-batches 2 --grad-accum 2 --quiet --threads 1 \
  --log "$work/run.jsonl" 2>&1)
rc=$?
if [ $rc -ne 0 ]; then
  fail "train on GPT-2 shards exited $rc: $out"
else
  grep -qF "preset gpt2_12l" <<< "$out" || fail "no preset line: $out"
  grep -qF "vocab 50304" <<< "$out" || fail "the data line does not name vocab 50304: $out"
  steps=$(grep -c '"type":"step"' "$work/run.jsonl")
  [ "$steps" -eq 3 ] || fail "expected 3 step records, found $steps"
  # A freshly initialised model predicts nearly uniformly over the 50,304 tokens: loss near ln 50304 = 10.83.
  val=$(grep '"type":"eval"' "$work/run.jsonl" | sed -E 's/.*"val_loss":([0-9.eE+-]+).*/\1/')
  awk -v v="$val" 'BEGIN { exit !(v > 10.0 && v < 11.7) }' || fail "val loss '$val', expected near ln 50304 = 10.83"
  echo "ok: gpt2_12l trained 3 steps on GPT-2 shards (val loss $val)"
fi

# A token at or above the vocabulary: the byte-level preset (256) is refused the GPT-2 shards.
out=$("$train" --preset char_micro --train-shards "$work/gpt2_train_*.bin" --val-shards "$work/gpt2_val_*.bin" \
  --steps 3 --batch 2 --seq 16 --warmup 1 --quiet --threads 1 2>&1)
rc=$?
want="expected a token id below the vocabulary size 256"
if [ $rc -eq 0 ] || ! grep -qF "$want" <<< "$out" || ! grep -qF "gpt2_val_000000.bin" <<< "$out"; then
  fail "($rc) a shard beyond the vocabulary: $out"
else
  echo "ok: $want"
fi
exit $fails
