#!/usr/bin/env bash
# examples/train as several processes (data parallel over TCP on the CPU; dist/):
#   1. `--nproc 2` and `--nproc 4` take the steps of one process over the same global batch: losses within 1e-5
#      (float; the sums are ordered differently), the same growth decisions, the same validation loss;
#   2. a run of 2 processes resumes as 1 and continues as the 1-process run does, and as 2 bit for bit; with
#      --zero1 (the optimizer sharded) the same steps and checkpoints;
#   3. a rank that dies (SIGKILL) makes the other exit with a message naming it, within seconds; SIGTERM sent to
#      the `--nproc` launcher reaches its ranks, which save and stop (exit 130);
#   4. bad input: a batch that does not split, a missing rendezvous, --nproc against the launcher's count;
#   5. with MPIEXEC (a build with MPI): `mpirun -n 2 train`, with no rendezvous set, follows one process too.
set -uo pipefail
source "$(dirname "$0")/../../scripts/log_tools.sh"  # steps, growth, evals, close: reading the logs
train=$1
mpiexec=${2:-}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2> /dev/null; rm -rf "$work"' EXIT
cd "$work"
export OMP_NUM_THREADS=1
fails=0
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }
flags=(--quiet --batch 8 --eval-interval 30)

"$train" "${flags[@]}" --steps 60 --log one.jsonl > /dev/null || bad "one process"
for n in 2 4; do
  "$train" "${flags[@]}" --steps 60 --nproc $n --log n$n.jsonl > /dev/null || bad "--nproc $n"
  close "$(steps one.jsonl)" "$(steps n$n.jsonl)" 1e-5 || bad "--nproc $n: losses differ from one process's"
  close "$(evals one.jsonl)" "$(evals n$n.jsonl)" 1e-5 || bad "--nproc $n: validation losses differ"
  [ -n "$(growth one.jsonl)" ] && [ "$(growth one.jsonl)" == "$(growth n$n.jsonl)" ] ||
    bad "--nproc $n: growth decisions differ: $(growth n$n.jsonl) against $(growth one.jsonl)"
  [ "$(grep -c '"type":"step"' n$n.jsonl)" -eq 60 ] || bad "--nproc $n: rank 0's log does not hold 60 steps"
done
echo "ok: --nproc 2 and 4 follow one process ($(steps n4.jsonl | tail -1) against $(steps one.jsonl | tail -1))"

# Under mpirun, in a build with MPI, nothing to set: rank 0's address reaches rank 1 by MPI_Bcast (dist/mpi.hpp).
if [ -n "$mpiexec" ]; then
  extra=()
  "$mpiexec" --version 2>&1 | grep -q "Open MPI" && extra=(--oversubscribe)  # 2 ranks on fewer cores
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout 300 "$mpiexec" -n 2 "${extra[@]}" \
    "$train" "${flags[@]}" --steps 60 --log mpi.jsonl > /dev/null 2> mpi.err || bad "mpirun -n 2: $(cat mpi.err)"
  close "$(steps one.jsonl)" "$(steps mpi.jsonl)" 1e-5 || bad "mpirun -n 2: losses differ from one process's"
  [ "$(growth one.jsonl)" == "$(growth mpi.jsonl)" ] || bad "mpirun -n 2: growth decisions differ"
  echo "ok: mpirun -n 2 (the rendezvous through MPI) follows one process"
else
  echo "skipped: mpirun (this build of train has no MPI)"
fi

# Resume on another number of processes: 2 processes to step 60 with a checkpoint at step 30; from that one, 1
# process to step 60, as the 1-process run.
"$train" "${flags[@]}" --steps 60 --nproc 2 --checkpoint-dir ck --checkpoint-every 30 > /dev/null || bad "2 processes with checkpoints"
[ "$(ls ck | grep step_ | tr '\n' ' ')" == "step_00000030 step_00000060 " ] || bad "rank 0 alone writes the checkpoints: $(ls ck)"
"$train" "${flags[@]}" --steps 60 --resume ck/step_00000030 --checkpoint-dir ck1 --log r.jsonl > /dev/null 2>&1 ||
  bad "resume as 1 process"
close "$(steps one.jsonl | tail -30)" "$(steps r.jsonl)" 1e-5 || bad "the resumed run differs from one process's"
# ... and on the same number of processes, bit for bit: the last 30 steps of the uninterrupted 2-process run.
"$train" "${flags[@]}" --steps 60 --nproc 2 --resume ck/step_00000030 --checkpoint-dir ck2 --log r2.jsonl > /dev/null 2>&1 ||
  bad "resume as 2 processes"
[ "$(steps n2.jsonl | tail -30)" == "$(steps r2.jsonl)" ] || bad "2 processes resumed as 2 differ from the uninterrupted run"
echo "ok: 2 processes resumed as 1, and as 2 bit for bit"

# --zero1 (the optimizer state sharded over the ranks): the steps of the unsharded ranks, bit for bit; its
# checkpoints (the shares gathered on rank 0) hold the same weights, resume as 1 unsharded process as the unsharded
# checkpoint does, and an unsharded checkpoint resumes sharded.
"$train" "${flags[@]}" --steps 60 --nproc 2 --zero1 --checkpoint-dir ckz --checkpoint-every 30 --log z2.jsonl > /dev/null ||
  bad "--nproc 2 --zero1"
