#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ with clang (ASan + UBSan) and runs each for SECONDS (default 60) on a
# copy of its seed corpus, so the checkout is not modified unless something crashes. A crashing, leaking,
# timing-out or out-of-memory input is copied into fuzz/crashes/<target>/ (the regression test
# tests/test_fuzz_regressions.cpp then replays it on every build) and the script exits 1.
#
#   scripts/fuzz.sh [SECONDS]
#
# Environment: SGT_FUZZ_CXX (a clang++ with libFuzzer; default: the first of clang++, clang++-14 that links
# -fsanitize=fuzzer, installing clang-14 and libclang-rt-14-dev with apt-get when none does),
# SGT_FUZZ_BUILD_DIR (default build-fuzz), SGT_JOBS (build parallelism, default nproc),
# SGT_FUZZ_TARGETS (default "fuzz_safetensors fuzz_shards fuzz_checkpoint").
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

seconds=${1:-60}
if ! [[ $seconds =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: scripts/fuzz.sh [SECONDS per target, a positive integer; default 60]" >&2
  exit 2
fi
targets=(${SGT_FUZZ_TARGETS:-fuzz_safetensors fuzz_shards fuzz_checkpoint})
build_dir=${SGT_FUZZ_BUILD_DIR:-build-fuzz}
jobs=${SGT_JOBS:-$(nproc)}

work=$(mktemp -d "${TMPDIR:-/tmp}/sgt_fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

source scripts/compiler_links.sh
# True when $1 compiles and links a libFuzzer target.
links_fuzzer() {
  compiler_links "$1" -fsanitize=fuzzer,address,undefined \
    'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }'
}

apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "sgt fuzz: missing ${missing[*]} and no apt-get to install them; install clang with libFuzzer," \
         "cmake, fmt and nlohmann_json, or set SGT_FUZZ_CXX" >&2
    exit 2
  fi
  echo "sgt fuzz: installing ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

if command -v dpkg >/dev/null 2>&1; then
  apt_install cmake make libfmt-dev nlohmann-json3-dev libeigen3-dev
fi
cxx=${SGT_FUZZ_CXX:-}
if [ -z "$cxx" ]; then
  for c in clang++ clang++-14; do
    if links_fuzzer "$c"; then cxx=$c; break; fi
  done
fi
if [ -z "$cxx" ]; then
  apt_install clang-14 libclang-rt-14-dev
  cxx=clang++-14
fi
if ! links_fuzzer "$cxx"; then
  echo "sgt fuzz: $cxx cannot link -fsanitize=fuzzer,address,undefined (is libclang-rt-*-dev installed?)" >&2
  exit 2
fi

echo "sgt fuzz: building with $cxx into $build_dir"
build_start=$SECONDS
cmake -S fuzz -B "$build_dir" -DCMAKE_CXX_COMPILER="$(command -v "$cxx")" >/dev/null
# One build per target, side by side: make builds the targets of one `--target a b c` one after another.
printf '%s\n' "${targets[@]}" | xargs -P "$jobs" -I{} cmake --build "$build_dir" --target {}
echo "sgt fuzz: built in $((SECONDS - build_start)) s"

mkdir -p "$build_dir/logs"
failed=()
summary=()
for target in "${targets[@]}"; do
  corpus="$work/corpus/$target"
  artifacts="$work/artifacts/$target"
  mkdir -p "$corpus" "$artifacts" "$work/tmp/$target"
  log="$build_dir/logs/$target.log"
  : >"$log"
  crashed=0
  reproduced=0

  # 1. The saved crashes must not crash any more (each is run once, on its own).
  known=()
  if [ -d "fuzz/crashes/$target" ]; then
    while IFS= read -r -d '' f; do known+=("$f"); done \
      < <(find "fuzz/crashes/$target" -maxdepth 1 -type f ! -name '.*' -print0 | sort -z)
  fi
  for f in "${known[@]}"; do
    if ! TMPDIR="$work/tmp/$target" "$build_dir/$target" -timeout=10 -rss_limit_mb=2048 "$f" >>"$log" 2>&1; then
      echo "sgt fuzz: $target: the saved crash $f still crashes; the end of its log:"
      tail -n 40 "$log" | sed "s/^/  | /"
      crashed=1
      reproduced=$((reproduced + 1))
    fi
  done

  # 2. Fuzz, from a copy of the seeds: libFuzzer adds what it finds to its corpus directory.
  find "fuzz/corpus/$target" -maxdepth 1 -type f ! -name '.*' -exec cp {} "$corpus/" \;
  dict=()
  if [ -f "fuzz/${target#fuzz_}.dict" ]; then dict=(-dict="$root/fuzz/${target#fuzz_}.dict"); fi
  echo "sgt fuzz: running $target for $seconds s ($(ls "$corpus" | wc -l) seeds; full log: $log)"
  rc=0
  # TMPDIR: fuzz_shards writes each input to a file in a directory of its own under it.
  TMPDIR="$work/tmp/$target" "$build_dir/$target" "$corpus" "${dict[@]}" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" >>"$log" 2>&1 || rc=$?
  grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^stat::' "$log" | sed "s/^/  /" || true
  if [ "$rc" -ne 0 ] || [ -n "$(ls -A "$artifacts")" ]; then
    mkdir -p "fuzz/crashes/$target"
    for f in "$artifacts"/*; do
      [ -f "$f" ] || continue
      dup=""
      for k in "${known[@]}"; do
        if cmp -s "$f" "$k"; then dup=$k; fi
      done
      if [ -n "$dup" ]; then
        echo "sgt fuzz: $target: found again: $dup"
      else
        cp "$f" "fuzz/crashes/$target/"
        echo "sgt fuzz: $target: saved fuzz/crashes/$target/$(basename "$f")"
      fi
    done
    echo "sgt fuzz: $target: fuzzing FAILED (exit $rc); the end of its log:"
    tail -n 60 "$log" | sed "s/^/  | /"
    crashed=1
  fi
  [ "$crashed" -eq 0 ] || failed+=("$target")
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -n 1)
  summary+=("$target: ${execs:-?} executions, ${cov:-no coverage line}, fuzzer exit $rc;\
 ${reproduced} of ${#known[@]} saved crashes still crash")
done

echo "sgt fuzz: summary ($seconds s per target)"
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "sgt fuzz: FAILED: ${failed[*]} (reproduce: $build_dir/<target> fuzz/crashes/<target>/<file>)" >&2
  exit 1
fi
echo "sgt fuzz: no crash"
