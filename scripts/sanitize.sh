#!/usr/bin/env bash
# Builds the fast CPU tests with AddressSanitizer and UndefinedBehaviorSanitizer (any report fails the test:
# -fno-sanitize-recover=all) in a build directory of their own, and runs them. CI runs it after scripts/test.sh;
# the tests it leaves out are the slow numerical ones (finite differences in double, fixtures, the thread-count
# runs), whose code paths the chosen ones go through too at smaller sizes.
#
#   scripts/sanitize.sh
#
# Environment: SGT_ASAN_BUILD_DIR (default build-asan), SGT_JOBS (default nproc), SGT_ASAN_TESTS (the CTest names
# to build and run; default below).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${SGT_ASAN_BUILD_DIR:-build-asan}
jobs=${SGT_JOBS:-$(nproc)}
tests=(${SGT_ASAN_TESTS:-io_test_safetensors io_test_checkpoint data_test_shards data_test_text data_test_synthetic
       test_fuzz_regressions test_trainer test_growth test_schedule test_allocation test_flops})

flags="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
start=$SECONDS
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" \
  -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" \
  -DSGT_ENABLE_CUDA=OFF -DSGT_BUILD_EXAMPLES=OFF -DSGT_BUILD_BENCHMARKS=OFF -DSGT_NATIVE=OFF > /dev/null
cmake --build "$build_dir" -j "$jobs" --target "${tests[@]}"
echo "sgt sanitize: built ${#tests[@]} tests in $((SECONDS - start)) s"
start=$SECONDS
regex="^($(IFS='|'; echo "${tests[*]}"))\$"
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:strict_string_checks=1} \
UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
  ctest --test-dir "$build_dir" --output-on-failure -j "$jobs" -R "$regex"
echo "sgt sanitize: ran in $((SECONDS - start)) s"
