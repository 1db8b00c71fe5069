#!/usr/bin/env bash
# bench/pass_trace/run.sh [BUILD_DIR] [build|run|all]: builds trace.cu twice (without marks: the kernel's time;
# TRACE=1: the cycles of each step of a pass) from a marked copy of decode_pass.cuh (make_traced.py), for sm_90a,
# and runs them where a GPU is: one sequence (the kernel's pass_max_rows), contexts 1024 and 4096, 3 passes (gpt2's
# SGT loop), and 1 pass.
# Needs nvcc, python3 and libfmt (the backend's errors); the GPU machine runs the built binaries with the
# libfmt.so.9 beside them (LD_LIBRARY_PATH). A developer's diagnostic, not a test: docs/BENCHMARKS.md quotes it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=$(mkdir -p "${1:-$root/build-pass-trace}" && cd "${1:-$root/build-pass-trace}" && pwd)
what=${2:-all}
if [ "$what" != run ]; then
    python3 "$here/make_traced.py" "$out"
    flags=(-std=c++20 -O3 -arch=sm_90a --extended-lambda --expt-relaxed-constexpr -I"$root/include" -I"$here" -I"$out")
    nvcc "${flags[@]}" -DTRACE=0 -o "$out/pass_time" "$here/trace.cu" -lfmt -lcublasLt
    nvcc "${flags[@]}" -DTRACE=1 -o "$out/pass_trace" "$here/trace.cu" -lfmt -lcublasLt
    echo "built $out/pass_time and $out/pass_trace"
fi
if [ "$what" != build ]; then
    for a in "1 1024 3" "1 4096 3" "1 1024 1"; do
        # shellcheck disable=SC2086  # $a holds the arguments on purpose
        "$out/pass_time" $a
        # shellcheck disable=SC2086
        "$out/pass_trace" $a | tail -1
    done
fi
