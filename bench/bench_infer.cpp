// bench/bench_infer: inference throughput of the CUDA backend (the analogue of the paper's Table 10), one JSON
// object per (model, variant, batch, context): prefill tokens/s (B prompts of context − decode tokens, after a
// warm-up prefill) and decode tokens/s (the median decode step, one token per sequence, as the context fills up;
// the step recorded as a CUDA graph), with the KV cache's bytes. Variants as bench/plans.hpp: vanilla, SGT
// (3 layers, K = 3, h = 2), Block Loop. Models: the GPT-2-sized LLaMA of bench_cuda_step and char_small, both
// with a 4096-token context. scripts/gpu_infer.sh BIN_DIR bench runs it next to bench/torch_infer.py (Hugging Face
// generate and our cached PyTorch model).
//
//     bench_infer --models gpt2,char_small --variants vanilla,sgt,block --batches 1,32 --contexts 1024,4096
//
// --train-forward adds the training forward's tokens/s over the same B x prompt tokens (model::forward: every
// position's logits and the loss, with the training records), the yardstick of prefill. --gate-closed 0,0.5
// runs each variant again with learned head gates (GATES.md Sec. 3.1) on every layer, set so that that share of
// the heads is closed for every token (bias −20 on the first ones, +20 on the rest, weights 0): the decode
// steps then skip those heads' cache reads, and the JSON reports the reads skipped. --profile-decode brackets the
// decode steps after the first (which records the graph) with cudaProfilerStart / cudaProfilerStop, so that a
// profiler started with its collection off sees those steps alone, not the prefills (bench/compare_infer.sh's
// SGT_NCU):
//
//     ncu --profile-from-start off ... bench_infer --models gpt2 --variants sgt --batches 32 --contexts 1024
//         --decode-tokens 3 --no-graph --profile-decode      (2 decode steps' kernels)
#include <cuda_profiler_api.h>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>

#include "plans.hpp"
#include "sgt/cuda.hpp"

using namespace sgt;
using sgt_bench::parse_number;
using sgt_bench::seconds_since;
using sgt_bench::split_list;

