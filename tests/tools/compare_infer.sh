#!/usr/bin/env bash
# bench/compare_infer.sh on stand-in builds (bench_infer scripts written here that print bench_infer's JSON lines
# with step times set by the test): the table's means, changes and overheads, worked out by hand in the comments;
# each side's own arguments; named sides (three, one with its own arguments); a missing build and a failing one;
# Nsight Compute over the first and the last side. Skipped (exit 77) where python3 is missing.
script=$1
command -v python3 > /dev/null || { echo "python3 is missing: skipped"; exit 77; }
source "$(dirname "$0")/checks.sh"

# A stand-in bench_infer: one JSON line per model, variant and batch of its arguments, decode step VANILLA ms for
# vanilla and SGT ms for sgt, plus 0.01 ms for each earlier call (its rounds); its arguments go to args.txt.
stub() {  # stub DIR VANILLA SGT
  mkdir -p "$1"
  cat > "$1/bench_infer" << EOF
#!/usr/bin/env bash
echo "\$*" >> "$1/args.txt"
calls=\$(cat "$1/calls" 2> /dev/null || echo 0)
echo \$((calls + 1)) > "$1/calls"
while [ \$# -gt 0 ]; do
  case \$1 in --models) models=\$2 ;; --variants) variants=\$2 ;; --batches) batches=\$2 ;; esac
  shift
done
echo "progress on stdout that is not JSON"
for m in \${models//,/ }; do for v in \${variants//,/ }; do for b in \${batches//,/ }; do
  base=$2; [ \$v = sgt ] && base=$3
  ms=\$(python3 -c "print(\$base + 0.01 * \$calls)")
  echo "{\"impl\":\"sgt-cuda\",\"model\":\"\$m\",\"variant\":\"\$v\",\"batch\":\$b,\"context\":1024,\"decode_step_ms\":\$ms}"
done; done; done
EOF
  chmod +x "$1/bench_infer"
}
stub "$work/before" 1.00 1.20
stub "$work/after" 0.90 1.00

OUT="$work" SGT_BEFORE_ARGS="--decode-tensor-cores off" SGT_INFER_ARGS="--variants vanilla,sgt --batches 32,1" \
  bash "$script" "$work/before" "$work/after" gpt2 2 > "$work/table.md" 2>&1 || fail "compare_infer: rc $?"
