#!/usr/bin/env bash
# scripts/multi_gpu.sh TRAIN [N]: the data-parallel runs that need several GPUs (issue 14; docs/BENCHMARKS.md,
# "Data parallelism"), on one host with N GPUs. TRAIN is build/examples/train_cuda; examples/train (the CPU, a
# process for each "GPU") runs the same steps on any machine, which is how this script is tried without GPUs.
# N: the most ranks (default: the GPUs nvidia-smi lists; 4 for a CPU binary). For n = 2, 4, ... up to N:
#   1. equivalence: fp32, the embedded task, SGT growing from step 10 every 10 steps, global batch 24: --nproc n
#      against --nproc 1: step losses within 1e-5 (relative), the same growth decisions; --nproc n --zero1: the
#      unsharded n-rank losses exactly;
#   2. scaling: $SGT_SCALING_PRESET (gpt2, GPT-2 small's size) in $SGT_SCALING_PRECISION (bf16 on a GPU),
#      $SGT_SCALING_BATCH (16) sequences of $SGT_SCALING_SEQ (1024) tokens per rank, $SGT_SCALING_STEPS (40)
#      steps: the median step time over the last 30, tokens/s per rank against one rank (scaling efficiency;
#      issue 14's goal: >= 90% at 8), and rank 0's peak device memory with and without --zero1 (one rank and
#      several alike replay their step as a CUDA graph, NCCL's collectives included; docs/BENCHMARKS.md);
# and at N ranks:
#   3. a rank killed: N ranks started by hand (RANK, WORLD_SIZE, LOCAL_RANK, SGT_RENDEZVOUS), $SGT_FAULT_STEPS
#      (1000) steps with checkpoints every 10, rank 1 killed (SIGKILL) after the checkpoint of step 10: the others
#      exit with an error (rank 0's names rank 1) within SGT_DIST_TIMEOUT (60 s here); --nproc N --resume continues
#      from that checkpoint as the uninterrupted run, bit for bit.
# Logs and a summary (summary.txt, scaling.jsonl) go to $OUT (or ./multi-gpu). Exit status 0 when every check
# passes.
set -uo pipefail
source "$(dirname "$0")/log_tools.sh"  # steps, growth, evals, close: reading the logs
train=$(realpath "${1:?usage: multi_gpu.sh TRAIN [N]}")
cpu=1
case $(basename "$train") in *cuda*) cpu=0 ;; esac
if [ -n "${2:-}" ]; then
  N=$2
elif [ $cpu -eq 0 ]; then
  N=$(nvidia-smi --list-gpus | wc -l)
else
  N=4
fi
out=$(realpath -m "${OUT:-multi-gpu}")
mkdir -p "$out"
cd "$out" || exit 2
# This script's files of an earlier run (a resumed run appends to its log).
rm -rf ck_whole ck_fault meet eq*.jsonl eqz*.jsonl sc*.jsonl whole.jsonl fault.jsonl resumed.jsonl scaling.jsonl
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export SGT_DIST_TIMEOUT=${SGT_DIST_TIMEOUT:-60}
fails=0
bad() { echo "FAIL: $*" | tee -a summary.txt; fails=$((fails + 1)); }
note() { echo "$*" | tee -a summary.txt; }
: > summary.txt
note "multi_gpu.sh: $train, up to $N ranks, $(date -u '+%Y-%m-%d %H:%M UTC')"
[ $cpu -eq 1 ] || nvidia-smi --query-gpu=index,name,driver_version --format=csv,noheader | tee -a summary.txt
[ "$N" -ge 2 ] || { note "fewer than 2 GPUs: nothing to run"; exit 2; }
ranks=()
for ((n = 2; n <= N; n *= 2)); do ranks+=($n); done
[ "${ranks[-1]}" -eq "$N" ] || ranks+=("$N")

# 1. Equivalence (fp32).
eq=(--quiet --preset char_micro --batch 24 --steps 60 --eval-interval 1000 --variant sgt --t-start 10 --dt 10
    --precision fp32)
"$train" "${eq[@]}" --log eq1.jsonl > eq1.out 2>&1 || bad "equivalence: one rank: $(tail -2 eq1.out)"
[ -n "$(growth eq1.jsonl)" ] || bad "equivalence: the one-rank run did not grow"
for n in "${ranks[@]}"; do
  "$train" "${eq[@]}" --nproc "$n" --log "eq$n.jsonl" > "eq$n.out" 2>&1 || bad "equivalence: --nproc $n: $(tail -2 eq$n.out)"
  close "$(steps eq1.jsonl)" "$(steps eq$n.jsonl)" 1e-5 > "eq$n.diff" || bad "--nproc $n: losses differ from one rank's: $(head -3 eq$n.diff)"
  [ "$(growth eq1.jsonl)" == "$(growth eq$n.jsonl)" ] || bad "--nproc $n: growth decisions differ from one rank's"
  "$train" "${eq[@]}" --nproc "$n" --zero1 --log "eqz$n.jsonl" > "eqz$n.out" 2>&1 || bad "--nproc $n --zero1: $(tail -2 eqz$n.out)"
  [ "$(steps eq$n.jsonl)" == "$(steps eqz$n.jsonl)" ] || bad "--nproc $n --zero1: losses differ from the unsharded run's"
  note "equivalence at $n ranks: last loss $(steps eq$n.jsonl | tail -1 | cut -d' ' -f2) against one rank's $(steps eq1.jsonl | tail -1 | cut -d' ' -f2)"
done

