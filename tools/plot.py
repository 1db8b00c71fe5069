#!/usr/bin/env python3
"""The paper's figures, drawn from the JSONL logs of examples/train, train_cuda and compare (--log FILE).

    python3 tools/plot.py LOG.jsonl [LOG2.jsonl ...] --out DIR [--run NAME] [--steps 4]

Writes PNGs into DIR:
    entropy_heatmap.png       layer x head entropy at several steps, looping heads outlined, K written in (Fig. 2)
    entropy_trajectories.png  every head's entropy over training, one panel per layer (Fig. 4)
    entropy_variance.png      intra-layer entropy variance over training, one line per layer (Fig. 8)
    growth_timeline.png       the growth events of every run: which layer, when, how deep
    loss_vs_flops.png         training loss (smoothed) and validation loss against cumulative training FLOPs,
                              every run of every log
    contribution_flow.png     the last token's weighted attention contribution C_j = A_Tj * |V_j| per loop step
                              of one looping head (Fig. 6); needs a log of train --log-flow
The entropy figures are of one run (--run, default: the first run that grew). Entropy records come with every
evaluation, and every N steps with --entropy-every N; a log without them is refused with a message saying so.

Needs matplotlib (tools/plot_requirements.txt):  pip install -r tools/plot_requirements.txt
"""

import argparse
import json
import math
import os
import sys


FIGURES = ["heatmap", "trajectories", "variance", "growth", "flops", "flow"]


def fail(message):
    print(f"plot: {message}", file=sys.stderr)
    sys.exit(1)


def read_logs(paths):
    """Records of every log, in order, each with the "log" it came from."""
    records = []
    for path in paths:
        try:
            with open(path) as f:
                for number, line in enumerate(f, 1):
                    line = line.strip()
                    if not line:
                        continue
                    try:
                        r = json.loads(line)
                    except json.JSONDecodeError as e:
                        fail(f"{path}:{number}: not a JSON object ({e.msg}), expected one JSON object per line")
                    if not isinstance(r, dict) or "type" not in r:
                        fail(f"{path}:{number}: expected a JSON object with a \"type\" field")
                    r["log"] = path
                    records.append(r)
        except OSError as e:
            fail(f"cannot read {path}: {e.strerror}")
    return records


def run_key(r):
    return (r["log"], r.get("run", "?"))


def run_label(key, several_logs):
    """The run's name; prefixed by its log's file name when several logs hold runs of that name."""
    log, run = key
    return f"{os.path.basename(log)}: {run}" if run in several_logs else run


def runs_in_order(records):
    keys = []
    for r in records:
        k = run_key(r)
        if k not in keys:
            keys.append(k)
    return keys


def choose_run(records, wanted):
    """The run the entropy figures show: --run, else the first that grew, else the first with entropies."""
    with_entropy = [k for k in runs_in_order(records) if any(r["type"] == "entropy" and run_key(r) == k
                                                            for r in records)]
    if not with_entropy:
        fail("the log has no entropy records (\"type\": \"entropy\"), expected the log of examples/train, "
             "train_cuda or compare written with --log FILE (entropies come with every evaluation, and every N "
             "steps with --entropy-every N)")
    if wanted is not None:
        matches = [k for k in with_entropy if k[1] == wanted]
        if not matches:
            fail(f"no run named '{wanted}' with entropy records; runs with entropies: "
                 + ", ".join(sorted({k[1] for k in with_entropy})))
        return matches[0]
    grew = [k for k in with_entropy if any(r["type"] == "growth" and run_key(r) == k
                                           and r["event"]["kind"] in ("activate", "deepen") for r in records)]
    return (grew or with_entropy)[0]


def looped_heads(plan):
    """{(layer, head): K} of a plan record (the structure after that step)."""
    out = {}
    for layer, lp in enumerate(plan or []):
        if lp.get("k", 0) > 0:
            for h in lp.get("heads", []):
                out[(layer, h)] = lp["k"]
    return out


def evenly(items, n):
    if len(items) <= n:
        return items
    return [items[round(i * (len(items) - 1) / (n - 1))] for i in range(n)]


