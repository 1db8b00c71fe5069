// bench/bench_cuda_step: GPU training-step time of the CUDA backend, one JSON object per (preset, variant):
// median step time after warm-up (CUDA events around trainer::step), tokens/s, FLOPs per step (spec Sec. 6),
// achieved TFLOP/s, MFU against the H100 SXM's dense peak, and peak GPU memory held by the library's buffers.
// bench/run_cuda.sh runs it next to bench/torch_step.py (the same models in PyTorch) in one job.
//
//     bench_cuda_step --preset gpt2 --variants vanilla,sgt,block --precision bf16 --steps 20 --warmup 5
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <sstream>

#include "plans.hpp"
#include "sgt/cuda.hpp"
#if __has_include(<nccl.h>)
#include "sgt/dist/nccl.hpp"
#define SGT_BENCH_NCCL 1
#endif

using namespace sgt;

namespace {

// A GPT-2-small-sized LLaMA (config.hpp): 12 layers, 12 heads of 64 (width 768), d_ff 2048, GPT-2's padded
// vocabulary.
constexpr model_config gpt2_llama = presets::gpt2;
// The same model at twice GPT-2's length (B8 x T2048) and at the paper's training length (B4 x T4096): the same
// 16384 tokens a step as gpt2, with more of the work in the attention.
constexpr model_config gpt2_2k = with_max_seq(presets::gpt2, 2048);
constexpr model_config gpt2_4k = with_max_seq(presets::gpt2, 4096);

bool use_graphs = true;  // --no-graphs: every step eager (trainer::set_graphs)
bool one_nccl_rank = false;  // --nccl-rank: the data-parallel step of one NCCL rank (what several GPUs add)
std::int64_t logits_chunk = 0;  // --logits-chunk: model::set_logits_chunk
std::string loop_subspace = "on";  // --loop-subspace on|off: model::set_loop_subspace
std::string product_tuning_flag = "on";  // --product-tuning on|off: set_product_tuning

struct event_timer {
    device_event start, stop;
    template <class F>
    double milliseconds(F&& f) {
        SGT_CUDA_CHECK(cudaEventRecord(start));
        f();
        SGT_CUDA_CHECK(cudaEventRecord(stop));
        SGT_CUDA_CHECK(cudaEventSynchronize(stop));
        float ms = 0;
        SGT_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
        return ms;
    }
};

template <model_config Cfg, class T>
nlohmann::json bench(const std::string& variant, int B, int S, int steps, int warmup, double peak) {
    // Each variant counts the ops' scratch it needs, not only what it adds to a variant's run before it.
    detail::context().release_scratch();
    const auto base = detail::device_memory().in_use;
    detail::device_memory().peak = base;
    nlohmann::json j;
    {
        model<T, Cfg, cuda> m(B, S, 1);
        m.set_logits_chunk(logits_chunk);
        m.set_loop_subspace(loop_subspace == "on");
        const loop_plan plan = sgt_bench::make_plan(variant, Cfg.shape, Cfg.loops);
        static_schedule sched(plan, Cfg.shape.heads, variant);
        trainer tr(m, sched, cosine_schedule{.lr_max = 1e-4, .warmup = 1, .total = steps + warmup + 1},
                   adamw_options{}, B, S);
        tr.set_graphs(use_graphs);
#ifdef SGT_BENCH_NCCL
        std::optional<dist::tcp_group> group;
        std::optional<dist::nccl_data_parallel<T>> sync;
        if (one_nccl_rank) {
            group.emplace(0, 1, dist::rendezvous{});
            sync.emplace(*group);
            tr.set_data_parallel(&*sync);
        }
#else
        require(!one_nccl_rank, "--nccl-rank: this build has no NCCL (CMake found no nccl.h)");
#endif
        const std::size_t tuned_before = product_tunings(cuda{}).size();
        const batch b = sgt_bench::random_batch(B, S, Cfg.shape.vocab, 1234);
        event_timer timer;
        std::vector<double> ms;
        double loss = 0.0;
        for (int i = 0; i < warmup + steps; ++i) {
            const double t = timer.milliseconds([&] { loss = tr.step(b).loss; });
            if (i >= warmup) ms.push_back(t);
        }
        std::sort(ms.begin(), ms.end());
        const double median = ms[ms.size() / 2];
        const double flops = step_flops(Cfg.shape, B, S, plan);
        const double vanilla = step_flops(Cfg.shape, B, S, loop_plan::vanilla(Cfg.shape.layers));
        cudaDeviceProp prop{};
        SGT_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
        // The product shapes this variant tuned first (the variants before it tuned the ones they share).
        int shapes = 0, switched = 0;
        double first_ms = 0.0, kept_ms = 0.0, tuning_s = 0.0;
        const auto tunings = product_tunings(cuda{});
        for (std::size_t i = tuned_before; i < tunings.size(); ++i) {
            ++shapes;
            switched += tunings[i].chosen != 0;
            first_ms += tunings[i].first_ms, kept_ms += tunings[i].chosen_ms, tuning_s += tunings[i].seconds;
        }
        j = {{"impl", "sgt-cuda"},
             {"variant", variant},
             {"precision", std::is_same_v<T, float> ? "fp32" : "bf16"},
             {"batch", B},
             {"seq", S},
             {"params", Cfg.shape.total_params()},
             {"step_ms_median", median},
             {"step_ms_min", ms.front()},
             {"step_ms_max", ms.back()},
             {"tokens_per_s", B * S / (median / 1e3)},
             {"flops_per_step", flops},
             {"flops_overhead_pct", 100 * (flops / vanilla - 1)},
             {"tflops_per_s", flops / (median / 1e3) / 1e12},
             {"mfu", mfu(flops, median / 1e3, peak)},
             {"peak_tflops", peak / 1e12},
             {"peak_mem_mib", double(detail::device_memory().peak - base) / (1 << 20)},
             {"loss", loss},
             {"graphs", use_graphs},
             {"nccl_rank", one_nccl_rank},
             {"replayed_steps", tr.replayed_steps()},
             {"logits_chunk_rows", m.logits_chunk_rows(std::int64_t(B) * S)},
             {"loop_subspace", m.loop_subspace()},
             {"subspace_runs", m.subspace_runs()},
             {"product_tuning",
              {{"on", product_tuning_flag == "on"},
               {"new_shapes", shapes},
               {"switched", switched},
               {"first_ms_sum", first_ms},
               {"kept_ms_sum", kept_ms},
               {"seconds", tuning_s}}},
             {"device", prop.name}};
    }
    return j;
}

// Where a step's time goes: each kind of work of one step timed alone with the step's shapes (forward and
// backward, median of `reps`), scaled by how often a vanilla step does it. Printed as one JSON object.
template <model_config Cfg, class T>
nlohmann::json breakdown(int B, int S, int reps) {
    constexpr auto s = Cfg.shape;
    const int N = B * S, C = s.width(), F = s.d_ff, V = s.vocab, NH = s.heads, HD = s.head_dim;
    const cuda be{};
    rng r(7);
    auto random = [&](std::int64_t n) {
        std::vector<T> h(static_cast<std::size_t>(n));
        for (auto& x : h) x = T(double(std::int64_t(r.next_u64() % 2001) - 1000) * 5e-5);  // cheap, not zeros
        device_buffer<T> d(static_cast<std::size_t>(n));
        copy_from_host(be, d.data(), h.data(), n);
        return d;
    };
    const std::int64_t act = std::int64_t(N) * 2 * F;
    auto x = random(act), y = random(act), dx = random(act);
    const std::int64_t wn = std::max({std::int64_t(V) * C, 2 * std::int64_t(F) * C, act});
    auto w = random(wn), dw = random(wn);
    auto qkv = random(std::int64_t(N) * 3 * C), dqkv = random(std::int64_t(N) * 3 * C), o = random(std::int64_t(N) * C);
    auto probs = random(std::int64_t(B) * NH * S * S), logits = random(std::int64_t(N) * V), dlogits = random(std::int64_t(N) * V);
    device_buffer<double> ent(std::size_t(B) * NH);
    std::vector<std::int32_t> tok(static_cast<std::size_t>(N));
    for (auto& t : tok) t = std::int32_t(r.below(V));
    device_buffer<std::int32_t> targets(tok.size());
    copy_from_host(be, targets.data(), tok.data(), N);
    device_buffer<float> cs(std::size_t(S) * HD / 2), sn(cs.size());
    rope_tables(be, cs.data(), sn.data(), S, HD, 10000.0);
    auto params = random(s.total_params()), grads = random(s.total_params());

    event_timer timer;
    auto median_ms = [&](auto&& f) {
        f();
        std::vector<double> t;
        for (int i = 0; i < reps; ++i) t.push_back(timer.milliseconds(f));
        std::sort(t.begin(), t.end());
        return t[t.size() / 2];
    };
    auto linear = [&](int I, int O) {  // forward and backward of one (N, I) x (O, I)^T product
        return median_ms([&] {
            matmul_forward(be, y.data(), x.data(), w.data(), N, I, O);
            matmul_backward(be, dx.data(), dw.data(), y.data(), x.data(), w.data(), N, I, O);
        });
    };
    const double attn_linear = linear(C, 3 * C) + linear(C, C);
    const double ffn_linear = linear(C, 2 * F) + linear(F, C);  // [gate; up] as one product, then down
    auto attention_core = [&](int n) {  // fwd + bwd over n heads (a loop pass: the h selected heads)
        return median_ms([&] {
            attention_forward(be, o.data(), probs.data(), ent.data(), qkv.data(), B, S, n, HD);
            attention_backward(be, dqkv.data(), o.data(), qkv.data(), probs.data(), B, S, n, HD);
        });
    };
    const double attn_core = attention_core(NH), attn_core_2 = attention_core(2);
    const double norms_rope_swiglu = median_ms([&] {
        for (int k = 0; k < 2; ++k) {
            rmsnorm_forward(be, y.data(), dx.data(), x.data(), w.data(), N, C, 1e-5);
            rmsnorm_backward(be, dx.data(), dw.data(), y.data(), x.data(), w.data(), dx.data() + N * C, N, C);
        }
        rope_forward(be, qkv.data(), cs.data(), sn.data(), B, S, 2 * NH, HD, 3 * C);
        rope_backward(be, dqkv.data(), cs.data(), sn.data(), B, S, 2 * NH, HD, 3 * C);
        swiglu_forward(be, y.data(), x.data(), dx.data(), N, F, F);
        swiglu_backward(be, dx.data(), dw.data(), y.data(), x.data(), dx.data(), N, F, F);
        for (int k = 0; k < 4; ++k) accumulate(be, y.data(), x.data(), std::int64_t(N) * C);  // residuals, copies
    });
    const double head = median_ms([&] {
        matmul_forward(be, logits.data(), x.data(), w.data(), N, C, V);
        matmul_backward(be, dx.data(), dw.data(), dlogits.data(), x.data(), w.data(), N, C, V);
        cross_entropy_forward(be, logits.data(), targets.data(), N, V);
        cross_entropy_backward(be, dlogits.data(), logits.data(), targets.data(), N, V, 1.0 / N);
    });
    adamw<T, cuda> opt(parameter_table::llama(s), s.total_params(), adamw_options{});  // as the trainer's
    const double optimizer = median_ms([&] {  // the gradient norm, the clip and the update
        opt.step(std::span<T>(params.data(), params.size()), std::span<const T>(grads.data(), grads.size()), 1e-4);
    });
    const int L = s.layers;
    return {{"breakdown_ms_per_vanilla_step",
             {{"attention core (QK^T, softmax+entropy, PV; fwd+bwd)", L * attn_core},
              {"attention projections (qkv, o)", L * attn_linear},
              {"ffn projections (gate, up, down)", L * ffn_linear},
              {"rmsnorm, rope, swiglu, residuals", L * norms_rope_swiglu},
              {"lm head + cross-entropy", head},
              {"clip + AdamW", optimizer},
              {"sum", L * (attn_core + attn_linear + ffn_linear + norms_rope_swiglu) + head + optimizer}}},
            {"attention_core_ms_per_layer", attn_core},
            {"attention_core_ms_2_heads", attn_core_2},
            {"attention_core_2_heads_over_all", attn_core_2 / attn_core}};
}

template <class T>
nlohmann::json bench_preset(const std::string& preset, const std::string& variant, int B, int S, int steps, int warmup,
                            double peak) {
    if (variant == "breakdown") {
        if (preset == "gpt2") return breakdown<gpt2_llama, T>(B ? B : 16, S ? S : 1024, steps);
        if (preset == "gpt2_2k") return breakdown<gpt2_2k, T>(B ? B : 8, S ? S : 2048, steps);
        if (preset == "gpt2_4k") return breakdown<gpt2_4k, T>(B ? B : 4, S ? S : 4096, steps);
        if (preset == "char_small") return breakdown<presets::char_small, T>(B ? B : 64, S ? S : 256, steps);
        fail("breakdown: expected the gpt2, gpt2_2k, gpt2_4k or char_small preset, found '{}'", preset);
    }
    if (preset == "gpt2") return bench<gpt2_llama, T>(variant, B ? B : 16, S ? S : 1024, steps, warmup, peak);
    if (preset == "gpt2_2k") return bench<gpt2_2k, T>(variant, B ? B : 8, S ? S : 2048, steps, warmup, peak);
    if (preset == "gpt2_4k") return bench<gpt2_4k, T>(variant, B ? B : 4, S ? S : 4096, steps, warmup, peak);
    if (preset == "char_small") return bench<presets::char_small, T>(variant, B ? B : 64, S ? S : 256, steps, warmup, peak);
    if (preset == "tiny") return bench<presets::tiny, T>(variant, B ? B : 4, S ? S : 32, steps, warmup, peak);
    fail("unknown preset '{}': expected gpt2, gpt2_2k, gpt2_4k, char_small or tiny", preset);
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"CUDA training-step benchmark"};
    std::string preset = "gpt2", variants = "vanilla,sgt,block", precision = "bf16";
    int B = 0, S = 0, steps = 20, warmup = 5;
    double peak_tflops = 0;
    std::string attention = "auto";
    app.add_option("--preset", preset, "gpt2 (12L 768 d_ff 2048, V 50304, B16 x T1024), gpt2_2k (the same at B8 x T2048), gpt2_4k (B4 x T4096), char_small (B64 x T256) or tiny")
        ->capture_default_str();
    app.add_option("--variants", variants,
                   "comma-separated: vanilla, sgt (L=3, h=2, K=3), block (3 layers); breakdown: where the time goes")
        ->capture_default_str();
    app.add_option("--precision", precision, "bf16 (mixed) or fp32")->capture_default_str();
    app.add_option("--batch", B, "batch (default: the preset's)");
    app.add_option("--seq", S, "sequence length (default: the preset's)");
    app.add_option("--steps", steps, "timed steps")->capture_default_str();
    app.add_option("--warmup", warmup, "untimed steps first")->capture_default_str();
    app.add_option("--peak-tflops", peak_tflops, "peak for MFU (default: H100 SXM dense, 989 bf16 / 67 fp32)");
    app.add_option("--attention", attention, "bf16 attention kernels: auto, cudnn, fused or materialized")
        ->capture_default_str();
    bool nondeterministic = false;
    app.add_flag("--nondeterministic", nondeterministic,
                 "let cuDNN's attention backward accumulate with atomics (runs differ in the last bits)");
    bool no_graphs = false;
    app.add_flag("--no-graphs", no_graphs, "run every step eagerly instead of replaying a recorded CUDA graph");
    app.add_option("--logits-chunk", logits_chunk,
                   "rows of logits at a time in the LM head and cross-entropy (0: automatic, at most 1 GiB)")
        ->capture_default_str();
    app.add_flag("--nccl-rank", one_nccl_rank,
                 "train as the one rank of an NCCL data-parallel group (the cost of the gradient sum and its stream)");
    app.add_option("--loop-subspace", loop_subspace,
                   "loop steps over the same heads in their subspace (model::set_loop_subspace): on or off")
        ->check(CLI::IsMember({"on", "off"}))
        ->capture_default_str();
    app.add_option("--product-tuning", product_tuning_flag,
                   "time cuBLASLt's algorithms that give its first choice's bits, before a step is recorded "
                   "(set_product_tuning): on or off")
        ->check(CLI::IsMember({"on", "off"}))
        ->capture_default_str();
    CLI11_PARSE(app, argc, argv);
    use_graphs = !no_graphs;
    set_product_tuning(cuda{}, product_tuning_flag == "on");
    try {
        require(attention == "auto" || attention == "cudnn" || attention == "fused" || attention == "materialized",
                "--attention: expected auto, cudnn, fused or materialized, found '{}'", attention);
        require(attention != "cudnn" || detail::cudnn_built,
                "--attention cudnn: this build has no cuDNN (configure with -DSGT_CUDNN=ON)");
        set_attention_kernel(cuda{}, attention == "cudnn"          ? attention_kernel::cudnn
                                     : attention == "fused"        ? attention_kernel::fused
                                     : attention == "materialized" ? attention_kernel::materialized
                                                                   : attention_kernel::automatic);
        set_deterministic(cuda{}, !nondeterministic);
        require(precision == "bf16" || precision == "fp32", "--precision: expected bf16 or fp32, found '{}'", precision);
        require(steps > 0 && warmup >= 0, "expected --steps > 0 and --warmup >= 0");
        const double peak = peak_tflops > 0 ? peak_tflops * 1e12 : precision == "bf16" ? peak_flops::h100_sxm_bf16 : 67e12;
        std::stringstream list(variants);
        for (std::string v; std::getline(list, v, ',');) {
            nlohmann::json j = precision == "bf16" ? bench_preset<__nv_bfloat16>(preset, v, B, S, steps, warmup, peak)
                                                   : bench_preset<float>(preset, v, B, S, steps, warmup, peak);
            j["preset"] = preset;
            j["attention"] = attention;
            j["cudnn"] = detail::cudnn_built;
            if (nondeterministic) j["nondeterministic"] = true;
            fmt::print("{}\n", j.dump());
            std::fflush(stdout);
        }
        return 0;
    } catch (const sgt::error& e) {
        fmt::print(stderr, "error: {}\n", e.what());
        return 1;
    }
}
