// sgt/infer/engine.hpp: inference with a KV cache: prefill, decode and generation (spec Sec. 7).
//
// sgt::inference<T, Cfg, Backend> runs a trained model under a frozen structure (structure.hpp):
//   prefill(prompts)   a batch of prompts of different lengths goes through every pass; each pass writes its
//                      keys and values into its cache slot (kv_cache.hpp); returns the logits of each prompt's
//                      last token (or of every position)
//   decode(tokens)     one token per sequence goes through every pass in order: each pass appends its key and
//                      value to its slot and attends over that slot (decode_attention, one query over the cache)
//   generate(...)      prefill, then sample (sampling.hpp) and decode until a stop token or a length
// Inference mode: no gradients and no training records; the memory is the weights, the cache and a workspace
// for one prefill chunk. The weights come from a trained sgt::model or a checkpoint (io/checkpoint.hpp's
// load_weights works on this type too), under the model's Hugging Face names.
// Backend-generic, as model.hpp: every step is a leaf op on the Backend tag. A decode step runs the same ops on
// the same buffers every time, so a GPU backend records it once as a graph and replays it (step_graph). Its
// products go through the normed ops of backend/cpu/decode.hpp (a product with the norm before it and SwiGLU, or
// RoPE and the cache write, after it), which a GPU runs as one kernel each for a few sequences, and its attention
// passes through decode_passes: a looped layer's steps 1..K as one run, which a GPU runs as one kernel for one
// sequence (backend/cuda/decode_pass.cuh).
//
// Learned head gates (gates.hpp, GATES.md Sec. 3.1), after set_gates(): on the first pass of each gated layer the
// gate scores every head at every position from its query and the prefix mean of its keys (kept across decode
// steps as a running sum per sequence and head), and the head's output is multiplied by g = s·[s ≥ θ], as in the
// model's forward; at inference the threshold always applies (a soft-trained model is thresholded here). In a
// decode step a head closed for the token (g = 0) reads nothing from its cache slot (its key and value are still
// written: a later token may open it); gate_stats() counts the reads and the cached vectors skipped.
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "sgt/attention.hpp"
#include "sgt/config.hpp"
#include "sgt/core/error.hpp"
#include "sgt/gates.hpp"
#include "sgt/infer/kv_cache.hpp"
#include "sgt/infer/sampling.hpp"
#include "sgt/infer/structure.hpp"
#include "sgt/model.hpp"

namespace sgt {

// What generate() produced and how fast.
struct generation {
    std::vector<std::vector<std::int32_t>> tokens;  // per sequence: the generated tokens (stop token included)
    double prefill_seconds = 0.0, decode_seconds = 0.0;
    std::int64_t prefill_tokens = 0, decode_tokens = 0;
    double prefill_tokens_per_s() const { return prefill_seconds > 0 ? prefill_tokens / prefill_seconds : 0.0; }
    double decode_tokens_per_s() const { return decode_seconds > 0 ? decode_tokens / decode_seconds : 0.0; }
};

// Decode-time work of the learned head gates since the last prefill: one head read is one (sequence, gated head)
// of a gated pass in one decode step; a skipped one (the head closed for that token) reads none of the key and
// value vectors it would have (the sequence's length each).
struct gate_decode_stats {
    std::int64_t head_reads = 0, head_reads_skipped = 0;
    std::int64_t kv_vectors = 0, kv_vectors_skipped = 0;  // (key, value) head vectors read or skipped
    double skipped_fraction() const { return head_reads ? double(head_reads_skipped) / double(head_reads) : 0.0; }
    double kv_skipped_fraction() const { return kv_vectors ? double(kv_vectors_skipped) / double(kv_vectors) : 0.0; }
};

struct generation_options {
    int max_new_tokens = 32;        // per sequence
    std::int32_t stop_token = -1;   // a sequence ends after emitting it (-1: none)
    sampling_options sampling{};
};

template <class T, model_config Cfg, class Backend = cpu>
class inference {
public:
    static constexpr model_config config = validated_config<Cfg>::value;
    static constexpr model_shape shape = Cfg.shape;
    static constexpr int NL = shape.layers, NH = shape.heads, HD = shape.head_dim, C = shape.width(),
                         F = shape.d_ff, V = shape.vocab;
    using value_type = T;
    using backend_type = Backend;
    using model_type = model<T, Cfg, Backend>;
    template <class U>
    using buffer = typename Backend::template buffer<U>;