def entropy_heatmap(plt, entropies, title, path, n_steps):
    shown = evenly(entropies, n_steps)
    layers, heads = shown[0]["layers"], shown[0]["heads"]
    fig, axes = plt.subplots(1, len(shown), figsize=(2.2 + 0.45 * heads * len(shown), 1.2 + 0.4 * layers),
                             squeeze=False, constrained_layout=True)
    image = None
    for ax, e in zip(axes[0], shown):
        grid = [[e["first_pass"][l * heads + h] for h in range(heads)] for l in range(layers)]
        image = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis", origin="lower", aspect="auto")
        for (l, h), k in looped_heads(e.get("plan")).items():
            ax.add_patch(plt.Rectangle((h - 0.5, l - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
            ax.text(h, l, f"K{k}", ha="center", va="center", color="white", fontsize=7)
        ax.set_title(f"step {e['step']}", fontsize=9)
        ax.set_xlabel("head")
        ax.set_xticks(range(heads))
        ax.set_yticks(range(layers))
    axes[0][0].set_ylabel("layer")
    fig.colorbar(image, ax=axes[0].tolist(), label="last-row attention entropy (Eq. 4)")
    fig.suptitle(f"{title}: entropy per layer and head (red: looping heads, K loop steps)", fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def growth_steps(growth):
    return [(g["event"]["step"], g["event"]) for g in growth]


def mark_growth(ax, growth):
    for step, ev in growth_steps(growth):
        if ev["kind"] in ("activate", "deepen", "activate_block"):
            ax.axvline(step, color="grey", linewidth=0.6, linestyle=":")


def entropy_trajectories(plt, entropies, growth, title, path):
    layers, heads = entropies[0]["layers"], entropies[0]["heads"]
    cols = min(4, layers)
    rows = math.ceil(layers / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False, sharex=True,
                             sharey=True, constrained_layout=True)
    steps = [e["step"] for e in entropies]
    for l in range(layers):
        ax = axes[l // cols][l % cols]
        for h in range(heads):
            ax.plot(steps, [e["first_pass"][l * heads + h] for e in entropies], linewidth=1, label=f"head {h}")
        mark_growth(ax, [g for g in growth if g["event"]["layer"] == l])
        ax.set_title(f"layer {l}", fontsize=9)
        ax.set_ylim(0, 1.02)
        if l == 0:
            ax.legend(fontsize=6, ncol=2, loc="lower left")
    for l in range(layers, rows * cols):
        axes[l // cols][l % cols].axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("step")
    for row in axes:
        row[0].set_ylabel("head entropy")
    fig.suptitle(f"{title}: head entropy trajectories (dotted: this layer's growth events)", fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def entropy_variance(plt, entropies, growth, title, path):
    layers = entropies[0]["layers"]
    steps = [e["step"] for e in entropies]
    fig, ax = plt.subplots(figsize=(6.4, 3.6), constrained_layout=True)
    for l in range(layers):
        ax.plot(steps, [e["layer_variance"][l] for e in entropies], label=f"layer {l}")
    mark_growth(ax, growth)
    ax.set_xlabel("step")
    ax.set_ylabel("variance of head entropies")
    ax.set_title(f"{title}: intra-layer entropy variance (dotted: growth events)", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def growth_timeline(plt, records, several_logs, path):
    keys = [k for k in runs_in_order(records) if any(r["type"] == "growth" and run_key(r) == k for r in records)]
    fig, ax = plt.subplots(figsize=(7.0, 1.0 + 0.9 * len(keys)), constrained_layout=True)
    styles = {"activate": ("o", "tab:red"), "deepen": ("^", "tab:orange"), "fade_end": ("|", "tab:grey"),
              "fix": ("s", "black"), "activate_block": ("D", "tab:blue")}
    seen = set()
    for row, key in enumerate(keys):
        events = [r["event"] for r in records if r["type"] == "growth" and run_key(r) == key]
        n_layers = max([e["layer"] for e in events] + [1]) + 1
        for e in events:
            marker, color = styles.get(e["kind"], ("x", "purple"))
            y = row + 0.8 * e["layer"] / max(n_layers, 1) - 0.4
            ax.scatter(e["step"], y, marker=marker, color=color, s=30,
                       label=e["kind"] if e["kind"] not in seen else None)
            seen.add(e["kind"])
            if e["kind"] in ("activate", "deepen"):
                ax.annotate(f"L{e['layer']} K{e['k']}", (e["step"], y), fontsize=6, xytext=(2, 3),
                            textcoords="offset points")
    ax.set_yticks(range(len(keys)))
    ax.set_yticklabels([run_label(k, several_logs) for k in keys], fontsize=7)
    ax.set_xlabel("step (the new structure applies from the next step)")
    ax.set_title("growth timeline (within a run, higher = deeper layer)", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def loss_vs_flops(plt, records, several_logs, path):
    fig, ax = plt.subplots(figsize=(7.0, 4.2), constrained_layout=True)
    for i, key in enumerate(runs_in_order(records)):
        steps = [r for r in records if r["type"] == "step" and run_key(r) == key]
        if not steps:
            continue
        color = f"C{i % 10}"
        flops = {r["step"]: r["cumulative_flops"] for r in steps}
        smoothed, s = [], None
        for r in steps:
            s = r["loss"] if s is None else 0.95 * s + 0.05 * r["loss"]
            smoothed.append(s)
        label = run_label(key, several_logs)
        ax.plot([r["cumulative_flops"] for r in steps], smoothed, color=color, linewidth=1, alpha=0.6,
                label=f"{label} (train, smoothed)")
        evals = [r for r in records if r["type"] == "eval" and run_key(r) == key and r["step"] in flops]
        if evals:
            ax.plot([flops[r["step"]] for r in evals], [r["val_loss"] for r in evals], color=color, marker="o",
                    markersize=3, linewidth=1.5, label=f"{label} (val)")
    ax.set_xlabel("cumulative training FLOPs (spec Sec. 6)")
    ax.set_ylabel("loss (nats per token)")
    ax.set_title("loss against training FLOPs", fontsize=10)
    ax.legend(fontsize=6, ncol=2)
    fig.savefig(path, dpi=110)
    plt.close(fig)


KHOP_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def token_label(t, khop_compact):
    """A token as text: a byte as its character, a k-hop mapping entry (compact format: 128 + 11 x + y, see
    include/sgt/data/synthetic.hpp) as x>y, a larger id (GPT-2 tokens) as its number."""
    if khop_compact and 128 <= t < 128 + 11 * 11:
        x, y = divmod(t - 128, 11)
        return f"{KHOP_ALPHABET[x]}>{KHOP_ALPHABET[y]}"
    if 32 <= t < 127:
        return chr(t)
    return f"{t}" if t >= 256 else f"\\x{t:02x}"


def contribution_flow(plt, flows, path, window, khop_compact):
    """One looping head of the last step that logged flows: C_j per pass over the last `window` positions."""
    last = max(f["step"] for f in flows)
    at_last = [f for f in flows if f["step"] == last]
    deepest = max(at_last, key=lambda f: (f["pass"], f["layer"]))
    layer, head, run = deepest["layer"], deepest["head"], deepest["run"]
    rows = sorted([f for f in at_last if f["layer"] == layer and f["head"] == head and f["run"] == run],
                  key=lambda f: (f["repeat"], f["pass"]))
    T = len(rows[0]["contribution"])
    lo = max(0, T - window)
    grid = [f["contribution"][lo:] for f in rows]
    fig, ax = plt.subplots(figsize=(min(0.28 * (T - lo) + 2.5, 16), 1.4 + 0.5 * len(rows)), constrained_layout=True)
    image = ax.imshow(grid, cmap="magma", aspect="auto")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"loop {f['pass']}" if f["pass"] else "first pass" for f in rows], fontsize=8)
    tokens = rows[0]["tokens"][lo:]
    ax.set_xticks(range(len(tokens)))
    labels = [token_label(t, khop_compact) for t in tokens]
    ax.set_xticklabels(labels, fontsize=6, rotation=90 if max(len(x) for x in labels) > 1 else 0)
    for p in range(1, len(rows)):  # inter-loop change of the total contribution, as the paper's arrows
        before, after = sum(grid[p - 1]), sum(grid[p])
        if before > 0:
            ax.annotate(f"{100 * (after / before - 1):+.0f}%", (1.0, 1 - p / len(rows)), xycoords="axes fraction",
                        xytext=(3, 0), textcoords="offset points", fontsize=7, ha="left", va="center")
    fig.colorbar(image, ax=ax, label="C_j = A_Tj |V_j|")
    ax.set_xlabel(f"input token (positions {lo}..{T - 1}; the last one asks)")
    ax.set_title(f"{run}, step {last}: contribution flow of the last token, layer {layer}, head {head} (Fig. 6)",
                 fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description="Draw the paper's figures from sgt JSONL logs.")
    parser.add_argument("logs", nargs="+", help="JSONL logs (train/compare --log)")
    parser.add_argument("--out", required=True, help="directory for the PNGs")
    parser.add_argument("--run", help="run whose entropies are drawn (default: the first that grew)")
    parser.add_argument("--steps", type=int, default=4, help="heatmap panels (default 4)")
    parser.add_argument("--window", type=int, default=48, help="last positions in the flow figure (default 48)")
    parser.add_argument("--figures", default=",".join(FIGURES),
                        help="comma-separated subset of " + ", ".join(FIGURES) + " (default: all)")
    args = parser.parse_args()
    if args.steps < 1:
        parser.error(f"--steps {args.steps}, expected at least 1")
    wanted = [f for f in args.figures.split(",") if f]
    unknown = [f for f in wanted if f not in FIGURES]
    if unknown:
        parser.error(f"--figures: unknown {', '.join(unknown)}, expected some of {', '.join(FIGURES)}")
    needs_entropy = any(f in wanted for f in ("heatmap", "trajectories", "variance"))

    records = read_logs(args.logs)
    if not records:
        fail("the logs hold no record, expected JSON objects, one per line")
    key = choose_run(records, args.run) if needs_entropy else None  # refuses logs without entropies

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        fail("matplotlib is not installed: pip install -r tools/plot_requirements.txt")

    os.makedirs(args.out, exist_ok=True)
    names = [k[1] for k in runs_in_order(records)]
    several = {n for n in names if names.count(n) > 1}  # run names that need their log's name
    written = []

    def out(name):
        written.append(os.path.join(args.out, name))
        return written[-1]

    if needs_entropy:
        title = run_label(key, several)
        entropies = sorted((r for r in records if r["type"] == "entropy" and run_key(r) == key),
                           key=lambda r: r["step"])
        growth = [r for r in records if r["type"] == "growth" and run_key(r) == key]
        if "heatmap" in wanted:
            entropy_heatmap(plt, entropies, title, out("entropy_heatmap.png"), args.steps)
        if "trajectories" in wanted:
            entropy_trajectories(plt, entropies, growth, title, out("entropy_trajectories.png"))
        if "variance" in wanted:
            entropy_variance(plt, entropies, growth, title, out("entropy_variance.png"))
    if "growth" in wanted:
        if any(r["type"] == "growth" for r in records):
            growth_timeline(plt, records, several, out("growth_timeline.png"))
        else:
            print("plot: no growth events in the logs: growth_timeline.png not drawn", file=sys.stderr)
    if "flops" in wanted:
        if any(r["type"] == "step" for r in records):
            loss_vs_flops(plt, records, several, out("loss_vs_flops.png"))
        else:
            print("plot: no step records in the logs: loss_vs_flops.png not drawn", file=sys.stderr)
    if "flow" in wanted:
        flows = [r for r in records if r["type"] == "flow"]
        if flows:
            khop = any(r["type"] == "config" and "k-hop" in r.get("data", "") and "compact" in r.get("data", "")
                       for r in records)
            contribution_flow(plt, flows, out("contribution_flow.png"), args.window, khop)
        else:
            print("plot: no contribution-flow records (train --log-flow): contribution_flow.png not drawn",
                  file=sys.stderr)
    for path in written:
        print(path)


if __name__ == "__main__":
    main()