# before: vanilla 1.00 and 1.01 (mean 1.005), SGT 1.20 and 1.21 (1.205): +19.9% over vanilla;
# after: vanilla 0.90 and 0.91 (0.905, −9.95%), SGT 1.00 and 1.01 (1.005, −16.6%): +11.0%
expect "$work/table.md" "| gpt2 | 1024 | 32 | vanilla | 1.0050 (1.0000, 1.0100) | 0.9050 (0.9000, 0.9100) | -10.0% | – |"
expect "$work/table.md" "| gpt2 | 1024 | 32 | sgt | 1.2050 (1.2000, 1.2100) | 1.0050 (1.0000, 1.0100) | -16.6% | +19.9% → +11.0% |"
expect "$work/table.md" "| gpt2 | 1024 | 1 | sgt |"
[ "$(grep -c "^{" "$work/compare_infer.jsonl")" = 16 ] ||
  fail "expected 16 JSON lines (2 sides, 2 rounds, 2 variants, 2 batches)"
grep -q '"side":"after","round":2,' "$work/compare_infer.jsonl" || fail "the JSON lines name their side and round"
# Each side's own arguments: the before side ran with --decode-tensor-cores off, the after side without
[ "$(grep -c -- '--decode-tensor-cores off' "$work/before/args.txt")" = 2 ] ||
  fail "before's arguments: $(cat "$work/before/args.txt")"
grep -q -- '--decode-tensor-cores' "$work/after/args.txt" && fail "after's arguments: $(cat "$work/after/args.txt")"
grep -q -- '--models gpt2 --variants vanilla,sgt --batches 32,1' "$work/after/args.txt" || fail "common arguments"

# Named sides, three of them, the last one build under its own arguments (after a colon): a table with a column per
# side and the change from the side before; each stand-in counts its own calls, so the rounds add 0.01 ms as above
stub "$work/a" 1.00 1.20
stub "$work/b" 0.90 1.00
OUT="$work" SGT_INFER_ARGS="--variants vanilla,sgt --batches 32" \
  bash "$script" main="$work/a" br="$work/b" "br-ticket=$work/b:--decode-merge ticket" gpt2 1 > "$work/named.md" 2>&1 ||
  fail "compare_infer with named sides: rc $?"
# main: vanilla 1.00, SGT 1.20 (+20.0%); br: 0.90 and 1.00 (+11.1%); br-ticket, b's second call: 0.91 and 1.01
# (+11.0%); changes br vs main -10.0% (vanilla), -16.7% (SGT); br-ticket vs br +1.1% and +1.0%
expect "$work/named.md" "| model | context | batch | variant | main ms | br ms | br-ticket ms | br vs main | br-ticket vs br |"
expect "$work/named.md" "| gpt2 | 1024 | 32 | vanilla | 1.0000 (1.0000) | 0.9000 (0.9000) | 0.9100 (0.9100) | -10.0% | +1.1% | – |"
expect "$work/named.md" \
  "| gpt2 | 1024 | 32 | sgt | 1.2000 (1.2000) | 1.0000 (1.0000) | 1.0100 (1.0100) | -16.7% | +1.0% | +20.0% → +11.1% → +11.0% |"
grep -q '"side":"br-ticket","round":1,' "$work/compare_infer.jsonl" || fail "the JSON lines name a named side"
[ "$(grep -c -- '--decode-merge ticket' "$work/b/args.txt")" = 1 ] || fail "b's arguments: $(cat "$work/b/args.txt")"
grep -q -- '--decode-merge' "$work/a/args.txt" && fail "a's arguments: $(cat "$work/a/args.txt")"
exits 2 "compare_infer: side main is named twice" bash "$script" main="$work/a" main="$work/b"
exits 2 "found 'a b' in 'a b=$work/a'" bash "$script" "a b=$work/a" c="$work/b"
exits 2 "usage: bench/compare_infer.sh" bash "$script" main="$work/a" gpt2
exits 2 "with named sides, give a side's own arguments after a colon" \
  env SGT_AFTER_ARGS="--fuse off" bash "$script" main="$work/a" br="$work/b"
exits 2 "ROUNDS is a count of rounds, found 'x'" bash "$script" "$work/a" "$work/b" gpt2 x

# A directory without bench_infer: a usage error, nothing run
exits 2 "compare_infer: no bench_infer in $work/none" bash "$script" "$work/before" "$work/none"

# A build whose bench_infer fails: the other side's table still printed, the exit status 1
mkdir -p "$work/broken"
printf '#!/usr/bin/env bash\necho "error: no GPU" >&2\nexit 1\n' > "$work/broken/bench_infer"
chmod +x "$work/broken/bench_infer"
OUT="$work" bash "$script" "$work/broken" "$work/after" gpt2 1 > "$work/broken.md" 2>&1
rc=$?
[ $rc = 1 ] || fail "a failing build: rc $rc, expected 1"
expect "$work/broken.md" "compare_infer: $work/broken/bench_infer failed (before, round 1)"
expect "$work/broken.md" "| gpt2 | 1024 | 32 | vanilla | – |"

# SGT_NCU with no step rounds: each side's decode steps under a stand-in ncu (on PATH) that checks the profiling
# arguments and writes Nsight Compute's CSV: decode attention 12 µs a launch before and 8 after, the q/k/v
# kernel 7 µs, two launches of each in the 2 profiled steps (--decode-tokens 3)
mkdir -p "$work/bin"
cat > "$work/bin/ncu" << 'EOF2'
#!/usr/bin/env bash
echo "$*" >> "$(dirname "$0")/ncu_args.txt"
for a in "--profile-from-start off" "--no-graph" "--profile-decode" "--decode-tokens 3"; do
  [[ " $* " == *" $a "* ]] || { echo "ncu stand-in: missing $a" >&2; exit 3; }
done
us=8; [[ " $* " == */before/* ]] && us=12
echo '"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size","Grid Size","Device","CC","Section Name","Metric Name","Metric Unit","Metric Value"'
id=0
for k in 'void sgt::detail::decode_partial_kernel<__nv_bfloat16, 8, 2, 64, true, true>(int)' \
         'void sgt::detail::few_rows_tc_kernel<(sgt::detail::few_rows_epilogue)2>(int)'; do
  t=$us; [[ $k == *few_rows* ]] && t=7
  for i in 1 2; do
    echo "\"$id\",\"1\",\"bench_infer\",\"host\",\"$k\",\"1\",\"7\",\"(256, 1, 1)\",\"(8, 64, 1)\",\"0\",\"9.0\",\"Command line profiler metrics\",\"gpu__time_duration.sum\",\"usecond\",\"$t\""
    id=$((id + 1))
  done
done
EOF2
chmod +x "$work/bin/ncu"
OUT="$work" PATH="$work/bin:$PATH" SGT_NCU=1 SGT_AFTER_ARGS="--fuse off" \
  bash "$script" "$work/before" "$work/after" gpt2 0 > "$work/ncu.md" 2>&1 || fail "SGT_NCU: rc $?"
# per step: before (2 x 12 + 2 x 7) / 2 = 19 µs, after (2 x 8 + 2 x 7) / 2 = 15 µs, both kinds "decode"
expect "$work/ncu.md" "| decode | 2 | 0.019 | 2 | 0.015 | -0.004 |"
expect "$work/ncu.md" "Decode steps one kernel at a time (ncu; 2 steps of bench_infer"
grep -q "^| model" "$work/ncu.md" && fail "ROUNDS 0 printed a step table"
[ -s "$work/ncu_before.csv" ] && [ -s "$work/ncu_after.csv" ] || fail "the CSV files were not written"
grep -q -- "/after/bench_infer .*--fuse off --no-graph --profile-decode" "$work/bin/ncu_args.txt" ||
  fail "ncu's arguments: $(cat "$work/bin/ncu_args.txt")"
exits 2 "SGT_NCU_ARGS needs --decode-tokens of at least 2" env OUT="$work" PATH="$work/bin:$PATH" SGT_NCU=1 \
  SGT_NCU_ARGS="--models gpt2 --decode-tokens 1" bash "$script" "$work/before" "$work/after" gpt2 0

# SGT_NCU with named sides: the first and the last side profiled (the middle one not), each into ncu_NAME.csv
: > "$work/bin/ncu_args.txt"
OUT="$work" PATH="$work/bin:$PATH" SGT_NCU=1 bash "$script" main="$work/a" br="$work/b" "br-ticket=$work/b:--x y" \
  gpt2 0 > "$work/ncu3.md" 2>&1 || fail "SGT_NCU with named sides: rc $?"
[ -s "$work/ncu_main.csv" ] && [ -s "$work/ncu_br-ticket.csv" ] && [ ! -e "$work/ncu_br.csv" ] ||
  fail "named sides' CSV files: $(ls "$work")"
[ "$(wc -l < "$work/bin/ncu_args.txt")" = 2 ] || fail "ncu ran $(wc -l < "$work/bin/ncu_args.txt") times, expected 2"
grep -q -- "/b/bench_infer .*--x y --no-graph" "$work/bin/ncu_args.txt" || fail "the last side's own arguments under ncu"

finish "compare_infer: all checks passed"
