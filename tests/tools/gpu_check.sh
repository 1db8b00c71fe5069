#!/usr/bin/env bash
# scripts/gpu_check.sh on stand-ins (no GPU here): test programs written by this test that pass, fail, crash without
# a word or hang, and stand-ins for nvidia-smi and compute-sanitizer on PATH; the sanitizer stand-in runs the program
# it is given and reports what the test sets (no error, races in cuBLASLt's nvjet kernels only, a race in one of
# ours, or another error). Checked: the exit status in each case, the arguments each tool gets (the kernels and
# cases it leaves out, the model test's API errors, the barriers synccheck tracks), SGT_TEST_CASES, SGT_STEP_LIMIT,
# and the refusals.
script=$1
source "$(dirname "$0")/checks.sh"
command -v timeout > /dev/null || { echo "timeout is missing: skipped"; exit 77; }

mkdir -p "$work/bin" "$work/path"
# A stand-in test program: its arguments go to NAME.args; $work/NAME.mode says what it does (default pass).
test_program() {
  cat > "$work/bin/$1" << EOF2
#!/usr/bin/env bash
echo "\$*" >> "$work/$1.args"
case \$(cat "$work/$1.mode" 2> /dev/null || echo pass) in
  pass) echo "[doctest] test cases: 2 | 2 passed | 0 failed"; echo "[doctest] Status: SUCCESS!" ;;
  fail) echo "[doctest] test cases: 2 | 1 passed | 1 failed"; echo "[doctest] Status: FAILURE!"; exit 1 ;;
  crash) kill -SEGV \$\$ ;;
  hang) sleep 30 ;;
esac
EOF2
  chmod +x "$work/bin/$1"
}
test_program gpu_test_cuda_infer
test_program gpu_test_cuda_model
printf '#!/usr/bin/env bash\necho "name, driver_version"\necho "stand-in GPU, 0"\n' > "$work/path/nvidia-smi"
# compute-sanitizer's stand-in: runs the program after --error-exitcode 3 with what follows it, then reports as
# $work/san.mode says for racecheck (clean, nvjet, ours, other); every other tool reports no error.
cat > "$work/path/compute-sanitizer" << EOF2
#!/usr/bin/env bash
echo "\$*" >> "$work/san.args"
tool=\$2
while [ \$# -gt 0 ] && [ "\$1" != --error-exitcode ]; do shift; done
shift 2
"\$@"
rc=\$?
[ \$rc -eq 0 ] || exit \$rc
mode=clean
[ \$tool = racecheck ] && mode=\$(cat "$work/san.mode" 2> /dev/null || echo clean)
case \$mode in
  clean) echo "========= ERROR SUMMARY: 0 errors" ;;
  nvjet) for i in 1 2; do
           echo "========= Error: Race reported between Write access at nvjet_sm90_tst_128x256+0x1a0 and Read access at nvjet_sm90_tst_128x256+0x2b0 [\$i]"
         done; echo "========= RACECHECK SUMMARY: 2 hazards displayed"; exit 3 ;;
  ours) echo "========= Error: Race reported between Write access at sgt::detail::decode_partial_kernel+0x10 and Read access at sgt::detail::decode_partial_kernel+0x20"
        exit 3 ;;
  other) echo "========= Error: Race reported between Write access at nvjet_sm90_tst_128x256+0x1a0 and Read access at nvjet_sm90_tst_128x256+0x2b0"
         echo "========= Error: the tool failed to handle a hardware exception"; exit 3 ;;
