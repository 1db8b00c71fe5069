#!/usr/bin/env python3
"""Markdown tables of the paper's Tables 1, 2, 3 and 9 from the JSONL logs of scripts/experiments.sh.

    python3 tools/summarize.py LOG_DIR [--out summary.md]

Every log is one run of examples/train or train_cuda (--log), named by --run-name; the seed comes from its config
record. Runs of the same name are the seeds of one configuration. For each configuration the tables give the
final validation loss as mean ± standard deviation over the seeds (sample standard deviation, n - 1), its
difference from Vanilla's mean, the training FLOPs overhead over the same run without loops (spec Sec. 6; the
same for every seed) and the training-time overhead over Vanilla's mean time (training steps only, evaluation
excluded). A last table answers "per FLOP, which is better": the validation loss of every Table 1 configuration
interpolated at fractions of Vanilla's training FLOPs.

Run names scripts/experiments.sh uses (the tables look for these):
    vanilla, block, sgt_k1, sgt_k2, sgt_k3            Table 1
    attn_l<L>, high_l<L>, low_l<L>                    Table 2 (one loop over all / the top-2 / the bottom-2 heads
                                                      of layer L, 0-based)
    sgt_k1 (D2S), s2d_k1                              Table 3
    sgt_k1_ts<N> (t_start = dt = N), sgt_k1           Table 9
Standard library only.
"""

import argparse
import glob
import json
import math
import os
import re
import statistics
import sys


def fail(message):
    print(f"summarize: {message}", file=sys.stderr)
    sys.exit(1)


def read_run(path):
    """One log: its config, final summary and evaluations."""
    config, summary, evals = None, None, []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                fail(f"{path}:{number}: not a JSON object ({e.msg})")
            kind = r.get("type")
            if kind == "config":
                config = r
            elif kind == "summary":
                summary = r
            elif kind == "eval":
                evals.append(r)
    if config is None or summary is None:
        return None  # an unfinished run: left out, and said so
    return {"path": path, "name": config.get("run") or summary.get("run"), "seed": config.get("seed"),
            "config": config, "val_loss": summary["val_loss"], "seconds": summary["seconds"],
            "flops": summary["flops"], "vanilla_flops": summary["vanilla_flops"], "evals": evals}


def mean_std(values):
    m = statistics.fmean(values)
    s = statistics.stdev(values) if len(values) > 1 else float("nan")
    return m, s


def fmt_pm(values, digits=4):
    m, s = mean_std(values)
    if math.isnan(s):
        return f"{m:.{digits}f} (1 seed)"
    return f"{m:.{digits}f} ± {s:.{digits}f}"


class Results:
    def __init__(self, runs):
        self.by_name = {}
        for r in runs:
            self.by_name.setdefault(r["name"], []).append(r)
        for rs in self.by_name.values():
            rs.sort(key=lambda r: r["seed"] if r["seed"] is not None else 0)

    def has(self, name):
        return name in self.by_name

    def vanilla_seconds(self):
        v = self.by_name.get("vanilla")
        return statistics.fmean(r["seconds"] for r in v) if v else None

    def vanilla_loss(self):
        v = self.by_name.get("vanilla")
        return statistics.fmean(r["val_loss"] for r in v) if v else None

    def row(self, label, name):
        rs = self.by_name.get(name)
        if not rs:
            return f"| {label} | (not run) | | | | |"
        losses = [r["val_loss"] for r in rs]
        flops_over = statistics.fmean(r["flops"] / r["vanilla_flops"] - 1 for r in rs)
        v_loss, v_sec = self.vanilla_loss(), self.vanilla_seconds()
        delta = f"{statistics.fmean(losses) - v_loss:+.4f}" if v_loss is not None and name != "vanilla" else "—"
        sec = statistics.fmean(r["seconds"] for r in rs)
        time_over = f"{100 * (sec / v_sec - 1):+.1f}%" if v_sec else "—"
        seeds = ",".join(str(r["seed"]) for r in rs)
        return (f"| {label} | {fmt_pm(losses)} | {delta} | {100 * flops_over:+.2f}% | {sec:.1f} s ({time_over}) "
                f"| {seeds} |")


HEADER = ("| model | val loss (mean ± std) | Δ vs Vanilla | FLOPs overhead | training time (overhead) | seeds |\n"
          "| --- | ---: | ---: | ---: | ---: | --- |")


def table1(res):
    rows = [("Vanilla", "vanilla"), ("Block Loop (L=3)", "block"), ("SGT K_max=1", "sgt_k1"),
            ("SGT K_max=2", "sgt_k2"), ("SGT K_max=3", "sgt_k3")]
    return "\n".join([HEADER] + [res.row(label, name) for label, name in rows])


def table2(res):
    layers = sorted({int(m.group(1)) for n in res.by_name for m in [re.fullmatch(r"(?:attn|high|low)_l(\d+)", n)]
                     if m})
    lines = [HEADER, res.row("Vanilla", "vanilla")]
    for layer in layers:
        lines.append(f"| **layer {layer}** | | | | | |")
        lines.append(res.row("Attention Loop (all heads)", f"attn_l{layer}"))
        lines.append(res.row("High-Entropy Loop (top-2)", f"high_l{layer}"))
        lines.append(res.row("Low-Entropy Loop (bottom-2)", f"low_l{layer}"))
    return "\n".join(lines)