# 2. Scaling (weak: the same batch per rank) and memory.
preset=${SGT_SCALING_PRESET:-gpt2}
per_rank=${SGT_SCALING_BATCH:-16}
seq=${SGT_SCALING_SEQ:-1024}
nsteps=${SGT_SCALING_STEPS:-40}
precision=${SGT_SCALING_PRECISION:-bf16}
[ $cpu -eq 0 ] || precision=fp32
sc=(--quiet --preset "$preset" --seq "$seq" --steps "$nsteps" --eval-interval 100000 --variant sgt
    --precision "$precision")
: > scaling.jsonl
for n in 1 "${ranks[@]}"; do
  for z in "" --zero1; do
    [ "$n" -eq 1 ] && [ -n "$z" ] && continue
    name="sc$n${z:+z}"
    nproc=()
    [ "$n" -gt 1 ] && nproc=(--nproc "$n")
    "$train" "${sc[@]}" --batch $((per_rank * n)) "${nproc[@]}" $z --log "$name.jsonl" > "$name.out" 2>&1 ||
      { bad "scaling: $n ranks $z: $(tail -2 $name.out)"; continue; }
    python3 - "$name.jsonl" "$n" "${z:-none}" "$per_rank" "$seq" >> scaling.jsonl <<'EOF'
import json, statistics, sys
path, n, zero, b, t = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
rows = [json.loads(l) for l in open(path)]
secs = [r["seconds"] for r in rows if r.get("type") == "step"][-30:]
summary = next(r for r in rows if r.get("type") == "summary")
med = statistics.median(secs)
print(json.dumps({"ranks": n, "zero1": zero != "none", "step_ms_median": med * 1e3,
                  "tokens_per_s_per_rank": b * t / med, "peak_device_mib": summary.get("peak_device_mib"),
                  "steps_timed": len(secs)}))
EOF
  done
done
python3 - <<'EOF' | tee -a summary.txt
import json
rows = [json.loads(l) for l in open("scaling.jsonl")]
one = next((r for r in rows if r["ranks"] == 1), None)
for r in rows:
    eff = r["tokens_per_s_per_rank"] / one["tokens_per_s_per_rank"] if one else float("nan")
    mem = r["peak_device_mib"]
    print(f"scaling: {r['ranks']} ranks{' --zero1' if r['zero1'] else ''}: step {r['step_ms_median']:.2f} ms, "
          f"{r['tokens_per_s_per_rank']:.0f} tokens/s per rank, efficiency {eff:.1%}"
          + (f", rank 0 peak {mem:.0f} MiB" if mem is not None else ""))
EOF

# 3. A rank killed, then the resume. Both runs take the same flags (the learning-rate schedule depends on --steps),
# enough steps that the kill lands mid-run.
fault_steps=${SGT_FAULT_STEPS:-1000}
ft=(--quiet --preset char_micro --batch 24 --steps "$fault_steps" --eval-interval 100000 --variant sgt --t-start 10
    --dt 10 --checkpoint-every 10 --precision fp32)
"$train" "${ft[@]}" --nproc "$N" --checkpoint-dir ck_whole --log whole.jsonl > whole.out 2>&1 || bad "fault: the uninterrupted run: $(tail -2 whole.out)"
pids=()
for ((r = 0; r < N; ++r)); do
  RANK=$r WORLD_SIZE=$N LOCAL_RANK=$r SGT_RENDEZVOUS=file:$out/meet \
    "$train" "${ft[@]}" --checkpoint-dir ck_fault --log fault.jsonl > "fault$r.out" 2>&1 &
  pids+=($!)
done
for _ in $(seq 600); do [ -d ck_fault/step_00000010 ] && break; sleep 0.1; done
[ -d ck_fault/step_00000010 ] || bad "fault: no checkpoint of step 10 within 60 s"
kill -KILL "${pids[1]}"
start=$SECONDS
survivors=0
for ((r = 0; r < N; ++r)); do
  [ $r -eq 1 ] && continue
  wait "${pids[$r]}"
  rc=$?
  [ $rc -ne 0 ] || bad "fault: rank $r exited 0 after rank 1 was killed (the run ended before the kill?)"
  # Rank 0, the hub of the group, names rank 1; the others see rank 0 go when it gives up.
  if [ $r -eq 0 ]; then pattern="by rank 1"; else pattern="error:"; fi
  grep -q "$pattern" "fault$r.out" || bad "fault: rank $r's output lacks '$pattern': $(tail -1 fault$r.out)"
  survivors=$((survivors + 1))
done
wait "${pids[1]}" 2> /dev/null
took=$((SECONDS - start))
[ $took -le $((SGT_DIST_TIMEOUT + 30)) ] || bad "fault: the other ranks took $took s to exit"
note "fault: rank 1 killed after step $(steps fault.jsonl | tail -1 | cut -d' ' -f1); $survivors other ranks exited within $took s: $(grep -m1 error fault0.out)"
"$train" "${ft[@]}" --nproc "$N" --resume ck_fault --log resumed.jsonl > resumed.out 2>&1 ||
  bad "fault: the resume: $(tail -2 resumed.out)"
first=$(steps resumed.jsonl | head -1 | cut -d' ' -f1)
if [ -n "$first" ] && [ "$(steps whole.jsonl | awk -v f="$first" '$1 >= f')" == "$(steps resumed.jsonl)" ]; then
  note "fault: resumed at step $first from the last checkpoint, steps $first-$fault_steps as the uninterrupted run, bit for bit"
else
  bad "fault: the run resumed at step ${first:-?} differs from the uninterrupted one"
fi

note "multi_gpu.sh: $fails failed check(s)"
exit $((fails > 0))
