#!/usr/bin/env bash
# examples/train and export_logits under faults and misuse (issue 15): each case names the defect it guards.
#   hardening.sh TRAIN EXPORT_LOGITS
# Fault injection uses what the machine has: RLIMIT_FSIZE (ulimit -f) always; strace's syscall error injection and
# tmpfs mounts (unshare -m, as root) when available, else those cases say they are skipped. The library's own
# injection seam covers the same faults in tests/io/test_checkpoint.cpp on every machine.
set -uo pipefail
train=$1
export_logits=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
fails=0
ok() { echo "ok: $*"; }
bad() {
  echo "FAIL: $*"
  fails=$((fails + 1))
}
# run NAME RC_WANTED MESSAGE_PART -- command...: the exit status and a part of stdout+stderr.
run() {
  local name=$1 want_rc=$2 want=$3
  shift 4
  local out rc
  out=$("$@" 2>&1)
  rc=$?
  if [ "$want_rc" = nonzero ]; then [ $rc -ne 0 ] || { bad "$name: exit 0 -> $out"; return; }
  elif [ $rc -ne "$want_rc" ]; then bad "$name: exit $rc, expected $want_rc -> $(tail -n 3 <<< "$out")"; return; fi
  if [ -n "$want" ] && ! grep -qF -- "$want" <<< "$out"; then bad "$name: no '$want' in: $(tail -n 3 <<< "$out")"; return; fi
  ok "$name"
}
common=(--preset char_mini --batch 2 --seq 32 --warmup 2 --t-start 4 --dt 3 --eval-interval 6 --eval-batches 1
        --quiet --threads 1)
lines() { wc -l < "$1" | tr -d ' '; }

# --- 3, 9, 8: resume appends to the log, refuses a finished run without touching it, refuses changed flags.
"$train" "${common[@]}" --steps 12 --checkpoint-dir ck --checkpoint-every 6 --log run.jsonl > /dev/null 2>&1 ||
  bad "the first run failed"
n0=$(lines run.jsonl)
sum0=$(cksum ck/step_00000012/model.safetensors)
run "9: a finished run is refused" 1 "is at step 12 and --steps is 12: the run is finished" -- \
  "$train" "${common[@]}" --steps 12 --resume ck --log run.jsonl
[ "$(cksum ck/step_00000012/model.safetensors)" = "$sum0" ] && ok "9: ... and its checkpoint is not rewritten" ||
  bad "9: the finished run's checkpoint was rewritten"
[ "$(lines run.jsonl)" -eq "$n0" ] && ok "3: a refused resume leaves the log as it was ($n0 lines)" ||
  bad "3: the log went from $n0 to $(lines run.jsonl) lines"
run "8: --steps changed on resume is refused" 1 "pass --allow-flag-changes" -- \
  "$train" "${common[@]}" --steps 16 --resume ck
run "8: --lr changed on resume is refused" 1 "the checkpoint's run had --lr 0.002, this run gives --lr 0.001" -- \
  "$train" "${common[@]}" --steps 12 --lr 0.001 --resume ck
run "8: --h cannot change on resume" 1 "--h cannot change on resume" -- \
  "$train" "${common[@]}" --steps 12 --h 1 --resume ck
run "8: --direction cannot change on resume" 1 "--direction cannot change on resume" -- \
  "$train" "${common[@]}" --steps 12 --direction s2d --resume ck
printf 'some text for a data file, long enough for a sequence of thirty-two bytes and more\n%.0s' {1..20} > text.txt
run "8: --data cannot change on resume" 1 "--data cannot change on resume" -- \
  "$train" "${common[@]}" --steps 12 --data text.txt --resume ck
before=$(cksum < run.jsonl)
run "8: with --allow-flag-changes, a longer run goes on" 0 "" -- \
  "$train" "${common[@]}" --steps 16 --resume ck --allow-flag-changes --log run.jsonl
grep -q '"type":"flag_change"' run.jsonl && grep '"type":"flag_change"' run.jsonl | grep -q '"flag":"steps"' &&
  ok "8: ... and the change is logged" || bad "8: no flag_change record in the log"
[ "$(lines run.jsonl)" -gt "$n0" ] && [ "$(head -n "$n0" run.jsonl | cksum)" = "$before" ] &&
  ok "3: the resumed run appended to the log ($n0 -> $(lines run.jsonl) lines)" || bad "3: the log was not appended to"

# --- 1: a save onto an existing step never loses it, whatever rename fails (strace injects EIO into one).
"$train" "${common[@]}" --steps 12 --checkpoint-dir base --checkpoint-every 6 > /dev/null 2>&1
if command -v strace > /dev/null && strace -f -o /dev/null -e inject=rename:error=EIO:when=1 true 2> /dev/null; then
  for inject in rename:error=EIO:when=1 rename:error=EIO:when=2 rename:error=EIO:when=3 rename:error=EIO:when=4 \
                renameat2:error=EIO:when=1; do
    rm -rf ck1 && cp -a base ck1 && echo step_00000006 > ck1/latest  # resume at 6: the save of 12 replaces step 12
    strace -f -o /dev/null -e inject="$inject" "$train" "${common[@]}" --steps 12 --resume ck1 > /dev/null 2>&1
    if "$train" "${common[@]}" --steps 13 --resume ck1 --allow-flag-changes > out.txt 2>&1 &&
       "$train" "${common[@]}" --steps 13 --resume ck1/step_00000012 --allow-flag-changes > out12.txt 2>&1; then
      ok "1: EIO on $inject, then a resume works ($(grep -o 'resumed from [^ ]*' out.txt)), and step 12 is whole"
    else
      bad "1: EIO on $inject, then a resume failed: $(tail -n 1 out.txt) $(tail -n 1 out12.txt)"
    fi
  done