    // A cache for max_batch sequences of max_context tokens, with room for `capacity`'s passes (any plan with no
    // more head vectors per token can then be set without allocating); the structure starts as `capacity`.
    // prefill_tokens: the workspace holds prefill chunks of this many tokens (at least one whole prompt); it grows
    // only to the largest chunk a prefill needs. On the H200 at gpt2 size, batch 32, chunks of 32768 tokens
    // prefill 10-20% faster than chunks of 8192 (docs/BENCHMARKS.md).
    inference(int max_batch, int max_context, const loop_plan& capacity = model_type::budget_plan(),
              std::int64_t prefill_tokens = 32768)
        : max_batch_(max_batch),
          max_context_(max_context),
          prefill_tokens_(std::max<std::int64_t>(prefill_tokens, max_context)),
          table_(sgt::parameter_table::llama(shape)),
          cache_(checked_capacity(capacity, max_batch, max_context), max_batch, max_context, HD) {
        params_.resize(std::size_t(table_.numel()));
        fill_zero(Backend{}, params_.data(), std::int64_t(params_.size()));
        rope_cos_.resize(std::size_t(max_context) * HD / 2);
        rope_sin_.resize(rope_cos_.size());
        rope_tables(Backend{}, rope_cos_.data(), rope_sin_.data(), max_context, HD, config.rope_base);
        set_structure(capacity);
        graph_.set_product_tuning(false);  // use_product_tuning
    }

    // ---- weights (the model's parameter table, Hugging Face names) -------------------------------------------
    const sgt::parameter_table& parameter_table() const { return table_; }
    static sgt::parameter_table make_parameter_table() { return sgt::parameter_table::llama(shape); }
    std::span<T> parameters() { return params_; }
    std::span<const T> parameters() const { return params_; }
    void parameters_from_host(std::span<const T> host) {
        require(host.size() == params_.size(), "inference: expected {} parameters, found {}", params_.size(),
                host.size());
        copy_from_host(Backend{}, params_.data(), host.data(), std::int64_t(host.size()));
        packed_ = false;
    }
    // The weights of a model of the same config and backend (copied; the model may be destroyed afterwards). A
    // gated model (model<..., gated_variant>) needs set_gates() with its options first. A model with σReparam
    // gives the weights it runs on in an evaluation forward, Ŵ = (γ/σ) W (fold_sigma_reparam).
    template <class Model>
    void load(const Model& m) {
        static_assert(std::is_same_v<typename Model::value_type, T> &&
                          std::is_same_v<typename Model::backend_type, Backend>,
                      "inference::load: the model's value type and backend must be the decoder's");
        if (m.sigma_reparam_state()) {
            const auto &pt = m.parameter_table(), &st = m.state_table();
            const std::vector<T> params = m.parameters_to_host(), state = m.state_to_host();
            require(pt.size() == table_.size() + sigma_reparam_weights(shape).size(),
                    "inference: the model has {} tensors with σReparam's γ, the decoder {} without{}", pt.size(),
                    table_.size(), gates_ ? "" : " (a gated model needs set_gates() with its options first)");
            load_folded([&](const std::string& name) {
                const bool is_param = pt.contains(name);
                const param_entry& e = is_param ? pt.at(name) : st.at(name);
                const auto first = (is_param ? params : state).begin() + e.offset;
                return std::vector<double>(first, first + e.numel());
            });
            return;
        }
        const auto& mt = m.parameter_table();
        require(mt.size() == table_.size() && m.parameters().size() == params_.size(),
                "inference: the model has {} tensors ({} parameters), the decoder {} ({}){}", mt.size(),
                m.parameters().size(), table_.size(), params_.size(),
                gates_ ? "" : " (a gated model needs set_gates() with its options first)");
        auto e = table_.begin();
        for (const auto& me : mt) {
            require(me.name == e->name && me.offset == e->offset && me.numel() == e->numel(),
                    "inference: the model's tensor '{}' differs from the decoder's '{}'", me.name, e->name);
            ++e;
        }
        copy(Backend{}, params_.data(), m.parameters().data(), std::int64_t(params_.size()));
        packed_ = false;
    }

    // The weights of a σReparam model given tensor by tensor (get(name): its parameters and u, v state), folded
    // into the Ŵ it runs on (fold_sigma_reparam; infer/load.hpp reads a checkpoint this way).
    template <class Get>
    void load_folded(Get&& get) {
        const std::vector<double> w = fold_sigma_reparam(table_, shape, get);
        std::vector<T> h(w.size());
        for (std::size_t i = 0; i < w.size(); ++i) h[i] = T(accum_t<T>(w[i]));
        parameters_from_host(h);
    }

    // Runs the learned head gates of a model trained with these options (their tensors join the parameter table,
    // as in model<..., gated_variant>): call before loading the weights, which it resets to zero.
    void set_gates(const gate_options& o) {
        table_ = model<T, Cfg, Backend, gated_variant>::make_parameter_table(gated_variant(o));
        gates_ = o;
        params_.resize(std::size_t(table_.numel()));
        fill_zero(Backend{}, params_.data(), std::int64_t(params_.size()));
        packed_ = false;
        graph_.reset();
        batch_ = 0;
    }
    const std::optional<gate_options>& gates() const { return gates_; }
    const gate_decode_stats& gate_stats() const { return gate_stats_; }
    // Call after writing parameters() directly.
    void weights_changed() { packed_ = false; }

