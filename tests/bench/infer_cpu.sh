#!/usr/bin/env bash
# bench/bench_infer_cpu runs (char_small, a 40-token context): one JSON line per variant with positive rates, SGT's
# cache holding its 18 extra (key, value) head vectors per token (36 + 3 layers x K = 3 x 2 heads) and more FLOPs
# and bytes per decode step than vanilla; bad options exit 1 with a message saying what was expected.
set -euo pipefail
bench=$1
out=$("$bench" --models char_small --variants vanilla,sgt --contexts 40 --decode-tokens 4 --threads 1)
python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in sys.argv[1].splitlines()]
assert [r["variant"] for r in rows] == ["vanilla", "sgt"], rows
v, s = rows
for r in rows:
    assert r["prefill_tokens_per_s"] > 0 and r["decode_tokens_per_s"] > 0 and r["decode_step_ms"] > 0, r
    assert r["prompt"] == 36 and r["context"] == 40, r
assert v["cache_heads_per_token"] == 36 and s["cache_heads_per_token"] == 54, (v, s)
assert s["decode_flops_per_token"] > v["decode_flops_per_token"] and s["decode_step_bytes"] > v["decode_step_bytes"]
print("bench_infer_cpu: vanilla %.3f ms, sgt %.3f ms a decode step" % (v["decode_step_ms"], s["decode_step_ms"]))
PY
expect() {  # expect "message part" args...
    local want=$1 got
    shift
    if got=$("$bench" "$@" 2>&1); then echo "expected a failure: $*"; exit 1; fi
    grep -qF -- "$want" <<< "$got" || { echo "expected '$want' in: $got"; exit 1; }
}
expect "--contexts: expected more than --decode-tokens (16) and at most 4096, found 8" --contexts 8
expect "--models: expected gpt2 or char_small, found 'llama'" --models llama --contexts 40 --decode-tokens 4
expect "--batches: expected positive integers, found '0'" --batches 0
expect "--contexts: expected a number, found '1k'" --contexts 1k
expect "unknown plan 'loop': expected vanilla, sgt or block" --variants loop --contexts 40 --decode-tokens 4
echo "bench_infer_cpu: bad options refused"