esac
EOF2
chmod +x "$work/path/nvidia-smi" "$work/path/compute-sanitizer"
run() {  # run LOG ENV...: gpu_check.sh on the stand-ins, its output in $work/LOG, its exit status in $rc
  local log=$1
  shift
  rm -f "$work"/*.args
  env PATH="$work/path:$PATH" OUT="$work/out" "$@" bash "$script" "$work/bin" > "$work/$log" 2>&1
  rc=$?
}

# Every tool, every test passing, no error: status 0, each tool's arguments as the script's comments give them
run all.txt
[ $rc = 0 ] || fail "all passing: rc $rc"
expect "$work/all.txt" "gpu_check status 0"
expect "$work/all.txt" "(racecheck, gpu_test_cuda_model: exit 0,"
[ "$(grep -c -- "--tool" "$work/san.args")" = 8 ] || fail "expected 4 tools x 2 tests, found $(grep -c -- --tool "$work/san.args")"
grep -q -- "--tool initcheck .*--test-case-exclude=\*failing CUDA call\*,\*<bf16>,bf16 \*" "$work/san.args" ||
  fail "initcheck leaves out the bf16 cases: $(grep initcheck "$work/san.args")"
grep -- "--tool memcheck" "$work/san.args" | grep -q "<bf16>" && fail "memcheck runs the bf16 cases"
grep -q -- "--tool synccheck --kernel-name-exclude kns=cudnn --num-cuda-barriers 1024" "$work/san.args" ||
  fail "synccheck's arguments: $(grep synccheck "$work/san.args")"
grep -q -- "--tool racecheck --kernel-name-exclude kns=cudnn --error-exitcode" "$work/san.args" ||
  fail "racecheck's arguments: $(grep racecheck "$work/san.args")"
[ "$(grep -c -- "--report-api-errors no" "$work/san.args")" = 4 ] || fail "only the model test leaves out API errors"
grep -- "--report-api-errors no" "$work/san.args" | grep -q gpu_test_cuda_infer && fail "the inference test's API errors"
[ -s "$work/out/gpu.txt" ] && [ -s "$work/out/racecheck_gpu_test_cuda_infer.log" ] || fail "logs in \$OUT"

# racecheck: hazards inside cuBLASLt's nvjet kernels only pass; one of ours, or another error, fails
echo nvjet > "$work/san.mode"
run nvjet.txt SGT_SANITIZER_TOOLS=racecheck SGT_GPU_TESTS=gpu_test_cuda_infer
[ $rc = 0 ] || fail "races in nvjet kernels only: rc $rc"
expect "$work/nvjet.txt" "racecheck: hazards' accesses in cuBLASLt's nvjet kernels 4, elsewhere 0"
echo ours > "$work/san.mode"
run ours.txt SGT_SANITIZER_TOOLS=racecheck SGT_GPU_TESTS=gpu_test_cuda_infer
[ $rc = 1 ] || fail "a race in our kernel: rc $rc"
expect "$work/ours.txt" "nvjet kernels 0, elsewhere 2"
echo other > "$work/san.mode"
run other.txt SGT_SANITIZER_TOOLS=racecheck SGT_GPU_TESTS=gpu_test_cuda_infer
[ $rc = 1 ] || fail "another error beside nvjet races: rc $rc"
rm "$work/san.mode"

# A failing test and a test that crashes without a word both fail the check; the other test still runs
echo fail > "$work/gpu_test_cuda_infer.mode"
run fail.txt SGT_SANITIZER_TOOLS=none
[ $rc = 1 ] || fail "a failing test: rc $rc"
expect "$work/fail.txt" "(gpu_test_cuda_infer: exit 1)"
echo crash > "$work/gpu_test_cuda_infer.mode"
run crash.txt SGT_SANITIZER_TOOLS=none
[ $rc = 1 ] || fail "a test that crashes printing nothing: rc $rc"
expect "$work/crash.txt" "(gpu_test_cuda_infer: exit 139)"
[ -s "$work/gpu_test_cuda_model.args" ] || fail "the test after a crash did not run"
expect "$work/crash.txt" "gpu_check status 1"

# SGT_STEP_LIMIT: a hanging test is stopped, reported and failed, and the runs after it go on
echo hang > "$work/gpu_test_cuda_infer.mode"
start=$SECONDS
run hang.txt SGT_SANITIZER_TOOLS=memcheck SGT_STEP_LIMIT=1
[ $rc = 1 ] || fail "a stopped test: rc $rc"
[ $((SECONDS - start)) -lt 20 ] || fail "SGT_STEP_LIMIT=1 took $((SECONDS - start)) s"
[ "$(grep -c "stopped after 1 s by SGT_STEP_LIMIT" "$work/hang.txt")" = 2 ] ||
  fail "the plain run and the memcheck run of the hanging test are reported stopped"
expect "$work/hang.txt" "(memcheck, gpu_test_cuda_model: exit 0,"
rm "$work/gpu_test_cuda_infer.mode"

# SGT_TEST_CASES reaches every run, plain and under a sanitizer
run cases.txt SGT_SANITIZER_TOOLS=memcheck SGT_TEST_CASES="*decode*,*thin*"
[ $rc = 0 ] || fail "SGT_TEST_CASES: rc $rc"
[ "$(grep -c -- "--test-case=\*decode\*,\*thin\*" "$work/gpu_test_cuda_infer.args")" = 2 ] ||
  fail "the filter in the plain and the memcheck run: $(cat "$work/gpu_test_cuda_infer.args")"

# Refusals, before anything runs
exits 2 "gpu_check: SGT_STEP_LIMIT is a number of seconds, found '10s'" \
  env PATH="$work/path:$PATH" OUT="$work/out" SGT_STEP_LIMIT=10s bash "$script" "$work/bin"
exits 2 "gpu_check: no gpu_test_cuda_ops in $work/bin" \
  env PATH="$work/path:$PATH" OUT="$work/out" SGT_GPU_TESTS="gpu_test_cuda_ops" bash "$script" "$work/bin"
mkdir -p "$work/empty"
exits 2 "gpu_check: no gpu_test_* binary in $work/empty" \
  env PATH="$work/path:$PATH" OUT="$work/out" bash "$script" "$work/empty"

finish "gpu_check: all checks passed"