    // ---- structure -----------------------------------------------------------------------------------------
    // Freezes `plan` for the next generations (it must fit the cache's capacity). Clears the cache.
    void set_structure(const loop_plan& plan) {
        frozen_structure s = frozen_structure::of(plan, NL, NH, budget_k_max());
        cache_.bind(s);
        structure_ = std::move(s);
        gate_slot_.clear();
        packed_ = false;
        graph_.reset();
        batch_ = 0;
    }
    const frozen_structure& structure() const { return structure_; }
    const kv_cache<T, Backend>& cache() const { return cache_; }
    // Decode steps recorded once and replayed as a graph on a GPU backend (on by default; off: every step eager).
    void use_step_graph(bool on) { graph_.set_enabled(on); }
    // Whether the decode graph tunes the cuBLASLt products before it records (tune_products; off by default: with
    // it on, decode steps were no faster at any batch measured and up to 2.4% slower, docs/BENCHMARKS.md).
    void use_product_tuning(bool on) { graph_.set_product_tuning(on); }
    bool step_graph_captured() const { return graph_.captured(); }

    // Bytes of the weights, of the cache arena, and of everything this object holds on the backend.
    std::int64_t weight_bytes() const { return std::int64_t(params_.size() * sizeof(T)); }
    std::int64_t cache_bytes() const { return cache_.bytes(); }
    std::int64_t memory_bytes() const { return weight_bytes() + cache_bytes() + workspace_bytes(); }
    std::int64_t workspace_bytes() const {
        std::int64_t b = 0;
        auto add = [&](const auto& x) { b += std::int64_t(x.size() * sizeof(*x.data())); };
        add(h_), add(a_), add(rstd_), add(qkv_), add(o_), add(probs_), add(gate_), add(up_);
        add(act_), add(last_), add(logits_), add(tokens_), add(start_), add(rope_cos_), add(rope_sin_);
        add(decode_ws_), add(gate_run_), add(gate_s_), add(gate_g_), add(gate_dec_g_), add(len_);
        for (const auto& p : packs_) add(p.w_qkv), add(p.w_o);
        return b;
    }

    int max_batch() const { return max_batch_; }
    int max_context() const { return max_context_; }
    int batch() const { return batch_; }
    // Tokens held in the cache for sequence b (its prompt and the tokens decoded so far).
    int length(int b) const { return positions_.at(std::size_t(b)); }

    // ---- prefill and decode --------------------------------------------------------------------------------

    // Clears the cache and runs the prompts (token ids, each non-empty, of any lengths up to max_context)
    // through every pass. Returns the logits of each prompt's last token, (B, V) on the host. With all_logits,
    // all_prefill_logits() then holds every position's logits, prompt after prompt ((Σ T_b, V)).
    std::span<const T> prefill(const std::vector<std::vector<std::int32_t>>& prompts, bool all_logits = false) {
        const int B = int(prompts.size());
        require(B > 0 && B <= max_batch_, "inference: expected 1 to {} prompts (the cache's batch), found {}",
                max_batch_, B);
        for (int b = 0; b < B; ++b) {
            const auto& p = prompts[std::size_t(b)];
            require(!p.empty(), "inference: prompt {} is empty; expected at least one token", b);
            require(int(p.size()) <= max_context_,
                    "inference: prompt {} has {} tokens, beyond the context of {} the cache was built for", b,
                    p.size(), max_context_);
            check_tokens(p, b);
        }
        prepare();
        if (B != batch_) graph_.reset();  // a recorded decode step is for one batch size
        batch_ = B;
        positions_.assign(std::size_t(B), 0);
        // Chunks of whole prompts (at least one) that fit the workspace, each padded on the right to its longest.
        struct chunk {
            int b0, b1, tokens;
        };
        std::vector<chunk> chunks;
        std::int64_t most = 0;
        for (int b0 = 0; b0 < B;) {
            int b1 = b0, T_ = 0;
            while (b1 < B) {
                const int t = std::max(T_, int(prompts[std::size_t(b1)].size()));
                if (b1 > b0 && std::int64_t(b1 - b0 + 1) * t > prefill_tokens_) break;
                T_ = t;
                ++b1;
            }
            chunks.push_back({b0, b1, T_});
            most = std::max(most, std::int64_t(b1 - b0) * T_);
            b0 = b1;
        }
        grow_workspace(most, B);
        gate_stats_ = {};
        if (!gate_run_.empty()) fill_zero(Backend{}, gate_run_.data(), std::int64_t(gate_run_.size()));
        all_logits_.clear();
        for (const auto& c : chunks) run_prefill_chunk(prompts, c.b0, c.b1, c.tokens, all_logits);
        for (int b = 0; b < B; ++b) positions_[std::size_t(b)] = int(prompts[std::size_t(b)].size());
        return host_logits(B);
    }