else
  echo "skipped: 1 with strace's fault injection (no strace, or ptrace not permitted); test_checkpoint injects the same"
fi

# --- 10: changed weight bytes are detected.
cp -a base ck10
f=ck10/step_00000012/model.safetensors
printf '\x12\x34\x56\x78' | dd of="$f" bs=1 seek=$(($(stat -c %s "$f") - 100)) conv=notrunc 2> /dev/null
run "10: 4 changed bytes of weight data are refused" 1 "'lm_head.weight' fails its CRC-32C check" -- \
  "$train" "${common[@]}" --steps 14 --resume ck10 --allow-flag-changes

# --- 4: a log that cannot be written (RLIMIT_FSIZE) ends the run with an error, and no half record stays.
(ulimit -f 8; exec "$train" "${common[@]}" --steps 200 --log big.jsonl > big.out 2>&1)
rc=$?
if [ $rc -eq 1 ] && grep -qF "error: log: cannot write to 'big.jsonl'" big.out && grep -qF "File too large" big.out &&
   [ "$(tail -c 1 big.jsonl | od -An -c | tr -d ' ')" = '\n' ]; then
  ok "4: a full log is an error (exit 1), and it ends with a whole record"
else
  bad "4: exit $rc, $(tail -n 2 big.out), last byte '$(tail -c 1 big.jsonl | od -An -c)'"
fi

# --- 5: an unwritable checkpoint directory is found before step 1.
echo file > afile
run "5: a checkpoint directory that cannot exist is refused" 1 "is not writable" -- \
  "$train" "${common[@]}" --steps 12 --checkpoint-dir afile/ck --log probe.jsonl
grep -q '"type":"step"' probe.jsonl 2> /dev/null && bad "5: steps were trained before the refusal" ||
  ok "5: ... before any step"
if [ "$(id -u)" -eq 0 ] && unshare -m true 2> /dev/null; then
  mkdir -p small ro
  run "5: a checkpoint directory without space for a checkpoint is refused" 1 "a checkpoint of this model takes about" -- \
    unshare -m sh -c "mount -t tmpfs -o size=64k tmpfs small && exec \"$train\" ${common[*]} --steps 12 --checkpoint-dir small/ck"
  run "5: a read-only checkpoint directory is refused" 1 "Read-only file system" -- \
    unshare -m sh -c "mount -t tmpfs -o ro tmpfs ro && exec \"$train\" ${common[*]} --steps 12 --checkpoint-dir ro/ck"
else
  echo "skipped: 5 on tmpfs mounts (not root, or no mount namespace); test_checkpoint injects EROFS and checks space"
fi

# --- 6, 7, 15: flags outside their choices or ranges.
run "6: unknown --direction" nonzero "--direction: x not in {d2s,s2d}" -- "$train" "${common[@]}" --direction x
run "6: unknown --transition" nonzero "--transition: x not in {fade,hard}" -- "$train" "${common[@]}" --transition x
run "6: unknown --fade" nonzero "--fade: x not in {linear,cosine,exponential}" -- "$train" "${common[@]}" --fade x
run "7: --k-max above the preset's budget" 1 "--k-max 4: the preset's compile-time loop budget allows K_max = 3" -- \
  "$train" "${common[@]}" --k-max 4
run "15: negative --checkpoint-every" nonzero "--checkpoint-every" -- "$train" "${common[@]}" --checkpoint-every -1
run "15: negative --threads" nonzero "--threads" -- "$train" "${common[@]}" --threads -1
run "15: empty shard globs" 1 "the file pattern is empty" -- "$train" "${common[@]}" --train-shards '' --val-shards ''
{ printf '\x88\xd8\x34\x01\x01\x00\x00\x00\x80\x00\x00\x00'; head -c 1012 /dev/zero; head -c 256 /dev/zero; } \
  > shard_train_0.bin  # an llm.c shard: magic 20240520, version 1, 128 uint16 tokens
run "15: the same shard for training and validation" 1 "both match" -- \
  "$train" "${common[@]}" --train-shards 'shard_*.bin' --val-shards 'shard_train_0.bin'

# --- 13: a batch too large for the memory is an error with the sizes, not an abort.
run "13: --batch 1000000" 1 "model: a batch of 1000000 x 32 tokens needs at least" -- \
  "$train" --quiet --threads 1 --batch 1000000

# --- 11: 1, 2 and 4 threads give the same losses.
for t in 1 2 4; do
  "$train" --preset char_mini --batch 4 --seq 64 --warmup 2 --t-start 2 --dt 2 --steps 6 --eval-batches 1 --quiet \
    --threads $t --log "t$t.jsonl" > /dev/null 2>&1
  grep '"type":"step"' "t$t.jsonl" | grep -o '"grad_norm":[^,]*,"loss":[^,]*' > "t$t.txt"
done
[ -s t1.txt ] && cmp -s t1.txt t2.txt && cmp -s t1.txt t4.txt && ok "11: 1, 2 and 4 threads: identical losses" ||
  bad "11: the losses depend on the thread count: $(diff t1.txt t2.txt | head -n 2)"

# --- 12: export_logits reads only the bytes it needs, and says what is wrong with a directory.
mkdir -p tokdir
run "12: export_logits --tokens DIR" 1 "is a directory" -- \
  "$export_logits" --checkpoint base --tokens tokdir --batch 1 --seq 8 --out x.safetensors --threads 1
run "12: export_logits --tokens /dev/zero" 0 "export_logits" -- \
  timeout 120 "$export_logits" --checkpoint base --tokens /dev/zero --batch 1 --seq 8 --out z.safetensors --threads 1

exit $fails
