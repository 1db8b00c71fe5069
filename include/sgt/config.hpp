// sgt/config.hpp: the compile-time shape of a model and its loop budget (spec Sec. 1, 5; Table 8).
//
// The STRUCTURE of an SGT is fixed at compile time: layers, heads, head dim, d_ff, vocab, maximum sequence,
// and the loop budget h (heads per looped layer), L (looping layers), K_max (loop depth). Which layers loop,
// with which heads and how deep, is decided at run time by the growth operator (growth.hpp), always inside
// this budget, so every buffer is sized once. Both are C++20 structural types used as template arguments:
//
//     sgt::model<double, sgt::presets::tiny> m(batch, seq, seed);
#pragma once

#include <cstdint>

namespace sgt {

// Model shape. Letters used in shape comments across the library: B batch, T sequence, C width (d),
// NH heads, HD head dim, F d_ff, V vocab, NL layers.
struct model_shape {
    int layers = 0;    // NL
    int heads = 0;     // NH
    int head_dim = 0;  // HD
    int d_ff = 0;      // F, the SwiGLU hidden width
    int vocab = 0;     // V
    int max_seq = 0;   // the longest sequence T the model accepts (RoPE tables, buffers)

    constexpr int width() const { return heads * head_dim; }  // C = d

    // Parameters of one decoder layer's weight matrices: W_Q, W_K, W_V, W_O (C x C) and W_1, W_2, W_3.
    constexpr std::int64_t layer_matrix_params() const {
        const std::int64_t c = width();
        return 4 * c * c + 3 * c * std::int64_t(d_ff);
    }
    // All weight-matrix parameters, both embeddings included: the P of the FLOPs convention (spec Sec. 6)
    // and the count the paper quotes in Table 8.
    constexpr std::int64_t matrix_params() const {
        return layers * layer_matrix_params() + 2 * std::int64_t(vocab) * width();
    }
    // Every trainable number: the matrices plus the RMSNorm weights (two per layer and the final one).
    constexpr std::int64_t total_params() const {
        return matrix_params() + (2 * std::int64_t(layers) + 1) * width();
    }
};

// Loop budget: at most L looping layers, each looping at most K_max times over h heads.
struct loop_budget {
    int h = 0;      // heads per looped layer
    int L = 0;      // number of looping layers
    int k_max = 0;  // loop depth bound
};

// A model's full compile-time configuration.
struct model_config {
    model_shape shape;
    loop_budget loops;
    double rope_base = 10000.0;
    double norm_eps = 1e-5;
};

// Compile-time validation with messages that say what is wrong. Instantiated by every model type.
template <model_config Cfg>
struct validated_config {
    static constexpr model_shape s = Cfg.shape;
    static constexpr loop_budget b = Cfg.loops;
    static_assert(s.layers > 0, "model_shape: layers must be positive");
    static_assert(s.heads > 0, "model_shape: heads must be positive");
    static_assert(s.head_dim > 0, "model_shape: head_dim must be positive");
    static_assert(s.head_dim % 2 == 0, "model_shape: head_dim must be even (RoPE rotates pairs of halves)");
    static_assert(s.d_ff > 0, "model_shape: d_ff must be positive");
    static_assert(s.vocab > 1, "model_shape: vocab must be at least 2");
    static_assert(s.max_seq > 1, "model_shape: max_seq must be at least 2 (entropy divides by log T)");
    static_assert(b.h >= 0 && b.L >= 0 && b.k_max >= 0, "loop_budget: h, L and K_max must not be negative");
    static_assert(b.h <= s.heads, "loop_budget: h must not exceed heads");
    static_assert(b.L <= s.layers, "loop_budget: L must not exceed layers");
    static_assert(Cfg.rope_base > 1.0, "model_config: rope_base must exceed 1");
    static_assert(Cfg.norm_eps > 0.0, "model_config: norm_eps must be positive");
    static constexpr model_config value = Cfg;
};

// A configuration at another longest sequence (e.g. a preset trained at 1024 tokens, benchmarked at 4096).
constexpr model_config with_max_seq(model_config c, int max_seq) {
    c.shape.max_seq = max_seq;
    return c;
}

namespace presets {

// The paper's loop budget: h = 2 heads, L = 3 layers, K_max up to 3 (spec Sec. 5).
inline constexpr loop_budget paper_loops{.h = 2, .L = 3, .k_max = 3};

// For tests: small enough for finite differences in double, four layers so that the first can be excluded
// and three can loop.
inline constexpr model_config tiny{
    .shape = {.layers = 4, .heads = 4, .head_dim = 8, .d_ff = 64, .vocab = 64, .max_seq = 32},
    .loops = {.h = 2, .L = 3, .k_max = 3}};

// Byte-level model the size of the usual Tiny Shakespeare baseline: about 10.8M parameters.
inline constexpr model_config char_small{
    .shape = {.layers = 6, .heads = 6, .head_dim = 64, .d_ff = 1024, .vocab = 256, .max_seq = 256},
    .loops = paper_loops};

// A smaller byte-level model for the CPU demo and quick comparisons (about 0.8M parameters).
inline constexpr model_config char_mini{
    .shape = {.layers = 4, .heads = 4, .head_dim = 32, .d_ff = 384, .vocab = 256, .max_seq = 128},
    .loops = paper_loops};

// The demo's model (examples/compare on the embedded k-hop task, 2 cores): 4 layers, 4 heads of 16, width 64,
// byte vocabulary; about 0.30M parameters.
inline constexpr model_config char_micro{
    .shape = {.layers = 4, .heads = 4, .head_dim = 16, .d_ff = 256, .vocab = 256, .max_seq = 128},
    .loops = paper_loops};

// The 7M-parameter scale of the adaptive sparse block report (the learned head gates' isoFLOP comparison,
// scripts/isoflop.sh): 6 layers, 8 heads of 32, width 256, d_ff 1152, byte vocabulary; 7,015,680 parameters.
inline constexpr model_config char_7m{
    .shape = {.layers = 6, .heads = 8, .head_dim = 32, .d_ff = 1152, .vocab = 256, .max_seq = 256},
    .loops = paper_loops};

// Twelve layers, the depth of the paper's 275M model, at a width one GPU trains in minutes: 8 heads of 32,
// width 256, d_ff 1024. char_12l: byte vocabulary (12.7M parameters); gpt2_12l: GPT-2's vocabulary padded
// to 50304 for llm.c's GPT-2 token shards (38.3M parameters, 25.8M of them the two embeddings).
inline constexpr model_config char_12l{
    .shape = {.layers = 12, .heads = 8, .head_dim = 32, .d_ff = 1024, .vocab = 256, .max_seq = 1024},
    .loops = paper_loops};
inline constexpr model_config gpt2_12l{
    .shape = {.layers = 12, .heads = 8, .head_dim = 32, .d_ff = 1024, .vocab = 50304, .max_seq = 1024},
    .loops = paper_loops};

// GPT-2 small's size as a LLaMA: 12 layers, 12 heads of 64 (width 768), d_ff 2048, GPT-2's vocabulary padded to
// 50304, T = 1024 (162.2M parameters, 77.3M of them the two embeddings). The GPU step benchmark's model
// (bench_cuda_step's gpt2) and the size the data-parallel scaling is measured at (scripts/multi_gpu.sh).
inline constexpr model_config gpt2{
    .shape = {.layers = 12, .heads = 12, .head_dim = 64, .d_ff = 2048, .vocab = 50304, .max_seq = 1024},
    .loops = paper_loops};

// The paper's scales (Table 8), vocab padded to 50304, sequence 4096.
inline constexpr model_config p275m{
    .shape = {.layers = 12, .heads = 12, .head_dim = 64, .d_ff = 6144, .vocab = 50304, .max_seq = 4096},
    .loops = paper_loops};
inline constexpr model_config p573m{
    .shape = {.layers = 16, .heads = 16, .head_dim = 64, .d_ff = 8192, .vocab = 50304, .max_seq = 4096},
    .loops = paper_loops};
inline constexpr model_config p1_2b{
    .shape = {.layers = 16, .heads = 16, .head_dim = 96, .d_ff = 12288, .vocab = 50304, .max_seq = 4096},
    .loops = paper_loops};

}  // namespace presets
}  // namespace sgt
