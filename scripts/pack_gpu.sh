#!/usr/bin/env bash
# scripts/pack_gpu.sh OUT.txz NAME=BUILD_DIR [NAME=BUILD_DIR ...]: the GPU programs of one or more builds in one
# archive, for a GPU machine that has the CUDA toolkit but not sgt's C++ dependencies (scripts/gpu_check.sh,
# scripts/gpu_infer.sh and bench/compare_infer.sh then take NAME/ as their directory of programs):
#   NAME/  each build's gpu_test_*, bench_infer, bench_cuda_step, train_cuda and generate_cuda that exist, stripped;
#   lib/   the shared libraries they load from outside the CUDA toolkit and the C/C++ runtime (libfmt, libgomp).
# A build's programs share most of their bytes (the kernel library), as do two builds of one tree, so xz with a
# dictionary larger than all of them (256 MiB) stores each shared part about once: on 2026-12-07 two builds' 14
# programs, 440 MB stripped, packed into 13.7 MB (gzip: 142 MB), in 2 min 17 s on one core. On the GPU machine:
#   xz -dc OUT.txz | tar xf -     (where xz is missing: python3 -c "import lzma, sys;
#                                  sys.stdout.buffer.write(lzma.open('OUT.txz').read())" | tar xf -)
#   LD_LIBRARY_PATH=$PWD/lib:/usr/local/cuda/lib64 scripts/gpu_check.sh NAME
set -euo pipefail
usage() { echo "usage: scripts/pack_gpu.sh OUT.txz NAME=BUILD_DIR [NAME=BUILD_DIR ...]" >&2; exit 2; }
[ $# -ge 2 ] || usage
out=$1
shift
for tool in strip xz ldd; do
  command -v "$tool" > /dev/null || { echo "pack_gpu: $tool is missing" >&2; exit 2; }
done
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir "$stage/lib"
programs=(tests/gpu_test_* bench/bench_infer bench/bench_cuda_step examples/train_cuda examples/generate_cuda)
for spec in "$@"; do
  name=${spec%%=*} dir=${spec#*=}
  [[ $spec == *=* && $name =~ ^[A-Za-z0-9_.-]+$ && $name != lib ]] ||
    { echo "pack_gpu: expected NAME=BUILD_DIR (NAME letters, digits, _ . -, not lib), found '$spec'" >&2; exit 2; }
  [ -d "$dir" ] || { echo "pack_gpu: $dir (for $name) is not a directory" >&2; exit 2; }
  mkdir "$stage/$name" 2> /dev/null || { echo "pack_gpu: $name is named twice" >&2; exit 2; }
  count=0
  for rel in "${programs[@]}"; do
    for f in "$dir"/$rel; do
      [ -f "$f" ] && [ -x "$f" ] || continue
      cp "$f" "$stage/$name/"
      strip "$stage/$name/$(basename "$f")"
      count=$((count + 1))
    done
  done
  [ "$count" -gt 0 ] || { echo "pack_gpu: no GPU program in $dir (build them first: README, GPU)" >&2; exit 2; }
  echo "pack_gpu: $name: $count programs from $dir"
done
# The libraries: what ldd resolves outside the CUDA toolkit, less the C and C++ runtime every machine has.
for f in "$stage"/*/*; do
  ldd "$f" || true  # a static program has no libraries (ldd exits 1)
done | awk '$2 == "=>" { print $1, $3 }' | sort -u | while read -r lib path; do
  case $lib in
    libc.so* | libm.so* | libdl.so* | libpthread.so* | librt.so* | libstdc++.so* | libgcc_s.so* | ld-linux*) continue ;;
    libcuda.so* | libcudart.so* | libcublas* | libcudnn* | libnvrtc* | libnccl* | libnvJitLink* | libcupti*) continue ;;
  esac
  [ "$path" = "not" ] && { echo "pack_gpu: $lib is not found here (ldd)" >&2; exit 2; }
  case $path in /usr/local/cuda*) continue ;; esac
  cp -L "$path" "$stage/lib/$lib"
  echo "pack_gpu: lib/$lib"
done
tar -C "$stage" -cf - . | xz -T1 --lzma2=preset=6,dict=256MiB > "$out"
echo "pack_gpu: $out, $(du -k "$out" | cut -f1) KiB"
