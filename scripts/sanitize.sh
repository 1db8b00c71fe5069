#!/usr/bin/env bash
# Builds CPU tests with AddressSanitizer and UndefinedBehaviorSanitizer (any report fails the test:
# -fno-sanitize-recover=all) in a build directory of their own, and runs them. CI runs it after scripts/test.sh.
# The default set is what reads untrusted input or writes files, plus training steps: checkpoints (with their
# fault injection), safetensors, llm.c shards, the data-parallel group (sockets, threads as ranks) and the trainer
# (every CPU op and parallel_blocks). The saved
# fuzz crashes (tests/test_fuzz_regressions.cpp) are replayed under ASan and UBSan by scripts/fuzz.sh, which CI
# runs next. Unoptimised, with line tables only (-O0 -g1): the tests build 3 times faster than at -O1 -g (5 s
# against 17 s for data_test_shards, 2-core machine) and still run in seconds. The slow numerical tests
# (finite differences in double, fixtures, the thread-count runs) are left out: their code paths are the
# trainer's. SGT_ASAN_TESTS="..." picks others.
#
#   scripts/sanitize.sh
#
# The compiler is clang++ where one links these sanitizers (else the default compiler): the main build (test.sh)
# uses g++, so CI compiles the library's CPU code with both.
#
# Environment: SGT_ASAN_BUILD_DIR (default build-asan), SGT_JOBS (default nproc), SGT_ASAN_TESTS (the CTest names
# to build and run; default below), SGT_ASAN_CXX (the C++ compiler; default as above).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${SGT_ASAN_BUILD_DIR:-build-asan}
jobs=${SGT_JOBS:-$(nproc)}
tests=(${SGT_ASAN_TESTS:-io_test_checkpoint test_trainer io_test_safetensors data_test_shards dist_test_data_parallel})

flags="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
source scripts/compiler_links.sh
cxx=${SGT_ASAN_CXX:-}
if [ -z "$cxx" ]; then
  for c in clang++ clang++-14; do
    if compiler_links "$c" -fsanitize=address,undefined 'int main() { return 0; }'; then cxx=$c; break; fi
  done
fi
cxx=${cxx:-${CXX:-c++}}
echo "sgt sanitize: building with $cxx into $build_dir"
start=$SECONDS
cmake -S . -B "$build_dir" -DCMAKE_CXX_COMPILER="$(command -v "$cxx")" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O0 -g1" -DCMAKE_CXX_FLAGS="$flags" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" \
  -DSGT_ENABLE_CUDA=OFF -DSGT_BUILD_EXAMPLES=OFF -DSGT_BUILD_BENCHMARKS=OFF -DSGT_NATIVE=OFF > /dev/null
# The tests' shared object first, then one build per test, side by side: make builds the targets of one
# `--target a b c` one after another.
cmake --build "$build_dir" --target sgt_doctest_main
printf '%s\n' "${tests[@]}" | xargs -P "$jobs" -I{} cmake --build "$build_dir" --target {}
echo "sgt sanitize: built ${#tests[@]} tests in $((SECONDS - start)) s"
start=$SECONDS
regex="^($(IFS='|'; echo "${tests[*]}"))\$"
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:strict_string_checks=1} \
UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
  ctest --test-dir "$build_dir" --output-on-failure -j "$jobs" -R "$regex"
echo "sgt sanitize: ran in $((SECONDS - start)) s"
