// bench/bench_cpu_step: CPU training-step time of a preset under a loop plan. Prints one JSON object: median
// step time after warm-up, tokens/s, FLOPs per step (spec Sec. 6) and achieved GFLOP/s, peak resident memory.
//
//     bench_cpu_step --preset char_small --plan sgt --batch 8 --seq 256 --steps 10 --warmup 2
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <sys/resource.h>

#include "plans.hpp"
#include "sgt/sgt.hpp"

using namespace sgt;

namespace {

double peak_rss_mib() {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return u.ru_maxrss / 1024.0;  // Linux reports KiB
}

template <model_config Cfg>
nlohmann::json bench(const std::string& plan_name, int B, int T, int steps, int warmup) {
    using model_t = model<float, Cfg>;
    const double rss0 = peak_rss_mib();
    model_t m(B, T, 1);
    const loop_plan plan = sgt_bench::make_plan(plan_name, Cfg.shape, Cfg.loops);
    static_schedule sched(plan, Cfg.shape.heads, plan_name);
    trainer tr(m, sched, cosine_schedule{.lr_max = 1e-4, .warmup = 1, .total = steps + warmup + 1}, adamw_options{}, B,
               T);
    const batch b = sgt_bench::random_batch(B, T, Cfg.shape.vocab, 1);
    std::vector<double> times;
    for (int i = 0; i < warmup + steps; ++i) {
        const double s = tr.step(b).seconds;
        if (i >= warmup) times.push_back(s);
    }
    std::sort(times.begin(), times.end());
    const double median = times[times.size() / 2];
    const double flops = step_flops(Cfg.shape, B, T, plan);
    return {{"preset_params_m", Cfg.shape.total_params() / 1e6}, {"plan", plan_name}, {"batch", B}, {"seq", T},
            {"steps_timed", steps}, {"median_step_ms", median * 1e3}, {"min_step_ms", times.front() * 1e3},
            {"tokens_per_s", B * T / median}, {"flops_per_step", flops}, {"gflops_per_s", flops / median / 1e9},
            {"flops_overhead_pct", 100 * (flops / step_flops(Cfg.shape, B, T, loop_plan::vanilla(Cfg.shape.layers)) - 1)},
            {"peak_rss_mib", peak_rss_mib()}, {"rss_growth_mib", peak_rss_mib() - rss0},
            {"threads", Eigen::nbThreads()}};
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"CPU training-step benchmark"};
    std::string preset = "tiny", plan = "vanilla";
    int B = 8, T = 32, steps = 10, warmup = 2;
    app.add_option("--preset", preset, "tiny, char_mini or char_small")->capture_default_str();
    app.add_option("--plan", plan, "vanilla, sgt (L=3, h=2, K=3) or block (3 layers)")->capture_default_str();
    app.add_option("--batch", B)->capture_default_str();
    app.add_option("--seq", T)->capture_default_str();
    app.add_option("--steps", steps, "timed steps")->capture_default_str();
    app.add_option("--warmup", warmup, "untimed steps first")->capture_default_str();
    CLI11_PARSE(app, argc, argv);
    try {
        nlohmann::json j;
        if (preset == "tiny") j = bench<presets::tiny>(plan, B, T, steps, warmup);
        else if (preset == "char_mini") j = bench<presets::char_mini>(plan, B, T, steps, warmup);
        else if (preset == "char_small") j = bench<presets::char_small>(plan, B, T, steps, warmup);
        else fail("unknown preset '{}': expected tiny, char_mini or char_small", preset);
        j["preset"] = preset;
        fmt::print("{}\n", j.dump());
        return 0;
    } catch (const sgt::error& e) {
        fmt::print(stderr, "error: {}\n", e.what());
        return 1;
    }
}
