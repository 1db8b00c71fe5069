#!/usr/bin/env bash
# scripts/pack_gpu.sh on two stand-in builds: small programs compiled here (one linked with OpenMP, so it loads
# libgomp) where the GPU programs lie; the archive unpacks into each build's programs, stripped and running, and
# lib/ with libgomp but not the C runtime; bad arguments are refused with their messages. Skipped (exit 77) where a
# C++ compiler or xz is missing.
script=$1
cxx=${CXX:-c++}
command -v "$cxx" > /dev/null && command -v xz > /dev/null || { echo "c++ or xz is missing: skipped"; exit 77; }
source "$(dirname "$0")/checks.sh"

printf '#include <cstdio>\n#include <omp.h>\nint main() { std::printf("threads %%d\\n", omp_get_max_threads()); }\n' \
  > "$work/omp.cpp"
printf '#include <cstdio>\nint main() { std::puts("plain"); }\n' > "$work/plain.cpp"
mkdir -p "$work/a/tests" "$work/a/bench" "$work/b/examples" "$work/none/tests"
"$cxx" -g -fopenmp "$work/omp.cpp" -o "$work/a/tests/gpu_test_cuda_ops" || { fail "compiling the stand-ins"; finish ""; }
"$cxx" -g "$work/plain.cpp" -o "$work/a/bench/bench_infer"
"$cxx" -g "$work/plain.cpp" -o "$work/b/examples/train_cuda"
echo "not a program" > "$work/a/tests/gpu_test_notes.txt"  # not executable: left out
cp "$work/a/tests/gpu_test_cuda_ops" "$work/none/tests/test_ops"  # not a GPU program's name

bash "$script" "$work/out.txz" main="$work/a" br="$work/b" > "$work/log" 2>&1 || { fail "pack_gpu failed:"; cat "$work/log"; }
expect "$work/log" "pack_gpu: main: 2 programs from $work/a"
expect "$work/log" "pack_gpu: br: 1 programs from $work/b"
mkdir "$work/unpacked"
xz -dc "$work/out.txz" | tar -C "$work/unpacked" -xf - || fail "the archive does not unpack"
(cd "$work/unpacked" && find . -type f | sort) > "$work/files"
printf './br/train_cuda\n./lib/libgomp.so.1\n./main/bench_infer\n./main/gpu_test_cuda_ops\n' > "$work/want"
diff "$work/want" "$work/files" > /dev/null || { fail "the archive's files:"; diff "$work/want" "$work/files"; }
# Stripped (no debugging sections left) and still running, libgomp from lib/.
[ "$(wc -c < "$work/unpacked/main/gpu_test_cuda_ops")" -lt "$(wc -c < "$work/a/tests/gpu_test_cuda_ops")" ] ||
  fail "gpu_test_cuda_ops was not stripped"
LD_LIBRARY_PATH="$work/unpacked/lib" "$work/unpacked/main/gpu_test_cuda_ops" > "$work/run" 2>&1 || fail "the packed program does not run"
expect "$work/run" "threads "
"$work/unpacked/br/train_cuda" > "$work/run2" 2>&1
expect "$work/run2" "plain"

exits 2 "usage: scripts/pack_gpu.sh OUT.txz NAME=BUILD_DIR" bash "$script" "$work/x.txz"
exits 2 "expected NAME=BUILD_DIR (NAME letters, digits, _ . -, not lib), found '$work/a'" \
  bash "$script" "$work/x.txz" "$work/a"
exits 2 "found 'lib=$work/a'" bash "$script" "$work/x.txz" "lib=$work/a"
exits 2 "$work/missing (for m) is not a directory" bash "$script" "$work/x.txz" "m=$work/missing"
exits 2 "main is named twice" bash "$script" "$work/x.txz" "main=$work/a" "main=$work/b"
exits 2 "no GPU program in $work/none" bash "$script" "$work/x.txz" "n=$work/none"
finish "pack_gpu: every check passed"
