#!/usr/bin/env bash
# scripts/gpu_infer.sh on stand-ins (no GPU here): its six programs written by this test, passing or failing as the
# test sets, and stand-ins for nvidia-smi and compute-sanitizer on PATH. Checked: status 0 where all pass, 1 where a
# test fails (also when it prints nothing the script's filter keeps), the steps after a failure still run, and a
# missing program refused before anything runs.
script=$1
source "$(dirname "$0")/checks.sh"

mkdir -p "$work/bin" "$work/path"
for p in gpu_test_cuda_infer gpu_test_cuda_ops gpu_test_cuda_model train_cuda generate_cuda bench_infer; do
  cat > "$work/bin/$p" << EOF2
#!/usr/bin/env bash
echo "\$*" >> "$work/$p.args"
case \$(cat "$work/$p.mode" 2> /dev/null || echo pass) in
  pass) echo "[doctest] Status: SUCCESS!" ;;
  fail) echo "[doctest] Status: FAILURE!"; exit 1 ;;
  silent) exit 3 ;;
esac
EOF2
  chmod +x "$work/bin/$p"
done
printf '#!/usr/bin/env bash\necho "stand-in GPU"\n' > "$work/path/nvidia-smi"
printf '#!/usr/bin/env bash\nwhile [ "$1" != --error-exitcode ]; do shift; done\nshift 2\n"$@" > /dev/null\n' \
  > "$work/path/compute-sanitizer"
chmod +x "$work/path/nvidia-smi" "$work/path/compute-sanitizer"
run() {  # run LOG: the script on the stand-ins, its exit status in $rc
  rm -f "$work"/*.args
  env PATH="$work/path:$PATH" OUT="$work/out" bash "$script" "$work/bin" > "$work/$1" 2>&1
  rc=$?
}

run pass.txt
[ $rc = 0 ] || fail "all passing: rc $rc"
expect "$work/pass.txt" "gpu_infer status 0"
[ "$(wc -l < "$work/generate_cuda.args")" = 2 ] || fail "generate_cuda runs fp32 and bf16"
for mode in fail silent; do
  echo $mode > "$work/gpu_test_cuda_ops.mode"
  run $mode.txt
  [ $rc = 1 ] || fail "gpu_test_cuda_ops $mode: rc $rc"
  expect "$work/$mode.txt" "gpu_infer status 1"
  [ -s "$work/train_cuda.args" ] || fail "train_cuda did not run after a failed test ($mode)"
done
expect "$work/silent.txt" "(gpu_test_cuda_ops: exit 3)"
rm "$work/gpu_test_cuda_ops.mode"
rm "$work/bin/bench_infer"
exits 2 "gpu_infer: no bench_infer in $work/bin" env PATH="$work/path:$PATH" OUT="$work/out" bash "$script" "$work/bin"

finish "gpu_infer: all checks passed"
