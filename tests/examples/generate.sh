#!/usr/bin/env bash
# examples/generate on a checkpoint that examples/train writes here: the same seed gives the same text, greedy
# decoding is repeatable and starts with the prompt, a checkpoint's preset is found from it (train's default
# preset too), the run ends with prefill and decode tokens/s, train --sample-every prints samples, a Hugging Face
# directory generates what transformers' logits say and train --init-hugging-face starts from its weights, and bad
# input exits 1 with a message saying what was expected.
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

# A checkpoint of train's default preset (char_micro, the demo's): generate finds the preset without --preset
"$train" --steps 4 --batch 2 --seq 16 --warmup 1 --t-start 2 --dt 2 --eval-interval 2 --eval-batches 1 --threads 1 \
  --quiet --checkpoint-dir "$work/micro" > /dev/null 2>&1
"$generate" --checkpoint "$work/micro" --prompt-ids 1,2 --tokens 3 --threads 1 > /dev/null 2> "$work/micro.err"
grep -q "preset char_micro | cpu fp32" "$work/micro.err"
echo "a char_micro checkpoint: its preset found"

# A Hugging Face LlamaForCausalLM directory (tests/fixtures/hf_tiny, written by transformers; preset tiny found from
# its config.json): greedy decoding's first token after the first k of the fixture's 24 ids is the argmax of the
# logits transformers computed at position k - 1 (expected.safetensors: fp32 weights in single/, bf16 in sharded/),
# at every k where the top two logits differ by more than 1e-2
hf=$(cd "$(dirname "$0")/../fixtures/hf_tiny" && pwd)
if command -v python3 > /dev/null; then
  python3 - "$hf/expected.safetensors" > "$work/hf_expected.txt" << 'PY'
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
def tensor(name, fmt):
    t = header[name]
    a, b = t["data_offsets"]
    return struct.unpack(f"<{(b - a) // 4}{fmt}", raw[8 + n + a:8 + n + b])
ids = tensor("input_ids", "i")
V = header["logits_fp32"]["shape"][2]
for d, name in (("single", "logits_fp32"), ("sharded", "logits_bf16")):
    logits = tensor(name, "f")
    for k in range(1, len(ids) + 1):
        row = sorted(range(V), key=lambda v: -logits[(k - 1) * V + v])
        if logits[(k - 1) * V + row[0]] - logits[(k - 1) * V + row[1]] > 1e-2:
            print(d, ",".join(map(str, ids[:k])), row[0])
PY
  checked=0
  while read -r d ids want; do
    got=$("$generate" --hugging-face "$hf/$d" --prompt-ids "$ids" --tokens 1 --temperature 0 --threads 1 2> /dev/null)
    [ "$(awk '{print $NF}' <<< "$got")" = "$want" ] ||
      { echo "FAIL: --hugging-face $d, prompt $ids: generated '$got', transformers' argmax $want"; exit 1; }
    checked=$((checked + 1))
  done < "$work/hf_expected.txt"
  [ $checked -ge 20 ] || { echo "FAIL: only $checked prompts checked against transformers"; exit 1; }
  "$generate" --hugging-face "$hf/single" --prompt-ids 1,2 --tokens 2 --threads 1 > /dev/null 2> "$work/hf.err"
  grep -q "preset tiny | cpu fp32 | structure vanilla" "$work/hf.err"
  echo "--hugging-face: greedy first tokens equal transformers' argmax ($checked prompts, fp32 and bf16 shards)"
  # train --init-hugging-face: a vanilla run from those weights at a learning rate too small to move them (1e-12)
  # writes a checkpoint that decodes greedily as the Hugging Face directory does
  # (on llm.c token shards of ids below tiny's vocabulary of 64: the embedded task and text are bytes)
  python3 - "$work" << 'PY'
import struct, sys
for name, n in (("train", 4000), ("val", 1000)):
    with open(f"{sys.argv[1]}/tiny_{name}_000.bin", "wb") as f:
        f.write(struct.pack("<256i", 20240520, 1, n, *([0] * 253)))
        f.write(struct.pack(f"<{n}H", *((7 * i + i // 5) % 64 for i in range(n))))
PY
  "$train" --preset tiny --variant vanilla --init-hugging-face "$hf/single" --lr 1e-12 --steps 3 --warmup 1 \
    --train-shards "$work/tiny_train_*.bin" --val-shards "$work/tiny_val_*.bin" --batch 2 --seq 16 \
    --eval-interval 3 --eval-batches 1 --threads 1 --checkpoint-dir "$work/from_hf" > /dev/null 2> "$work/from_hf.err"
  grep -q "init: weights from the Hugging Face model in $hf/single" "$work/from_hf.err"
  from_ck=$("$generate" --checkpoint "$work/from_hf" --prompt-ids 5,9,1 --tokens 12 --temperature 0 --threads 1 \
    2> /dev/null)
  from_hf=$("$generate" --hugging-face "$hf/single" --prompt-ids 5,9,1 --tokens 12 --temperature 0 --threads 1 \
    2> /dev/null)
  [ "$from_ck" = "$from_hf" ] || { echo "FAIL: train --init-hugging-face: '$from_ck' against '$from_hf'"; exit 1; }
  echo "train --init-hugging-face: its checkpoint decodes as the Hugging Face model ($from_ck)"
else
  echo "python3 missing: --hugging-face against transformers' logits skipped"
fi

mkdir -p "$work/badhf"
sed 's/"hidden_size": 32/"hidden_size": 48/' "$hf/single/config.json" > "$work/badhf/config.json"
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
expect "expected the model as --checkpoint DIR or --hugging-face DIR (one of them), found neither" --prompt "a"
expect "expected the model as --checkpoint DIR or --hugging-face DIR (one of them), found both" --prompt "a" \
  --checkpoint "$work/ck" --hugging-face "$hf/single"
expect "config.json: \"hidden_size\" is 32, the preset expects 64" --prompt-ids 1 --tokens 2 \
  --hugging-face "$hf/single" --preset char_micro
expect_train() {  # expect_train "message part" args...: train exits 1 with the message
  local want=$1 out rc
  shift
  out=$("$train" --threads 1 "$@" 2>&1)
  rc=$?
  if [ $rc -ne 1 ] || ! grep -qF -- "$want" <<< "$out"; then
    echo "FAIL ($rc): train $* -> $(tail -2 <<< "$out")"
    fails=$((fails + 1))
  else
    echo "ok: $want"
  fi
}
expect_train "--init-hugging-face with --gates: a LLaMA checkpoint has no weights for the head gates; start from it without --gates" \
  --preset tiny --gates --init-hugging-face "$hf/single" --steps 3 --warmup 1
expect_train "--init-hugging-face with --sigma-reparam: a LLaMA checkpoint has no weights for σReparam's γ" \
  --preset tiny --sigma-reparam --init-hugging-face "$hf/single" --steps 3 --warmup 1
expect_train "\"hidden_size\" is 32, the preset expects 64" --preset char_micro --init-hugging-face "$hf/single" \
  --steps 3 --warmup 1 --batch 2 --seq 16
expect "config.json: describes none of the presets (tiny, char_micro," --prompt-ids 1 --tokens 2 --hugging-face "$work/badhf"
exit $fails
