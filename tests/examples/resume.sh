#!/usr/bin/env bash
# examples/train: 24 steps straight and 12 steps + checkpoint + --resume 12 steps give the same losses, bit for
# bit; SIGINT saves a checkpoint and exits 130; a resume with another batch shape is refused with a message.
set -euo pipefail
train=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
common=(--preset char_mini --batch 2 --seq 48 --warmup 4 --t-start 6 --dt 4 --eval-interval 6 --eval-batches 2
        --dropout 0.1 --quiet --threads 1)
"$train" "${common[@]}" --steps 24 --log "$work/straight.jsonl" > /dev/null
"$train" "${common[@]}" --steps 24 --log "$work/first.jsonl" --checkpoint-dir "$work/ck" --checkpoint-every 12 \
  > /dev/null &
wait $!
# The first run wrote step 12 and step 24; resume from step 12 to reproduce steps 13..24.
echo "step_00000012" > "$work/ck/latest"
"$train" "${common[@]}" --steps 24 --log "$work/second.jsonl" --resume "$work/ck" > /dev/null 2> "$work/second.err"
losses() { grep '"type":"step"' "$1" | sed -E 's/.*"loss":([^,]*),.*"step":([0-9]+).*/\2 \1/' | sort -n; }
diff <(losses "$work/straight.jsonl" | awk '$1 > 12') <(losses "$work/second.jsonl")
diff <(losses "$work/straight.jsonl" | awk '$1 <= 12') <(losses "$work/first.jsonl" | awk '$1 <= 12')
[ "$(losses "$work/second.jsonl" | wc -l)" -eq 12 ]
echo "resume: steps 13..24 identical"

set +e
out=$("$train" "${common[@]}" --steps 24 --batch 3 --resume "$work/ck" 2>&1)
rc=$?
set -e
[ $rc -eq 1 ] && grep -q "the checkpoint was trained with batch 2 x 48, this run asks for 3 x 48" <<< "$out"
echo "resume with another batch shape: refused"
set +e
out=$("$train" "${common[@]}" --steps 24 --grad-accum 2 --resume "$work/ck" 2>&1)
rc=$?
set -e
[ $rc -eq 1 ] && grep -q "the checkpoint.s run had no --grad-accum, this run gives --grad-accum 2; --grad-accum cannot change on resume" <<< "$out"
echo "resume with another --grad-accum: refused"

"$train" "${common[@]}" --steps 100000 --checkpoint-dir "$work/sig" > /dev/null 2>&1 &
pid=$!
for _ in $(seq 100); do sleep 0.1; done
kill -INT $pid
set +e
wait $pid
rc=$?
set -e
[ $rc -eq 130 ] && [ -f "$work/sig/latest" ]
echo "SIGINT: saved $(cat "$work/sig/latest") and exited 130"
