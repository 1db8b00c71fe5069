#!/usr/bin/env python3
"""Where a GPU step's time goes, from Nsight Compute: per kind of work and per kernel, one run or two side by side.

    ncu --csv --print-units base --cache-control none --clock-control none \\
        --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum \\
        bench_cuda_step --preset gpt2 --variants sgt --steps 1 --warmup 0 --no-graphs > before.csv
    python3 tools/ncu_summary.py before.csv [after.csv] [--steps N] [--top 15] [--copy-tbs 4.2]

Prints markdown: a table of the kinds of work (kernels, ms and share of the kernel time; with two files, both and
the change) and a table of the kernels that take the most time (launches, ms, mean µs and, where the DRAM bytes
were collected, the bandwidth reached against the device's copy rate, --copy-tbs: 4.2 TB/s measured on the H200
of docs/BENCHMARKS.md). Times are divided by --steps (the steps the profiled program ran). Lines of the profiled
program's own output in the file are skipped. Units are read from the file (nsecond or ns ... second, byte ... Gbyte).
Standard library only.
"""

import argparse
import csv
import re
import sys
from collections import defaultdict

# Kinds of work by kernel name (with its namespaces, without its arguments), first match wins: cuBLASLt's products
# (nvjet, cutlass, xmma, gemm, their split-K reductions), the attention core (cuDNN's, whose helper kernels are
# known by their namespace, or ours), then our own kernels by their names in backend/cuda/.
KINDS = [
    ("matrix products (cuBLASLt)", r"nvjet|gemm|cutlass|xmma|splitK|cublas"),
    ("last-row entropy", r"entropy_kernel"),
    ("attention core", r"cudnn|fmha|flash|sdpa|causal_softmax|backward_q_kernel|backward_kv_kernel"
                       r"|(^|::)forward_kernel"),
    ("loop runs in the subspace (row ops)", r"row_sum_squares|subspace_|scale_columns"),
    ("RMSNorm", r"rmsnorm"),
    ("RoPE", r"rope"),
    ("SwiGLU", r"swiglu"),
    ("cross-entropy", r"cross_entropy"),
    ("AdamW (with the clip)", r"adamw"),
    ("head gains and gates", r"head_gain|gate_"),
    ("decode", r"decode|kv_cache|few_rows"),
    ("packing heads (gathers, scatters)", r"permute_heads|scatter_add_head|scatter_run|gather"),
]
# Nsight Compute names its base units "nsecond" and "byte"; some versions write "ns" (the H100 of 2026-12-05).
UNITS = {"nsecond": 1e-9, "usecond": 1e-6, "msecond": 1e-3, "second": 1.0,
         "ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0,
         "byte": 1.0, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9, "Tbyte": 1e12}


def qualified(name):
    """The kernel's name without its arguments (and without "void")."""
    return re.sub(r"^void\s+", "", re.sub(r"\(.*$", "", name))


def short(name):
    """The kernel's name without its arguments and the namespaces before it."""
    return re.sub(r"^(?:[A-Za-z_0-9]+::)+", "", qualified(name))


def kind_of(name):
    """The kind of work of a kernel, from its name as ncu writes it."""
    name = qualified(name)
    for kind, pattern in KINDS:
        if re.search(pattern, name):
            return kind
    return "the rest (embedding, casts, copies, sums)"


def shown(name, width=72):
    return name if len(name) <= width else name[: width - 3] + "..."


def load(path):
    """Launches of one file: {ID: {"name", "seconds", "bytes"}} (bytes None where not collected)."""
    with open(path, newline="") as f:
        rows = [line for line in f if line.startswith('"')]
    if not rows:
        sys.exit(f"ncu_summary: {path} holds no CSV rows of Nsight Compute (expected ncu --csv output)")
    reader = csv.DictReader(rows)
    need = {"ID", "Kernel Name", "Metric Name", "Metric Unit", "Metric Value"}
    if not need <= set(reader.fieldnames or []):
        sys.exit(f"ncu_summary: {path}: expected the columns {sorted(need)}, found {reader.fieldnames}")
    launches = {}
    for r in reader:
        unit = r["Metric Unit"]
        if unit not in UNITS:
            sys.exit(f"ncu_summary: {path}: unit '{unit}' of {r['Metric Name']} not known "
                     f"(expected one of {list(UNITS)})")
        value = float(r["Metric Value"].replace(",", "")) * UNITS[unit]
        k = launches.setdefault(r["ID"], {"name": r["Kernel Name"], "seconds": 0.0, "bytes": None})
        metric = r["Metric Name"]
        if metric == "gpu__time_duration.sum":
            k["seconds"] = value
        elif metric in ("dram__bytes_read.sum", "dram__bytes_write.sum", "dram__bytes.sum"):
            k["bytes"] = (k["bytes"] or 0.0) + value
    if not any(k["seconds"] for k in launches.values()):
        sys.exit(f"ncu_summary: {path} has no gpu__time_duration.sum (add it to --metrics)")
    return launches


