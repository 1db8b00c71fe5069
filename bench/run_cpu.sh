#!/usr/bin/env bash
# The CPU training step of sgt next to PyTorch eager's (bench/torch_step.py --device cpu) on the same cores, in
# one job: rounds of interleaved runs (ours, then PyTorch's, the order swapped every other round, so that both
# see the same conditions), one process per run, at each thread count. Prints every run as a JSON line, then
# a summary: per plan and thread count the median over the rounds of each side's median step, their ratio, and
# SGT's time overhead over vanilla next to its FLOPs overhead.
#
#     bash bench/run_cpu.sh [build-dir]        env: THREADS="1 2" ROUNDS=5 PRESET=char_small B=8 T=256 STEPS=3
set -euo pipefail
cd "$(dirname "$0")/.."
ours=${1:-build}/bench/bench_cpu_step
threads=${THREADS:-1 2}
rounds=${ROUNDS:-5}
preset=${PRESET:-char_small}
B=${B:-8} T=${T:-256} steps=${STEPS:-3}
[ -x "$ours" ] || { echo "run_cpu: no $ours (cmake --build <build-dir> --target bench_cpu_step)" >&2; exit 2; }
out=$(mktemp)
trap 'rm -f "$out"' EXIT
grep -m1 "model name" /proc/cpuinfo | sed 's/.*: /cpu: /'
run_ours() {
  OMP_NUM_THREADS=$1 "$ours" --preset "$preset" --plan "$2" --batch "$B" --seq "$T" --steps "$steps" --warmup 1 \
    --threads "$1" | tail -1 | tee -a "$out"
}
run_torch() {
  OMP_NUM_THREADS=$1 python3 bench/torch_step.py --device cpu --precision fp32 --modes eager --preset "$preset" \
    --variants "$2" --batch "$B" --seq "$T" --steps "$steps" --warmup 1 | tail -1 |
    python3 -c "import json, sys; j = json.load(sys.stdin); j['threads'] = $1; print(json.dumps(j))" | tee -a "$out"
}
for t in $threads; do
  for r in $(seq "$rounds"); do
    for plan in vanilla sgt; do
      if [ $((r % 2)) -eq 1 ]; then run_ours "$t" "$plan"; run_torch "$t" "$plan"; else run_torch "$t" "$plan"; run_ours "$t" "$plan"; fi
    done
  done
done
python3 - "$out" <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
med = {}
for j in runs:
    torch = "impl" in j
    key = ("torch" if torch else "sgt", j["variant"] if torch else j["plan"], j["threads"])
    med.setdefault(key, []).append(j["step_ms_median"] if torch else j["median_step_ms"])
m = {k: statistics.median(v) for k, v in med.items()}
fl = next(j["flops_overhead_pct"] for j in runs if "plan" in j and j["plan"] == "sgt")
print(f"{'threads':>7} {'plan':>8} {'sgt ms':>9} {'torch ms':>9} {'ratio':>6}   (medians of {len(med[next(iter(med))])} interleaved runs)")
for t in sorted({k[2] for k in m}):
    for plan in ("vanilla", "sgt"):
        a, b = m[("sgt", plan, t)], m[("torch", plan, t)]
        print(f"{t:>7} {plan:>8} {a:>9.0f} {b:>9.0f} {a / b:>6.2f}")
    oa = m[("sgt", "sgt", t)] / m[("sgt", "vanilla", t)] - 1
    ob = m[("torch", "sgt", t)] / m[("torch", "vanilla", t)] - 1
    print(f"{t:>7} SGT time overhead: sgt {100 * oa:+.1f}%, torch {100 * ob:+.1f}%; FLOPs {fl:+.1f}%; "
          f"sgt time/FLOPs overhead {oa / (fl / 100):.2f}x")
EOF