    // One token per sequence of the last prefill, appended at each sequence's next position; returns the
    // logits of the new tokens, (B, V) on the host.
    std::span<const T> decode(std::span<const std::int32_t> tokens) {
        require(batch_ > 0, "inference: decode() needs a prefill() first");
        require(int(tokens.size()) == batch_, "inference: expected one token for each of the {} sequences, found {}",
                batch_, tokens.size());
        check_tokens(tokens, -1);
        for (int b = 0; b < batch_; ++b)
            require(positions_[std::size_t(b)] < max_context_,
                    "inference: sequence {} would reach position {}, beyond the context of {} the cache was built for",
                    b, positions_[std::size_t(b)] + 1, max_context_);
        const Backend be{};
        grow_workspace(batch_, batch_);
        copy_from_host(be, tokens_.data(), tokens.data(), batch_);
        copy_from_host(be, start_.data(), positions_.data(), batch_);
        graph_.run([this] { decode_step(); });
        count_gate_reads();
        for (auto& p : positions_) ++p;
        return host_logits(batch_);
    }

    // Every position's logits of the last prefill(prompts, true), prompt after prompt: (Σ T_b, V), host memory.
    const std::vector<T>& all_prefill_logits() const { return all_logits_; }

    // Prefill, then max_new_tokens sampling + decode steps per sequence (a sequence stops after its stop token;
    // the batch stops when all have). on_token(b, token) is called for every token as it is chosen (streaming).
    generation generate(const std::vector<std::vector<std::int32_t>>& prompts, const generation_options& o,
                        const std::function<void(int, std::int32_t)>& on_token = {}) {
        o.sampling.validate();
        require(o.max_new_tokens >= 0, "inference: expected max_new_tokens >= 0, found {}", o.max_new_tokens);
        require(o.stop_token >= -1 && o.stop_token < V, "inference: stop token {} is outside [0, {}) (or -1: none)",
                o.stop_token, V);
        for (std::size_t b = 0; b < prompts.size(); ++b)
            require(std::int64_t(prompts[b].size()) + o.max_new_tokens - 1 <= max_context_,
                    "inference: prompt {} ({} tokens) plus {} new tokens is beyond the context of {} the cache was "
                    "built for",
                    b, prompts[b].size(), o.max_new_tokens, max_context_);
        const int B = int(prompts.size());
        generation g;
        g.tokens.resize(prompts.size());
        sampler s(o.sampling);
        using clock = std::chrono::steady_clock;
        auto t0 = clock::now();
        std::span<const T> logits = prefill(prompts);
        g.prefill_seconds = std::chrono::duration<double>(clock::now() - t0).count();
        for (const auto& p : prompts) g.prefill_tokens += std::int64_t(p.size());
        std::vector<char> done(std::size_t(B), 0);
        std::vector<std::int32_t> next(std::size_t(B), 0);
        t0 = clock::now();
        for (int i = 0; i < o.max_new_tokens; ++i) {
            int live = 0;
            for (int b = 0; b < B; ++b) {
                if (done[std::size_t(b)]) continue;
                const std::int32_t tok = s.sample(logits.subspan(std::size_t(b) * V, V));
                next[std::size_t(b)] = tok;
                g.tokens[std::size_t(b)].push_back(tok);
                if (on_token) on_token(b, tok);
                if (tok == o.stop_token) done[std::size_t(b)] = 1;
                else ++live;
            }
            if (live == 0 || i + 1 == o.max_new_tokens) break;
            logits = decode(next);
            g.decode_tokens += B;
        }
        g.decode_seconds = std::chrono::duration<double>(clock::now() - t0).count();
        return g;
    }

private:
    // The packed projection weights of one attention pass: pointers into the parameters when the pass runs all
    // heads (W_Q, W_K, W_V are consecutive in the table, so all heads' rows are already packed), else copies.
    struct pass_weights {
        const T* norm = nullptr;   // (C)
        const T* w_qkv = nullptr;  // (3·n·HD, C)
        const T* w_o = nullptr;    // (C, n·HD)
    };
    struct pack_buffers {
        buffer<T> w_qkv, w_o;  // packed weights of a head subset
        buffer<T> gains;       // (n) the pass's head gains, when not all 1
    };

    static int budget_k_max() { return std::max(Cfg.loops.k_max, 0); }

    static std::int64_t checked_capacity(const loop_plan& capacity, int max_batch, int max_context) {
        require(max_batch > 0, "inference: expected a positive batch size, found {}", max_batch);
        require(max_context > 0 && max_context <= shape.max_seq,
                "inference: context {} is outside [1, {}], the preset's maximum sequence", max_context, shape.max_seq);
        validate_plan(capacity, NL, NH, budget_k_max());
        return cache_heads_per_token(capacity, NH);
    }

