// bench/bench_infer_cpu: inference throughput of the CPU backend, the twin of bench_infer (CUDA). One JSON object
// per (model, variant, batch, context): prefill tokens/s (B prompts of context − decode tokens) and decode tokens/s
// (the median decode step, one token per sequence, as the context fills up), with what a step must do: the
// forward FLOPs of one decoded token at that context (a third of spec Sec. 6's training FLOPs, whose attention
// term then counts the keys the token attends to) and the bytes it must read (the weights once, and the key and
// value vectors of every pass's heads, the KV cache's heads per token x context). Variants as bench/plans.hpp:
// vanilla, SGT (3 layers, K = 3, h = 2), Block Loop; models: char_small and the GPT-2-sized LLaMA of the GPU
// benchmarks. On a CPU a step is bound by its work, not by launches, so SGT's decode overhead over vanilla can be
// set against its FLOPs and bytes overhead (issue 10's bar) without a GPU's per-kernel latency in the way.
//
//     bench_infer_cpu --models char_small,gpt2 --variants vanilla,sgt,block --batches 1 --contexts 1024 --threads 2
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>

#include "plans.hpp"
#include "sgt/sgt.hpp"

using namespace sgt;
using sgt_bench::parse_number;
using sgt_bench::seconds_since;
using sgt_bench::split_list;

namespace {

template <model_config Cfg>
nlohmann::json bench(const std::string& name, const std::string& variant, int B, int ctx, int decode_tokens) {
    using T = float;
    constexpr model_shape s = Cfg.shape;
    const loop_plan plan = sgt_bench::make_plan(variant, s, Cfg.loops);
    inference<T, Cfg, cpu> inf(B, ctx, plan);
    {
        rng r(1);
        std::vector<T> w(inf.parameters().size());
        for (auto& x : w) x = T(0.02 * r.normal());
        inf.parameters_from_host(w);
    }
    const int prompt_len = ctx - decode_tokens;
    rng r(2);
    std::vector<std::vector<std::int32_t>> prompts(static_cast<std::size_t>(B));
    for (auto& p : prompts)
        for (int i = 0; i < prompt_len; ++i) p.push_back(std::int32_t(r.below(s.vocab)));
    auto t0 = std::chrono::steady_clock::now();
    inf.prefill(prompts);
    const double prefill_s = seconds_since(t0);
    std::vector<double> steps;
    std::vector<std::int32_t> next(static_cast<std::size_t>(B));
    for (int i = 0; i < decode_tokens; ++i) {
        for (auto& x : next) x = std::int32_t(r.below(s.vocab));
        t0 = std::chrono::steady_clock::now();
        inf.decode(next);
        steps.push_back(seconds_since(t0));
    }
    std::vector<double> sorted(steps.begin() + std::min<int>(1, decode_tokens - 1), steps.end());
    std::sort(sorted.begin(), sorted.end());
    const double median = sorted[sorted.size() / 2];
    // What the median step (near position ctx − decode_tokens / 2) must do: forward FLOPs of B tokens, and bytes
    // read: the weights once and every pass's cached keys and values of the B sequences.
    const int pos = ctx - decode_tokens / 2;
    const double flops_per_token = token_flops(s, pos, plan) / 3.0;
    const std::int64_t heads = inf.cache().used();
    const double cache_read = double(B) * pos * double(heads) * 2.0 * s.head_dim * sizeof(T);
    const double step_bytes = double(inf.weight_bytes()) + cache_read;
    return {{"impl", "sgt-cpu"},
            {"model", name},
            {"variant", variant},
            {"precision", "fp32"},
            {"threads", threads()},
            {"batch", B},
            {"context", ctx},
            {"prompt", prompt_len},
            {"decode_tokens", decode_tokens},
            {"prefill_tokens_per_s", double(B) * prompt_len / prefill_s},
            {"decode_tokens_per_s", double(B) / median},
            {"decode_step_ms", 1e3 * median},
            {"decode_flops_per_token", flops_per_token},
            {"decode_gflop_per_s", B * flops_per_token / median / 1e9},
            {"decode_step_bytes", step_bytes},
            {"decode_gb_per_s", step_bytes / median / 1e9},
            {"cache_heads_per_token", heads},
            {"cache_bytes", inf.cache_bytes()},
            {"weight_bytes", inf.weight_bytes()},
            {"memory_bytes", inf.memory_bytes()}};
}

std::vector<int> int_list(const std::string& s, const char* what) {
    std::vector<int> out;
    for (const auto& x : split_list(s)) {
        const int v = parse_number<int>(x, what);
        require(v > 0, "{}: expected positive integers, found '{}'", what, x);
        out.push_back(v);
    }
    return out;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"Inference throughput of the CPU backend (prefill and decode tokens/s, FLOPs and bytes per step)"};
    std::string models = "char_small", variants = "vanilla,sgt,block", batches = "1", contexts = "1024";
    int decode_tokens = 16, n_threads = 0;
    app.add_option("--models", models, "char_small, gpt2")->capture_default_str();
    app.add_option("--variants", variants, "vanilla, sgt, block")->capture_default_str();
    app.add_option("--batches", batches)->capture_default_str();
    app.add_option("--contexts", contexts, "at most 4096")->capture_default_str();
    app.add_option("--decode-tokens", decode_tokens, "decode steps measured (the prompt is context minus these)")
        ->capture_default_str();
    app.add_option("--threads", n_threads, "CPU threads (0: the default, OMP_NUM_THREADS capped at the cores)")
        ->capture_default_str();
    CLI11_PARSE(app, argc, argv);
    try {
        if (n_threads > 0) set_threads(n_threads);
        require(decode_tokens >= 2, "--decode-tokens: expected at least 2, found {}", decode_tokens);
        for (const auto& m : split_list(models))
            for (const auto& v : split_list(variants))
                for (const int B : int_list(batches, "--batches"))
                    for (const int ctx : int_list(contexts, "--contexts")) {
                        require(ctx > decode_tokens && ctx <= 4096,
                                "--contexts: expected more than --decode-tokens ({}) and at most 4096, found {}",
                                decode_tokens, ctx);
                        const nlohmann::json j = sgt_bench::with_infer_model(
                            m, [&]<model_config Cfg>() { return bench<Cfg>(m, v, B, ctx, decode_tokens); });
                        fmt::print("{}\n", j.dump());
                        std::fflush(stdout);
                    }
    } catch (const sgt::error& e) {
        fmt::print(stderr, "bench_infer_cpu: {}\n", e.what());
        return 1;
    }
    return 0;
}