def table3(res):
    rows = [("Vanilla", "vanilla"), ("S2D (SGT K_max=1)", "s2d_k1"), ("D2S (SGT K_max=1)", "sgt_k1")]
    return "\n".join([HEADER] + [res.row(label, name) for label, name in rows])


def t_start_of(res, name):
    sched = res.by_name[name][0]["config"].get("schedule", {})
    options = sched.get("options", sched)
    return options.get("t_start"), options.get("dt")


def table9(res):
    names = ["sgt_k1"] + sorted((n for n in res.by_name if re.fullmatch(r"sgt_k1_ts\d+", n)),
                                key=lambda n: int(n.split("ts")[1]))
    lines = [HEADER, res.row("Vanilla", "vanilla"), res.row("Block Loop (L=3)", "block")]
    keyed = []
    for n in names:
        if res.has(n):
            t, dt = t_start_of(res, n)
            keyed.append((t if t is not None else 0, f"SGT K_max=1, t_start = {t}, Δt = {dt}", n))
    for _, label, n in sorted(keyed, reverse=True):
        lines.append(res.row(label, n))
    return "\n".join(lines)


def interpolate(points, x):
    """Linear interpolation of (x, y) points sorted by x; None outside their range."""
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return None


def per_flop(res):
    """Val loss of every Table 1 configuration at fractions of Vanilla's total training FLOPs, interpolated
    linearly between the evaluations (each records the run's cumulative FLOPs); "—" before the first one."""
    if not res.has("vanilla"):
        return "(no Vanilla run)"
    budget = statistics.fmean(r["flops"] for r in res.by_name["vanilla"])
    fractions = [0.25, 0.5, 0.75, 1.0]
    lines = ["| model | " + " | ".join(f"val loss at {int(100 * f)}% of Vanilla's FLOPs" for f in fractions)
             + " | FLOPs of the whole run |",
             "| --- | " + " | ".join("---:" for _ in fractions) + " | ---: |"]
    for label, name in [("Vanilla", "vanilla"), ("Block Loop (L=3)", "block"), ("SGT K_max=1", "sgt_k1"),
                        ("SGT K_max=2", "sgt_k2"), ("SGT K_max=3", "sgt_k3")]:
        rs = res.by_name.get(name)
        if not rs:
            continue
        cells = []
        for f in fractions:
            values = []
            for r in rs:
                points = sorted((e["cumulative_flops"], e["val_loss"]) for e in r["evals"] if "cumulative_flops" in e)
                v = interpolate(points, f * budget)
                if v is not None:
                    values.append(v)
            cells.append(fmt_pm(values) if len(values) == len(rs) else "—")
        total = statistics.fmean(r["flops"] for r in rs)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {total:.3e} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description="Tables 1, 2, 3 and 9 from experiment logs.")
    parser.add_argument("log_dir", help="directory of JSONL logs (one run each)")
    parser.add_argument("--out", help="write the markdown here as well as to stdout")
    args = parser.parse_args()
    paths = sorted(glob.glob(os.path.join(args.log_dir, "*.jsonl")))
    if not paths:
        fail(f"no *.jsonl log in {args.log_dir}, expected the logs of scripts/experiments.sh")
    runs, unfinished = [], []
    for p in paths:
        r = read_run(p)
        (runs if r else unfinished).append(r or p)
    if not runs:
        fail(f"none of the {len(paths)} logs in {args.log_dir} has a config and a summary record (unfinished runs?)")
    res = Results(runs)
    c = runs[0]["config"]
    seeds = sorted({r["seed"] for r in runs})
    text = [f"Preset {c.get('preset')} ({c.get('params', 0) / 1e6:.1f}M parameters), {c.get('backend')} "
            f"{c.get('precision')}, data: {c.get('data')}; {c.get('steps')} steps of batch {c.get('batch')} x "
            f"{c.get('seq')}" + (f" x {c['grad_accum']} micro-batches" if c.get("grad_accum", 1) > 1 else "")
            + f", lr {c.get('lr')} (warm-up {c.get('warmup')}), dropout {c.get('dropout')}; seeds "
            + ", ".join(str(s) for s in seeds) + f"; {len(runs)} runs.",
            "", "Validation loss in nats per token at the end of training; FLOPs overhead over the same run "
            "without loops; training time (steps only) against Vanilla's mean.", "",
            "### Table 1: Vanilla, Block Loop and SGT", "", table1(res), "",
            "### Table 2: one loop on one layer: all heads, the 2 highest-entropy heads, the 2 lowest", "",
            table2(res), "",
            "### Table 3: growth direction, deep to shallow (D2S) against shallow to deep (S2D)", "", table3(res), "",
            "### Table 9: sensitivity to t_start and Δt", "", table9(res), "",
            "### Loss against training FLOPs (Table 1's runs)", "", per_flop(res)]
    if unfinished:
        text += ["", "Unfinished runs, left out: " + ", ".join(os.path.basename(p) for p in unfinished)]
    out = "\n".join(text) + "\n"
    print(out, end="")
    if args.out:
        with open(args.out, "w") as f:
            f.write(out)


if __name__ == "__main__":
    main()