    template <class Tokens>
    void check_tokens(const Tokens& tokens, int prompt) const {
        for (std::size_t i = 0; i < tokens.size(); ++i) {
            if (tokens[i] >= 0 && tokens[i] < V) continue;
            if (prompt >= 0)
                fail("inference: token {} at position {} of prompt {} is outside the vocabulary [0, {})", tokens[i],
                     i, prompt, V);
            fail("inference: token {} for sequence {} is outside the vocabulary [0, {})", tokens[i], i, V);
        }
    }

    const param_entry& entry(std::string_view name) const { return table_.at(name); }
    const T* weight(std::string_view name) const { return params_.data() + entry(name).offset; }
    static std::string layer_name(int l, std::string_view what) {
        return "model.layers." + std::to_string(l) + "." + std::string(what);
    }

    // Packs the projection weights of every pass whose heads are a subset (once per structure and weights).
    void prepare() {
        if (packed_) return;
        const Backend be{};
        packs_.resize(structure_.passes.size());
        weights_.assign(structure_.passes.size(), {});
        for (std::size_t i = 0; i < structure_.passes.size(); ++i) {
            const frozen_pass& p = structure_.passes[i];
            const int l = p.layer;
            const auto &q = entry(layer_name(l, "self_attn.q_proj.weight")),
                       &k = entry(layer_name(l, "self_attn.k_proj.weight")),
                       &v = entry(layer_name(l, "self_attn.v_proj.weight"));
            auto& w = weights_[i];
            auto& pk = packs_[i];
            if (!p.unit_gains()) {
                const std::vector<T> g(p.gains.begin(), p.gains.end());
                pk.gains.resize(g.size());
                copy_from_host(be, pk.gains.data(), g.data(), std::int64_t(g.size()));
            }
            w.norm = weight(layer_name(l, "input_layernorm.weight"));
            const T* wo = weight(layer_name(l, "self_attn.o_proj.weight"));
            const bool consecutive =
                k.offset == q.offset + std::int64_t(C) * C && v.offset == k.offset + std::int64_t(C) * C;
            if (p.n() == NH && consecutive) {
                w.w_qkv = params_.data() + q.offset;
                w.w_o = wo;
                continue;
            }
            const int nhd = p.n() * HD;
            pk.w_qkv.resize(3 * std::size_t(nhd) * C);
            pk.w_o.resize(std::size_t(C) * nhd);
            const std::span<const int> heads(p.heads);
            const std::int64_t block = std::int64_t(nhd) * C;
            gather_head_rows(be, pk.w_qkv.data(), params_.data() + q.offset, heads, HD, C);
            gather_head_rows(be, pk.w_qkv.data() + block, params_.data() + k.offset, heads, HD, C);
            gather_head_rows(be, pk.w_qkv.data() + 2 * block, params_.data() + v.offset, heads, HD, C);
            gather_head_cols(be, pk.w_o.data(), wo, heads, HD, C, NH);
            w.w_qkv = pk.w_qkv.data();
            w.w_o = pk.w_o.data();
        }
        for (int l = 0; l < NL; ++l)
            ffn_[std::size_t(l)] = {weight(layer_name(l, "post_attention_layernorm.weight")),
                                    weight(layer_name(l, "mlp.gate_proj.weight")),
                                    weight(layer_name(l, "mlp.up_proj.weight")),
                                    weight(layer_name(l, "mlp.down_proj.weight"))};
        embed_ = weight("model.embed_tokens.weight");
        final_norm_ = weight("model.norm.weight");
        lm_head_ = weight("lm_head.weight");
        // The gated passes: the first pass (all heads) of each block application of a gated layer.
        gate_slot_.assign(structure_.passes.size(), -1);
        gate_weights_.clear();
        if (gates_ && gates_->n_dense < NH) {
            const gated_variant v(*gates_);
            const int i0 = gates_->n_dense;
            for (std::size_t i = 0; i < structure_.passes.size(); ++i) {
                const frozen_pass& p = structure_.passes[i];
                if (p.step != 0 || !v.gated(p.layer)) continue;
                gate_slot_[i] = int(gate_weights_.size());
                gate_weights_.push_back({weight(gated_variant::weight_name(p.layer)) + std::int64_t(i0) * 2 * HD,
                                         weight(gated_variant::bias_name(p.layer)) + i0});
            }
        }
        const std::int64_t per_slot = std::int64_t(max_batch_) * NH, slots = std::int64_t(gate_weights_.size());
        gate_run_.resize(std::size_t(slots * per_slot));
        gate_dec_g_.resize(std::size_t(slots * per_slot));
        if (slots > 0) fill_zero(be, gate_run_.data(), slots * per_slot);
        packed_ = true;
        graph_.reset();
    }