[ "$(steps n2.jsonl)" == "$(steps z2.jsonl)" ] && [ "$(growth n2.jsonl)" == "$(growth z2.jsonl)" ] ||
  bad "--zero1 differs from the unsharded 2-process run"
grep -q '"zero1":true' z2.jsonl || bad "--zero1: the log's config does not say the optimizer is sharded"
cmp -s ck/step_00000030/model.safetensors ckz/step_00000030/model.safetensors || bad "--zero1: the checkpoint's weights differ"
"$train" "${flags[@]}" --steps 60 --resume ckz/step_00000030 --checkpoint-dir ckz1 --log rz.jsonl > /dev/null 2>&1 ||
  bad "resume a --zero1 checkpoint as 1 process"
[ "$(steps r.jsonl)" == "$(steps rz.jsonl)" ] || bad "a --zero1 checkpoint resumes otherwise than the unsharded one"
"$train" "${flags[@]}" --steps 60 --nproc 2 --zero1 --resume ck/step_00000030 --checkpoint-dir ckz2 --log rz2.jsonl > /dev/null 2>&1 ||
  bad "resume as 2 processes with --zero1"
[ "$(steps n2.jsonl | tail -30)" == "$(steps rz2.jsonl)" ] || bad "--zero1 resumed from an unsharded checkpoint differs"
echo "ok: --zero1 takes the unsharded steps bit for bit; its checkpoints resume as the unsharded ones"

# SIGTERM to the launcher alone: its ranks get it, agree on a step, save it and stop; the launcher exits 130.
"$train" "${flags[@]}" --steps 100000 --nproc 2 --checkpoint-dir ckt --log t.jsonl > /dev/null 2> t.err &
launcher=$!
for _ in $(seq 100); do grep -q '"type":"step"' t.jsonl 2> /dev/null && break; sleep 0.1; done
kill -TERM $launcher
start=$SECONDS
wait $launcher
rc=$?
[ $rc -eq 130 ] && ls ckt | grep -q step_ || bad "SIGTERM to the launcher: exit $rc, checkpoints '$(ls ckt)', $(cat t.err)"
[ $((SECONDS - start)) -le 20 ] || bad "the launcher took $((SECONDS - start)) s to stop after SIGTERM"
echo "ok: SIGTERM to the launcher: the ranks saved $(ls ckt | grep step_ | tail -1) and stopped"

# A rank that dies: rank 0 exits non-zero within seconds, naming rank 1.
export SGT_RENDEZVOUS=file:$work/rendezvous WORLD_SIZE=2 SGT_DIST_TIMEOUT=30
RANK=0 "$train" --quiet --steps 100000 --batch 8 --log long.jsonl > /dev/null 2> rank0.err &
rank0=$!
RANK=1 "$train" --quiet --steps 100000 --batch 8 > /dev/null 2>&1 &
rank1=$!
for _ in $(seq 100); do grep -q '"type":"step"' long.jsonl 2> /dev/null && break; sleep 0.1; done
kill -9 $rank1
start=$SECONDS
wait $rank0
rc=$?
wait $rank1 2> /dev/null
[ $rc -ne 0 ] && grep -qF "closed (the process exited or failed) by rank 1" rank0.err ||
  bad "rank 0 after rank 1 died: exit $rc, $(cat rank0.err)"
[ $((SECONDS - start)) -le 10 ] || bad "rank 0 took $((SECONDS - start)) s to exit"
echo "ok: $(cat rank0.err)"
unset SGT_RENDEZVOUS WORLD_SIZE SGT_DIST_TIMEOUT

expect() {  # expect "message part" [VAR=value ...] -- args...
  local want=$1
  shift
  local env=()
  while [ "$1" != "--" ]; do env+=("$1"); shift; done
  shift
  local out rc
  out=$(env "${env[@]}" "$train" --quiet "$@" 2>&1)
  rc=$?
  if [ $rc -eq 0 ] || ! grep -qF -- "$want" <<< "$out"; then
    bad "($rc) train $* -> $out"
  else
    echo "ok: $want"
  fi
}
expect "--batch 8 is the global batch of a step and must split evenly over the 3 processes" -- --nproc 3 --batch 8
expect "rendezvous: rank 1 found no rank 0 through '$work/none' within 1 s" \
  RANK=1 WORLD_SIZE=2 SGT_RENDEZVOUS=file:$work/none SGT_DIST_TIMEOUT=1 -- --steps 30
expect "launch: 2 processes (RANK/WORLD_SIZE) but no rendezvous" RANK=0 WORLD_SIZE=2 -- --steps 5
expect "--nproc 3, but the launcher (Open MPI) started 2 processes" \
  OMPI_COMM_WORLD_RANK=0 OMPI_COMM_WORLD_SIZE=2 SGT_RENDEZVOUS=file:$work/none -- --nproc 3 --steps 30
expect "--dropout with several processes is not supported yet" -- --nproc 2 --dropout 0.1 --steps 30
# The MPI rendezvous outside mpirun: MPI sees one process (a build with MPI), or there is no MPI to ask.
if [ -n "$mpiexec" ]; then
  want="rendezvous mpi: MPI places this process at rank 0 of 1, the launcher's environment at rank 0 of 2"
else
  want="rendezvous mpi: rank 0 of 2: this build has no MPI"
fi
expect "$want" RANK=0 WORLD_SIZE=2 SGT_RENDEZVOUS=mpi -- --steps 30
exit $fails
