#!/usr/bin/env python3
"""bench/pass_trace/make_traced.py OUT_DIR: a copy of include/sgt/backend/cuda/decode_pass.cuh (the decode pass
kernel, up to its host-side choice) with a clock read by thread 0 of every block after each step of a pass, for
trace.cu. Before a read that follows a block's own work a block barrier makes it the slowest warp's time
(TRS), so the traced kernel is slightly slower than the real one; trace.cu times both. Each mark is placed after
a line of the kernel found exactly once: if the kernel changes, this script stops and says which."""
import pathlib
import sys

root = pathlib.Path(__file__).resolve().parents[2]
src = (root / "include/sgt/backend/cuda/decode_pass.cuh").read_text()
src = src[: src.index("// The shape's part of the choice")] + "}  // namespace sgt\n"
src = src.replace('#include "sgt/backend/cuda/backend.cuh"', '#include "sgt/backend/cuda/backend.cuh"\n#include "trace.cuh"')
# (text found once, replacement): marks 0 (kernel start) and 1 (after the dependent-launch wait), then per pass s
# the points 2 + 9 s + 0..9 between its steps (point 9 of pass s is point 0 of pass s + 1).
marks = [
    ("// as the host sized it\n", "// as the host sized it\n    TR(0);\n"),
    ("    wait_for_prior_grids();", "    wait_for_prior_grids(); TR(1);"),
    ("for (int s = 0; s < p.slots; ++s) {\n        T* const kc = p.keys[s] + slot_at;",
     "for (int s = 0; s < p.slots; ++s) { TR(2 + 9 * s);\n        T* const kc = p.keys[s] + slot_at;"),
    ("            __syncthreads();\n        }\n        // 2.", "            __syncthreads();\n        } TR(2 + 9 * s + 1);\n        // 2."),
    ("        cluster_arrive();  // q, k, v", "        TRS(2 + 9 * s + 2); cluster_arrive();  // q, k, v"),
    ("        cluster_wait();\n", "        cluster_wait(); TR(2 + 9 * s + 3);\n"),
    ("        __syncthreads();\n        // The block's partial per", "        __syncthreads(); TR(2 + 9 * s + 4);\n        // The block's partial per"),
    ("        cluster.sync();  // every block's partials", "        TRS(2 + 9 * s + 5); cluster.sync(); TR(2 + 9 * s + 6);  // every block's partials"),
    ("            os[idx] = ot;  // (B, n·HD): idx = (b·n + i)·HD + d\n        }\n        __syncthreads();",
     "            os[idx] = ot;  // (B, n·HD): idx = (b·n + i)·HD + d\n        }\n        __syncthreads(); TR(2 + 9 * s + 7);"),
    ("        if (!last) cluster.sync();", "        TRS(2 + 9 * s + 8); if (!last) cluster.sync(); TR(2 + 9 * s + 9);"),
]
for old, new in marks:
    if src.count(old) != 1:
        sys.exit(f"make_traced.py: expected this line once in decode_pass.cuh, found it {src.count(old)} times:\n{old}")
    src = src.replace(old, new)
out = pathlib.Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
(out / "pass_traced.cuh").write_text(src)