    // Workspace for chunks of up to N tokens and B sequences (only grows; a recorded decode step is forgotten
    // when a buffer it uses moves).
    void grow_workspace(std::int64_t N, int B) {
        auto grow = [&](auto& b, std::int64_t n) {
            if (std::int64_t(b.size()) >= n) return;
            b.resize(std::size_t(n));
            graph_.reset();
        };
        grow(h_, N * C);
        grow(a_, N * C);
        grow(rstd_, N);
        grow(qkv_, N * 3 * C);
        grow(o_, N * C);
        grow(gate_, N * F);
        grow(up_, N * F);
        grow(act_, N * F);
        grow(last_, std::int64_t(B) * C);
        grow(logits_, std::int64_t(B) * V);
        grow(tokens_, std::max<std::int64_t>(N, B));
        if (std::int64_t(start_.size()) < B) {
            grow(start_, B);
            fill_zero(Backend{}, start_.data(), B);
        }
        grow(decode_ws_, decode_attention_workspace<T>(Backend{}, max_batch_, NH, HD, max_context_));
        if (!gate_weights_.empty()) {
            grow(gate_s_, std::max(N, std::int64_t(max_batch_)) * NH);  // also a decode step's scores
            grow(gate_g_, N * NH);
            grow(len_, max_batch_);
        }
    }

    // Prompts [b0, b1), padded to T_ tokens, through every pass; their cache slots filled from position 0.
    void run_prefill_chunk(const std::vector<std::vector<std::int32_t>>& prompts, int b0, int b1, int T_,
                           bool all_logits) {
        const Backend be{};
        const int B = b1 - b0;
        const std::int64_t N = std::int64_t(B) * T_;
        std::vector<std::int32_t> host(std::size_t(N), 0);
        for (int b = b0; b < b1; ++b)
            std::copy(prompts[std::size_t(b)].begin(), prompts[std::size_t(b)].end(),
                      host.begin() + std::int64_t(b - b0) * T_);
        copy_from_host(be, tokens_.data(), host.data(), N);
        fill_zero(be, start_.data(), B);
        if (!gate_weights_.empty()) {
            std::vector<std::int32_t> lengths;
            for (int b = b0; b < b1; ++b) lengths.push_back(std::int32_t(prompts[std::size_t(b)].size()));
            copy_from_host(be, len_.data(), lengths.data(), B);
        }
        embedding_forward(be, h_.data(), tokens_.data(), embed_, int(N), C);
        for (const frozen_stage& st : structure_.stages) {
            if (st.kind == frozen_stage::ffn) {
                ffn_step(st.layer, N);
                continue;
            }
            const frozen_pass& p = structure_.passes[std::size_t(st.pass)];
            const pass_weights& w = weights_[std::size_t(st.pass)];
            const int n = p.n(), nhd = n * HD;
            rmsnorm_forward(be, a_.data(), rstd_.data(), h_.data(), w.norm, int(N), C, config.norm_eps);
            matmul_forward(be, qkv_.data(), a_.data(), w.w_qkv, int(N), C, 3 * nhd);
            rope_forward(be, qkv_.data(), rope_cos_.data(), rope_sin_.data(), B, T_, 2 * n, HD, 3 * std::int64_t(nhd));
            kv_cache_write(be, cache_.keys(p, b0), cache_.values(p, b0), qkv_.data(), start_.data(), B, T_, n, HD,
                           max_context_);
            detail::grow(probs_, attention_saved_size<T>(be, B, T_, n, HD));
            attention_forward(be, o_.data(), probs_.data(), static_cast<double*>(nullptr), qkv_.data(), B, T_, n, HD);
            if (!p.unit_gains())
                head_gain_forward(be, o_.data(), packs_[std::size_t(st.pass)].gains.data(), N, n, HD, false);
            if (const int gs = gate_slot_[std::size_t(st.pass)]; gs >= 0) {  // o ← g·o per position and head
                gate_forward_at(be, gate_s_.data(), gate_g_.data(), gate_run(gs) + std::int64_t(b0) * NH, qkv_.data(),
                                gate_weights_[std::size_t(gs)].w, gate_weights_[std::size_t(gs)].c, start_.data(),
                                len_.data(), B, T_, NH, HD, gates_->n_dense, gates_->threshold, true);
                head_gain_forward(be, o_.data(), static_cast<const T*>(gate_g_.data()), N, NH, HD, true);
            }
            matmul_forward(be, h_.data(), o_.data(), w.w_o, int(N), nhd, C, true);  // H' = H + y
        }
        // The last position of each prompt, or all of them.
        if (all_logits) {
            rmsnorm_forward(be, a_.data(), rstd_.data(), h_.data(), final_norm_, int(N), C, config.norm_eps);
            buffer<T> full(std::size_t(N) * V);
            matmul_forward(be, full.data(), a_.data(), lm_head_, int(N), C, V);
            std::vector<T> host_full(std::size_t(N) * V);
            copy_to_host(be, host_full.data(), full.data(), N * V);
            for (int b = b0; b < b1; ++b) {
                const auto first = host_full.begin() + std::int64_t(b - b0) * T_ * V;
                all_logits_.insert(all_logits_.end(), first, first + std::int64_t(prompts[std::size_t(b)].size()) * V);
            }
        }
        for (int b = b0; b < b1; ++b)
            copy(be, last_.data() + std::int64_t(b - b0) * C,
                 h_.data() + (std::int64_t(b - b0) * T_ + std::int64_t(prompts[std::size_t(b)].size()) - 1) * C, C);
        normed_matmul_forward(be, logits_.data() + std::int64_t(b0) * V, a_.data(), rstd_.data(), last_.data(),
                              final_norm_, lm_head_, B, C, V, config.norm_eps, false);
    }