def by_kind(launches, steps):
    ms, count = defaultdict(float), defaultdict(int)
    for k in launches.values():
        kind = kind_of(k["name"])
        ms[kind] += k["seconds"] * 1e3 / steps
        count[kind] += 1
    return ms, count


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("files", nargs="+", help="one or two CSV files of ncu --csv (before, after)")
    p.add_argument("--steps", type=int, default=1, help="steps the profiled program ran (times are per step)")
    p.add_argument("--top", type=int, default=15, help="kernels listed (by time)")
    p.add_argument("--copy-tbs", type=float, default=4.2, help="the device's copy rate, TB/s (the bandwidth ceiling)")
    a = p.parse_args()
    if len(a.files) > 2 or a.steps < 1 or a.top < 0:
        sys.exit("ncu_summary: expected one or two files, --steps >= 1 and --top >= 0")
    runs = [load(f) for f in a.files]
    kinds = [by_kind(r, a.steps) for r in runs]
    totals = [sum(ms.values()) for ms, _ in kinds]
    order = sorted(set().union(*(ms.keys() for ms, _ in kinds)), key=lambda k: -max(ms.get(k, 0) for ms, _ in kinds))

    print(f"Per step ({a.steps} step{'s' if a.steps > 1 else ''} profiled):\n")
    if len(runs) == 1:
        print("| kind of work | kernels | ms | share |\n| --- | ---: | ---: | ---: |")
        ms, count = kinds[0]
        for k in order:
            print(f"| {k} | {count[k] / a.steps:g} | {ms[k]:.3f} | {100 * ms[k] / totals[0]:.1f}% |")
        print(f"| **sum** | {sum(count.values()) / a.steps:g} | {totals[0]:.3f} | 100% |")
    else:
        (ms0, c0), (ms1, c1) = kinds
        print("| kind of work | kernels before | ms before | kernels after | ms after | change ms |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for k in order:
            print(f"| {k} | {c0[k] / a.steps:g} | {ms0[k]:.3f} | {c1[k] / a.steps:g} | {ms1[k]:.3f} | "
                  f"{ms1[k] - ms0[k]:+.3f} |")
        print(f"| **sum** | {sum(c0.values()) / a.steps:g} | {totals[0]:.3f} | {sum(c1.values()) / a.steps:g} | "
              f"{totals[1]:.3f} | {totals[1] - totals[0]:+.3f} |")

    for label, launches, total in zip(["before", "after"] if len(runs) == 2 else [""], runs, totals):
        per = defaultdict(lambda: {"seconds": 0.0, "bytes": 0.0, "n": 0, "measured": True})
        for k in launches.values():
            e = per[short(k["name"])]
            e["kind"] = kind_of(k["name"])
            e["seconds"] += k["seconds"]
            e["n"] += 1
            if k["bytes"] is None:
                e["measured"] = False
            else:
                e["bytes"] += k["bytes"]
        top = sorted(per.items(), key=lambda kv: -kv[1]["seconds"])[: a.top]
        print(f"\nThe {len(top)} kernels that take the most time{' (' + label + ')' if label else ''}:\n")
        print(f"| kernel | kind | launches | ms | share | mean µs | DRAM TB/s (of {a.copy_tbs:g}) |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
        for name, e in top:
            ms = e["seconds"] * 1e3 / a.steps
            bw = "–"
            if e["measured"] and e["seconds"] > 0:
                tbs = e["bytes"] / e["seconds"] / 1e12
                bw = f"{tbs:.2f} ({100 * tbs / a.copy_tbs:.0f}%)"
            print(f"| `{shown(name)}` | {e['kind']} | {e['n'] / a.steps:g} | {ms:.3f} | {100 * ms / total:.1f}% | "
                  f"{1e6 * e['seconds'] / e['n']:.1f} | {bw} |")


if __name__ == "__main__":
    main()