namespace {

// The training forward's tokens/s over B sequences of T tokens (median of 5 after 2).
template <model_config Cfg, class T>
double train_forward_tokens_per_s(const loop_plan& plan, int B, int T_) {
    model<T, Cfg, cuda> m(B, T_, 1);
    rng r(3);
    std::vector<std::int32_t> tokens(std::size_t(B) * T_);
    for (auto& x : tokens) x = std::int32_t(r.below(Cfg.shape.vocab));
    const batch b{B, T_, tokens, tokens};
    std::vector<double> times;
    for (int i = 0; i < 7; ++i) {
        SGT_CUDA_CHECK(cudaDeviceSynchronize());
        const auto t0 = std::chrono::steady_clock::now();
        m.forward(b, plan);  // returns the loss on the host: synchronous
        if (i >= 2) times.push_back(seconds_since(t0));
    }
    std::sort(times.begin(), times.end());
    return double(B) * T_ / times[times.size() / 2];
}

template <model_config Cfg, class T>
nlohmann::json bench(const std::string& name, const std::string& variant, int B, int ctx, int decode_tokens, bool graph,
                     bool tune, bool train_forward, double gate_closed, std::int64_t prefill_tokens, bool profile) {
    constexpr int NH = Cfg.shape.heads;
    const loop_plan plan = sgt_bench::make_plan(variant, Cfg.shape, Cfg.loops);
    inference<T, Cfg, cuda> inf(B, ctx, plan, prefill_tokens);
    inf.use_step_graph(graph);
    inf.use_product_tuning(tune);
    const int closed = gate_closed >= 0 ? int(std::lround(gate_closed * NH)) : 0;
    if (gate_closed >= 0) inf.set_gates(gate_options{});
    {
        rng r(1);
        std::vector<T> w(inf.parameters().size());
        for (auto& x : w) x = T(0.02 * r.normal());
        for (const auto& e : inf.parameter_table()) {
            if (e.name.ends_with(".gate.weight")) std::fill_n(w.begin() + e.offset, e.numel(), T(0));
            if (e.name.ends_with(".gate.bias"))
                for (int i = 0; i < NH; ++i) w[std::size_t(e.offset + i)] = T(i < closed ? -20.0 : 20.0);
        }
        inf.parameters_from_host(w);
    }
    const int prompt_len = ctx - decode_tokens;
    rng r(2);
    std::vector<std::vector<std::int32_t>> prompts(static_cast<std::size_t>(B));
    for (auto& p : prompts)
        for (int i = 0; i < prompt_len; ++i) p.push_back(std::int32_t(r.below(Cfg.shape.vocab)));
    inf.prefill(prompts);  // warm-up: workspace, GEMM plans
    SGT_CUDA_CHECK(cudaDeviceSynchronize());
    auto t0 = std::chrono::steady_clock::now();
    inf.prefill(prompts);
    SGT_CUDA_CHECK(cudaDeviceSynchronize());
    const double prefill_s = seconds_since(t0);
    std::vector<double> steps;
    std::vector<std::int32_t> next(static_cast<std::size_t>(B));
    for (int i = 0; i < decode_tokens; ++i) {
        for (auto& x : next) x = std::int32_t(r.below(Cfg.shape.vocab));
        if (profile && i == 1) SGT_CUDA_CHECK(cudaProfilerStart());
        t0 = std::chrono::steady_clock::now();
        inf.decode(next);  // returns the logits on the host: synchronous
        steps.push_back(seconds_since(t0));
    }
    if (profile && decode_tokens > 1) SGT_CUDA_CHECK(cudaProfilerStop());
    std::vector<double> sorted(steps.begin() + std::min<int>(2, decode_tokens - 1), steps.end());
    std::sort(sorted.begin(), sorted.end());
    const double median = sorted[sorted.size() / 2];
    nlohmann::json j{{"impl", "sgt-cuda"},
            {"model", name},
            {"variant", gate_closed >= 0 ? variant + "+gates" : variant},
            {"precision", precision_name<T>::value},
            {"batch", B},
            {"context", ctx},
            {"prompt", prompt_len},
            {"prefill_chunk_tokens", std::max<std::int64_t>(prefill_tokens, ctx)},
            {"decode_tokens", decode_tokens},
            {"cuda_graph", graph},
            {"prefill_tokens_per_s", double(B) * prompt_len / prefill_s},
            {"decode_tokens_per_s", double(B) / median},
            {"decode_step_ms", 1e3 * median},
            {"cache_bytes", inf.cache_bytes()},
            {"cache_heads_per_token", inf.cache().used()},
            {"weight_bytes", inf.weight_bytes()},
            {"memory_bytes", inf.memory_bytes()}};
    if (gate_closed >= 0) {
        j["gate_closed"] = double(closed) / NH;
        j["head_reads_skipped_fraction"] = inf.gate_stats().skipped_fraction();
        j["kv_vectors_skipped_fraction"] = inf.gate_stats().kv_skipped_fraction();
    }
    if (train_forward) j["train_forward_tokens_per_s"] = train_forward_tokens_per_s<Cfg, T>(plan, B, prompt_len);
    return j;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"Inference throughput of the CUDA backend (prefill and decode tokens/s, KV cache bytes)"};
    std::string models = "gpt2,char_small", variants = "vanilla,sgt,block", batches = "1,32", contexts = "1024,4096";
    std::string precision = "bf16", fuse = "on", decode_keys = "0", pass_kernel = "on", tc_weights = "default";
    std::string decode_tc = "on", product_tuning = "off";
    int decode_tokens = 64;
    bool no_graph = false, train_forward = false, profile_decode = false;
    std::string gate_closed;
    std::int64_t prefill_tokens = 32768;  // inference's default
    app.add_option("--models", models, "gpt2, char_small")->capture_default_str();
    app.add_option("--variants", variants, "vanilla, sgt, block")->capture_default_str();
    app.add_option("--batches", batches)->capture_default_str();
    app.add_option("--contexts", contexts)->capture_default_str();
    app.add_option("--decode-tokens", decode_tokens, "decode steps measured (the prompt is context minus these)")
        ->capture_default_str();
    app.add_option("--precision", precision, "bf16 or fp32")->capture_default_str();
    app.add_flag("--no-graph", no_graph, "run every decode step eagerly instead of replaying a CUDA graph");
    app.add_option("--prefill-tokens", prefill_tokens, "tokens per prefill chunk (inference's workspace)")
        ->capture_default_str();
    app.add_option("--fuse", fuse,
                   "a decode step's normed products of a few rows as one kernel each: on, off, or on,off for both")
        ->capture_default_str();
    app.add_option("--decode-keys", decode_keys,
                   "keys per block of decode attention: 64, 128, 256, or 0 to choose by the shape; a list runs each")
        ->capture_default_str();
    app.add_option("--decode-tensor-cores", decode_tc,
                   "on, off or on,off: bf16 decode attention over heads of 64 or 128 computes its scores and value "
                   "sums on the tensor cores, or with multiply-adds")
        ->capture_default_str();
    app.add_flag("--profile-decode", profile_decode,
                 "collect profiles (cudaProfilerStart/Stop) over the decode steps after the first only, for a profiler "
                 "started with its collection off (ncu --profile-from-start off)");
    app.add_flag("--train-forward", train_forward, "also time the training forward over the prefill's tokens");
    app.add_option("--pass-kernel", pass_kernel,
                   "on, off or on,off: a run of decode attention passes over one sequence and a few heads as one "
                   "cluster kernel (decode_pass.cuh), or composed of the per-pass kernels")
        ->capture_default_str();
    app.add_option("--tc-weights", tc_weights,
                   "products of 5 to 32 rows with at most this many weights take the tensor-core few-row kernel "
                   "(bf16): a count, 0 for none, or default; a list runs each")
        ->capture_default_str();
    app.add_option("--gate-closed", gate_closed,
                   "shares of heads closed by learned gates, e.g. 0,0.5 (each variant runs with gates at each)");
    app.add_option("--product-tuning", product_tuning,
                   "tune the cuBLASLt products before a decode step is recorded (inference::use_product_tuning; "
                   "off, the engine's default, or on: a product tuned stays so for the rest of the run)")
        ->check(CLI::IsMember({"on", "off"}))
        ->capture_default_str();
    CLI11_PARSE(app, argc, argv);
    const bool tune = product_tuning == "on";
    const std::int64_t default_tc_weights = detail::context().few_rows_tc_weights;
    try {
        require(precision == "bf16" || precision == "fp32", "--precision: expected bf16 or fp32, found '{}'", precision);
        // Every combination of the lists, one JSON line each.
        std::vector<std::vector<std::string>> grid;
        for (const auto& f : split_list(fuse))
            for (const auto& dk : split_list(decode_keys))
                for (const auto& m : split_list(models))
                    for (const auto& v : split_list(variants))
                        for (const auto& b : split_list(batches))
                            for (const auto& c : split_list(contexts))
                                for (const auto& pk : split_list(pass_kernel))
                                    for (const auto& g : split_list(gate_closed.empty() ? std::string("-1") : gate_closed))
                                        for (const auto& tc : split_list(tc_weights))
                                            for (const auto& dt : split_list(decode_tc))
                                                grid.push_back({f, dk, m, v, b, c, g, pk, tc, dt});
        for (const auto& row : grid) {
            const std::string &f = row[0], &m = row[2], &v = row[3], &g = row[6], &pk = row[7];
            require(f == "on" || f == "off", "--fuse: expected on or off, found '{}'", f);
            require(pk == "on" || pk == "off", "--pass-kernel: expected on or off, found '{}'", pk);
            set_fuse_few_rows(cuda{}, f == "on");
            set_fuse_decode_passes(cuda{}, pk == "on");
            require(row[9] == "on" || row[9] == "off", "--decode-tensor-cores: expected on or off, found '{}'", row[9]);
            set_decode_tensor_cores(cuda{}, row[9] == "on");
            const int keys = parse_number<int>(row[1], "--decode-keys"), B = parse_number<int>(row[4], "--batches");
            const int ctx = parse_number<int>(row[5], "--contexts");
            set_decode_block_keys(cuda{}, keys);
            const std::int64_t tc =
                row[8] == "default" ? default_tc_weights : parse_number<std::int64_t>(row[8], "--tc-weights");
            set_few_rows_tensor_cores(cuda{}, tc);
            const double gc = parse_number<double>(g, "--gate-closed");
            require(gc == -1 || (gc >= 0 && gc <= 1), "--gate-closed: expected shares in [0, 1], found {}", g);
            auto run = [&]<model_config Cfg>() {
                return precision == "bf16" ? bench<Cfg, __nv_bfloat16>(m, v, B, ctx, decode_tokens, !no_graph, tune,
                                                                       train_forward, gc, prefill_tokens,
                                                                       profile_decode)
                                           : bench<Cfg, float>(m, v, B, ctx, decode_tokens, !no_graph, tune,
                                                               train_forward, gc, prefill_tokens, profile_decode);
            };
            nlohmann::json j = sgt_bench::with_infer_model(m, run);
            j["fused_products"] = f == "on";
            j["pass_kernel"] = pk == "on";
            j["tc_weights"] = tc;
            j["decode_block_keys"] = keys;  // 0: chosen by the shape
            j["decode_tensor_cores"] = row[9] == "on";
            j["product_tuning"] = tune;
            fmt::print("{}\n", j.dump());
            std::fflush(stdout);
        }
    } catch (const sgt::error& e) {
        fmt::print(stderr, "error: {}\n", e.what());
        return 1;
    }
    return 0;
}