    // h += FFN(h) for N tokens.
    void ffn_step(int l, std::int64_t N) {
        const Backend be{};
        const ffn_weights<T>& w = ffn_[std::size_t(l)];
        normed_swiglu_forward(be, act_.data(), a_.data(), rstd_.data(), gate_.data(), up_.data(), h_.data(), w.norm,
                              w.w1, w.w3, int(N), C, F, config.norm_eps);
        normed_matmul_forward(be, h_.data(), a_.data(), rstd_.data(), act_.data(), static_cast<const T*>(nullptr), w.w2,
                              int(N), F, C, 0.0, true);
    }

    // One token per sequence (tokens_, at positions start_) through every pass; logits_ (B, V). The same ops
    // on the same buffers at every call with the same batch: what a step graph records.
    void decode_step() {
        const Backend be{};
        const int B = batch_;
        embedding_forward(be, h_.data(), tokens_.data(), embed_, B, C);
        const auto& stages = structure_.stages;
        for (std::size_t si = 0; si < stages.size(); ++si) {
            const frozen_stage& st = stages[si];
            if (st.kind == frozen_stage::ffn) {
                ffn_step(st.layer, B);
                continue;
            }
            const frozen_pass& p = structure_.passes[std::size_t(st.pass)];
            const pass_weights& w = weights_[std::size_t(st.pass)];
            const int n = p.n(), nhd = n * HD;
            if (gate_slot_[std::size_t(st.pass)] < 0) {
                // This pass and the ungated passes right after it over the same heads of the same block application
                // (a looped layer's steps 1..K) as one run: a GPU runs it as one kernel for a few sequences.
                slots_.clear();
                for (std::size_t sj = si;; ++sj) {
                    const int pj = stages[sj].pass;
                    const frozen_pass& q = structure_.passes[std::size_t(pj)];
                    slots_.push_back({cache_.keys(q), cache_.values(q),
                                      q.unit_gains() ? nullptr : packs_[std::size_t(pj)].gains.data()});
                    si = sj;
                    if (sj + 1 == stages.size() || stages[sj + 1].kind != frozen_stage::attention) break;
                    const frozen_pass& r = structure_.passes[std::size_t(stages[sj + 1].pass)];
                    if (r.layer != p.layer || r.repeat != p.repeat || r.heads != p.heads ||
                        gate_slot_[std::size_t(stages[sj + 1].pass)] >= 0)
                        break;
                }
                decode_passes(be, h_.data(), qkv_.data(), o_.data(), a_.data(), rstd_.data(),
                              std::span<const decode_slot<T>>(slots_), w.norm, w.w_qkv, w.w_o, rope_cos_.data(),
                              rope_sin_.data(), start_.data(), B, C, n, HD, max_context_, config.norm_eps,
                              decode_ws_.data());
                continue;
            }
            // A gated pass (learned head gates, GATES.md Sec. 3.1): the gate scores each head between q and attention.
            normed_qkv_write_at(be, qkv_.data(), cache_.keys(p), cache_.values(p), a_.data(), rstd_.data(), h_.data(),
                                w.norm, w.w_qkv, rope_cos_.data(), rope_sin_.data(), start_.data(), B, C, n, HD,
                                max_context_, config.norm_eps);
            const int gs = gate_slot_[std::size_t(st.pass)];  // g per (sequence, head); closed heads skip their read
            const std::int64_t at = std::int64_t(gs) * max_batch_ * NH;
            gate_forward_at(be, gate_s_.data(), gate_dec_g_.data() + at, gate_run(gs), qkv_.data(),
                            gate_weights_[std::size_t(gs)].w, gate_weights_[std::size_t(gs)].c, start_.data(),
                            static_cast<const std::int32_t*>(nullptr), B, 1, NH, HD, gates_->n_dense,
                            gates_->threshold, true);
            const T* gain = gate_dec_g_.data() + at;
            decode_attention(be, o_.data(), qkv_.data(), cache_.keys(p), cache_.values(p), start_.data(), B, n, HD,
                             max_context_, decode_ws_.data(), gain);
            if (!p.unit_gains())
                head_gain_forward(be, o_.data(), packs_[std::size_t(st.pass)].gains.data(), std::int64_t(B), n, HD,
                                  false);
            normed_matmul_forward(be, h_.data(), a_.data(), rstd_.data(), o_.data(), static_cast<const T*>(nullptr),
                                  w.w_o, B, nhd, C, 0.0, true);
        }
        normed_matmul_forward(be, logits_.data(), a_.data(), rstd_.data(), h_.data(), final_norm_, lm_head_, B, C, V,
                              config.norm_eps, false);
    }

