// bench/bench_cpu_step: CPU training-step time of a preset under a loop plan. Prints one JSON object: median
// step time after warm-up, tokens/s, FLOPs per step (spec Sec. 6) and achieved GFLOP/s, peak resident memory.
// With --breakdown, a second object: where that step's time goes, op kind by op kind.
//
//     bench_cpu_step --preset char_small --plan sgt --batch 8 --seq 256 --steps 10 --warmup 2 --threads 2
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <numeric>
#include <span>
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
nlohmann::json bench(const std::string& plan_name, int B, int T, int steps, int warmup, bool subspace) {
    using model_t = model<float, Cfg>;
    const double rss0 = peak_rss_mib();
    model_t m(B, T, 1);
    m.set_loop_subspace(subspace);
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
            {"threads", threads()}, {"loop_subspace", m.loop_subspace()}, {"subspace_runs", m.subspace_runs()}};
}

// Where a step's time goes: each kind of CPU work of one step timed alone at the step's shapes (forward and
// backward, median of `reps`), times how often the plan's step does it; their sum next to the measured step.
// An attention pass over n heads is its projections, its attention core and its elementwise work (RMSNorm,
// RoPE, head packing, residual, gradient copies and zeroing); loop passes are the plan's passes over S_l.
template <model_config Cfg>
nlohmann::json breakdown(const std::string& plan_name, int B, int S, int reps, double measured_ms) {
    constexpr auto s = Cfg.shape;
    const int N = B * S, C = s.width(), F = s.d_ff, V = s.vocab, NH = s.heads, HD = s.head_dim;
    const loop_plan plan = sgt_bench::make_plan(plan_name, s, Cfg.loops);
    int full_passes = 0, ffn_passes = 0, loop_passes = 0, loop_heads = 0;
    for (const auto& l : plan.layers) {
        full_passes += l.block_repeat;
        ffn_passes += l.block_repeat;
        loop_passes += l.block_repeat * l.k;
        if (l.k > 0) loop_heads = int(l.heads.size());  // the bench plans loop over the same h heads everywhere
    }
    const cpu be{};
    rng r(7);
    auto random = [&](std::int64_t n) {
        cpu::buffer<float> b(static_cast<std::size_t>(n));
        for (auto& x : b) x = float(double(std::int64_t(r.next_u64() % 2001) - 1000) * 5e-5);  // cheap, not zeros
        return b;
    };
    const std::int64_t big = std::int64_t(N) * std::max(2 * F, 3 * C);
    auto x = random(big), y = random(big), dx = random(big), dy = random(big), ga = random(big), gb = random(big);
    const std::int64_t wn = std::max({std::int64_t(V) * C, 2 * std::int64_t(F) * C, 3 * std::int64_t(C) * C});
    auto w = random(wn), w2 = random(wn), dw = random(wn), dw2 = random(wn);
    auto probs = random(std::int64_t(B) * NH * S * S), logits = random(std::int64_t(N) * V);
    auto dlogits = random(std::int64_t(N) * V), rstd = random(N);
    cpu::buffer<double> ent(std::size_t(B) * NH);
    cpu::buffer<std::int32_t> tok(static_cast<std::size_t>(N));
    for (auto& t : tok) t = std::int32_t(r.below(V));
    cpu::buffer<float> cs(std::size_t(S) * HD / 2), sn(cs.size());
    rope_tables(be, cs.data(), sn.data(), S, HD, 10000.0);
    const std::int64_t P = s.total_params();
    auto params = random(P), grads = random(P), zeroed = random(P);

    auto median_ms = [&](auto&& f) {
        f();
        std::vector<double> t;
        for (int i = 0; i < reps; ++i) {
            const auto start = std::chrono::steady_clock::now();
            f();
            t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
        }
        std::sort(t.begin(), t.end());
        return t[t.size() / 2];
    };
    auto linear = [&](int I, int O) {  // forward and backward of one (N, I) x (O, I)^T product
        fill_zero(be, dx.data(), std::int64_t(N) * I);
        return median_ms([&] {
            matmul_forward(be, y.data(), x.data(), w.data(), N, I, O);
            matmul_backward(be, dx.data(), dw.data(), y.data(), x.data(), w.data(), N, I, O);
        });
    };
    auto attention_linear = [&](int n) { return linear(C, 3 * n * HD) + linear(n * HD, C); };
    auto attention_core = [&](int n) {
        return median_ms([&] {
            attention_forward(be, y.data(), probs.data(), ent.data(), x.data(), B, S, n, HD);
            attention_backward(be, dx.data(), y.data(), x.data(), probs.data(), B, S, n, HD);
        });
    };
    std::vector<int> head_ids(static_cast<std::size_t>(NH));
    std::iota(head_ids.begin(), head_ids.end(), 0);
    auto attention_elementwise = [&](int n) {  // as attention_pass_forward/backward do besides products and core
        const std::span<const int> heads(head_ids.data(), std::size_t(n));
        const std::int64_t NC = std::int64_t(N) * C, nhd = std::int64_t(n) * HD;
        return median_ms([&] {
            for (int q = 0; q < 3; ++q) gather_head_rows(be, w.data() + q * nhd * C, w2.data(), heads, HD, C);
            gather_head_cols(be, w.data(), w2.data(), heads, HD, C, NH);
            rmsnorm_forward(be, y.data(), rstd.data(), x.data(), w2.data(), N, C, 1e-5);
            rope_forward(be, x.data(), cs.data(), sn.data(), B, S, 2 * n, HD, 3 * nhd);
            accumulate(be, y.data(), x.data(), NC);
            copy(be, dy.data(), y.data(), NC);
            fill_zero(be, dx.data(), N * nhd);
            fill_zero(be, dw.data(), C * nhd);
            rope_backward(be, dx.data(), cs.data(), sn.data(), B, S, 2 * n, HD, 3 * nhd);
            fill_zero(be, dy.data(), NC);
            fill_zero(be, dw.data(), 3 * nhd * C);
            for (int q = 0; q < 3; ++q) scatter_add_head_rows(be, dw2.data(), dw.data() + q * nhd * C, heads, HD, C);
            scatter_add_head_cols(be, dw2.data(), dw.data(), heads, HD, C, NH);
            rmsnorm_backward(be, dx.data(), dw2.data(), dy.data(), x.data(), w2.data(), rstd.data(), N, C);
        });
    };
    const double ffn_linear = linear(C, 2 * F) + linear(F, C);  // [gate; up] as one product, then down
    const double ffn_elementwise = median_ms([&] {
        const std::int64_t NC = std::int64_t(N) * C, NF = std::int64_t(N) * F;
        rmsnorm_forward(be, y.data(), rstd.data(), x.data(), w2.data(), N, C, 1e-5);
        swiglu_forward(be, ga.data(), x.data(), y.data(), N, F, F);
        accumulate(be, y.data(), x.data(), NC);
        copy(be, dy.data(), y.data(), NC);
        fill_zero(be, ga.data(), NF);
        fill_zero(be, gb.data(), NF);
        fill_zero(be, dx.data(), NF);
        swiglu_backward(be, ga.data(), gb.data(), dy.data(), x.data(), y.data(), N, F, F);
        fill_zero(be, dy.data(), NC);
        rmsnorm_backward(be, dx.data(), w2.data(), dy.data(), x.data(), w2.data(), rstd.data(), N, C);
    });
    const double head = median_ms([&] {
        embedding_forward(be, y.data(), tok.data(), w2.data(), N, C);
        rmsnorm_forward(be, y.data(), rstd.data(), x.data(), w2.data(), N, C, 1e-5);
        matmul_forward(be, logits.data(), y.data(), w.data(), N, C, V);
        cross_entropy_forward(be, logits.data(), tok.data(), N, V);
        cross_entropy_backward(be, dlogits.data(), logits.data(), tok.data(), N, V, 1.0 / N);
        fill_zero(be, dx.data(), std::int64_t(N) * C);
        matmul_backward(be, dx.data(), dw.data(), dlogits.data(), y.data(), w.data(), N, C, V);
        rmsnorm_backward(be, dy.data(), dw2.data(), dx.data(), x.data(), w2.data(), rstd.data(), N, C);
        embedding_backward(be, dw2.data(), dy.data(), tok.data(), N, C);
    });
    adamw<float> opt(parameter_table::llama(s), P, adamw_options{});  // as the trainer's
    const double optimizer = median_ms([&] {
        fill_zero(be, zeroed.data(), P);  // zero_grad
        opt.step(std::span<float>(params.data(), params.size()), std::span<const float>(grads.data(), grads.size()),
                 1e-4);  // the gradient norm, the clip and the update
    });

    nlohmann::json rows = nlohmann::json::object();
    double sum = 0.0;
    auto row = [&](const std::string& name, double ms) {
        rows[name] = ms;
        sum += ms;
    };
    row("attention core (QK^T, softmax+entropy, PV; fwd+bwd)", full_passes * attention_core(NH));
    row("attention projections (qkv, o)", full_passes * attention_linear(NH));
    row("attention elementwise (rmsnorm, rope, residual, copies)", full_passes * attention_elementwise(NH));
    if (loop_passes > 0) {
        row("loop passes: attention core", loop_passes * attention_core(loop_heads));
        row("loop passes: projections", loop_passes * attention_linear(loop_heads));
        row("loop passes: elementwise (rmsnorm, rope, packing, residual)",
            loop_passes * attention_elementwise(loop_heads));
    }
    row("ffn projections (gate, up, down)", ffn_passes * ffn_linear);
    row("ffn elementwise (rmsnorm, swiglu, residual, copies)", ffn_passes * ffn_elementwise);
    row("embedding, final norm, lm head, cross-entropy", head);
    row("zero_grad, clip, AdamW", optimizer);
    rows["sum"] = sum;
    rows["measured step"] = measured_ms;
    return {{"breakdown_ms_per_step", rows}, {"plan", plan_name}, {"batch", B}, {"seq", S}, {"threads", threads()}};
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"CPU training-step benchmark"};
    std::string preset = "tiny", plan = "vanilla";
    int B = 8, T = 32, steps = 10, warmup = 2, n_threads = 0;
    bool with_breakdown = false;
    std::string subspace = "on";
    app.add_option("--preset", preset, "tiny, char_mini or char_small")->capture_default_str();
    app.add_option("--plan", plan, "vanilla, sgt (L=3, h=2, K=3) or block (3 layers)")->capture_default_str();
    app.add_option("--batch", B)->capture_default_str();
    app.add_option("--seq", T)->capture_default_str();
    app.add_option("--steps", steps, "timed steps")->capture_default_str();
    app.add_option("--warmup", warmup, "untimed steps first")->capture_default_str();
    app.add_option("--threads", n_threads, "CPU threads (0: the default, OMP_NUM_THREADS capped at the cores)")
        ->capture_default_str();
    app.add_flag("--breakdown", with_breakdown, "also time each kind of op of the step alone");
    app.add_option("--loop-subspace", subspace, "loop steps over the same heads in their subspace (model::set_loop_subspace)")
        ->check(CLI::IsMember({"on", "off"}))
        ->capture_default_str();
    CLI11_PARSE(app, argc, argv);
    try {
        set_threads(n_threads);
        auto run = [&]<model_config Cfg>() {
            nlohmann::json j = bench<Cfg>(plan, B, T, steps, warmup, subspace == "on");
            j["preset"] = preset;
            fmt::print("{}\n", j.dump());
            if (with_breakdown) {
                nlohmann::json d = breakdown<Cfg>(plan, B, T, steps, j["median_step_ms"].get<double>());
                d["preset"] = preset;
                fmt::print("{}\n", d.dump());
            }
        };
        if (preset == "tiny") run.template operator()<presets::tiny>();
        else if (preset == "char_mini") run.template operator()<presets::char_mini>();
        else if (preset == "char_small") run.template operator()<presets::char_small>();
        else fail("unknown preset '{}': expected tiny, char_mini or char_small", preset);
        return 0;
    } catch (const sgt::error& e) {
        fmt::print(stderr, "error: {}\n", e.what());
        return 1;
    }
}