    accum_t<T>* gate_run(int slot) { return gate_run_.data() + std::int64_t(slot) * max_batch_ * NH; }

    // Counts the gated heads' reads of the last decode step, and those a closed head skipped.
    void count_gate_reads() {
        if (gate_weights_.empty()) return;
        std::vector<T>& g = gate_host_;
        g.resize(gate_dec_g_.size());
        copy_to_host(Backend{}, g.data(), gate_dec_g_.data(), std::int64_t(g.size()));
        for (std::size_t gs = 0; gs < gate_weights_.size(); ++gs)
            for (int b = 0; b < batch_; ++b)
                for (int i = gates_->n_dense; i < NH; ++i) {
                    const std::int64_t len = positions_[std::size_t(b)] + 1;
                    const std::size_t at = (gs * std::size_t(max_batch_) + std::size_t(b)) * NH + std::size_t(i);
                    const bool closed = g[at] == T(0);
                    ++gate_stats_.head_reads;
                    gate_stats_.kv_vectors += len;
                    gate_stats_.head_reads_skipped += closed ? 1 : 0;
                    gate_stats_.kv_vectors_skipped += closed ? len : 0;
                }
    }

    std::span<const T> host_logits(int B) {
        return detail::host_view(Backend{}, static_cast<const T*>(logits_.data()), std::size_t(B) * V, logits_host_);
    }

    int max_batch_, max_context_;
    std::int64_t prefill_tokens_;
    sgt::parameter_table table_;
    buffer<T> params_;                        // (total_params) in table_ order
    buffer<accum_t<T>> rope_cos_, rope_sin_;  // (max_context, HD/2)
    kv_cache<T, Backend> cache_;
    frozen_structure structure_;

    bool packed_ = false;
    std::vector<pass_weights> weights_;  // per pass of structure_
    std::vector<decode_slot<T>> slots_;  // a decode step's run of passes (decode_step)
    std::vector<pack_buffers> packs_;    // per pass: packed weights of a head subset, gains
    std::array<ffn_weights<T>, NL> ffn_{};
    const T *embed_ = nullptr, *final_norm_ = nullptr, *lm_head_ = nullptr;

    int batch_ = 0;                    // sequences of the current generation
    std::vector<std::int32_t> positions_;  // (B) tokens in the cache per sequence (host)
    buffer<std::int32_t> tokens_;      // (N) prefill chunk tokens, or (B) decode tokens
    buffer<std::int32_t> start_;       // (B) position of each sequence's first token in the call
    buffer<T> h_, a_, qkv_, o_;        // (N, C) residual stream, normed input, (N, 3·n·HD), (N, n·HD)
    buffer<T> rstd_;                   // (N)
    buffer<T> gate_, up_, act_;        // (N, F)
    buffer<T> probs_;                  // prefill attention's saved matrices (attention_saved_size)
    buffer<accum_t<T>> decode_ws_;     // decode attention's scratch (decode_attention_workspace)
    buffer<T> last_;                   // (B, C) the last position's hidden state of each prompt
    buffer<T> logits_;                 // (B, V)
    detail::host_copy_t<Backend, T> logits_host_;  // (B, V) host copy on a device backend (page-locked on a GPU)
    std::vector<T> all_logits_;        // (Σ T_b, V) of prefill(…, true)

    // Learned head gates (set_gates): per pass its gated slot (-1: not gated), per slot the gated heads' rows of
    // W_g (ng, 2·HD) and c (ng).
    struct gate_weights {
        const T* w = nullptr;
        const T* c = nullptr;
    };
    std::optional<gate_options> gates_;
    std::vector<int> gate_slot_;
    std::vector<gate_weights> gate_weights_;
    buffer<accum_t<T>> gate_run_;      // (slots, max_batch, NH) running Σ w_k·k of each sequence and head
    buffer<T> gate_s_, gate_g_;        // (N, NH) a prefill chunk's scores (also a decode step's) and gains
    buffer<T> gate_dec_g_;             // (slots, max_batch, NH) a decode step's gains
    buffer<std::int32_t> len_;         // (B) a prefill chunk's prompt lengths
    std::vector<T> gate_host_;         // host copy of gate_dec_g_
    gate_decode_stats gate_stats_;
    step_graph<Backend> graph_;
};

}  // namespace sgt
