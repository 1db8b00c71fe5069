// sgt/model.hpp: the LLaMA-style decoder with head-sparse attention loops (spec Sec. 1, Eq. 1-3 and 6).
//
//     h = E[x];  for each layer l, block_repeat times:
//         H = first attention pass over all heads (attention.hpp), entropies taken here (Eq. 4)
//         H = loop step over S_l (Eq. 6), K_l times; the first one over all heads with the fade gain if fading
//         h = H + FFN(H)                                                                (ffn.hpp)
//     logits = RMSNorm_final(h) W_lmᵀ;  loss = mean cross-entropy of the counted targets
//
// The loop structure is a run-time loop_plan (loop_plan.hpp); Vanilla, Block Loop, Attention Loop and SGT are
// all this one type. What each pass computes (its heads, gains, and any transform of the head outputs) is the
// Variant policy's decision (variant.hpp; paper_variant is the paper's model). Parameters live in one
// contiguous buffer, reached by name through the parameter table (params.hpp), named as Hugging Face LLaMA.
// Backend-generic: the heavy lifting is leaf ops called on the Backend tag; activation records only grow,
// so a steady-state training step allocates nothing. With sigma_reparam_options{.enabled = true} every linear layer
// runs through σReparam (sigma_reparam.hpp): its γ are parameters, its u, v the model's state_table().
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <deque>
#include <limits>
#include <optional>
#include <span>
#include <type_traits>
#include <string>
#include <string_view>
#include <vector>

#include "sgt/attention.hpp"
#include "sgt/backend/common.hpp"
#include "sgt/backend/cpu.hpp"
#include "sgt/config.hpp"
#include "sgt/core/error.hpp"
#include "sgt/core/rng.hpp"
#include "sgt/data/batch.hpp"
#include "sgt/entropy.hpp"
#include "sgt/ffn.hpp"
#include "sgt/flops.hpp"
#include "sgt/loop_plan.hpp"
#include "sgt/loop_subspace.hpp"
#include "sgt/params.hpp"
#include "sgt/sigma_reparam.hpp"
#include "sgt/variant.hpp"

namespace sgt {

template <class T, model_config Cfg, class Backend = cpu, class Variant = paper_variant>
class model {
public:
    static_assert(check_backend<Backend>());  // names the op a backend lacks (backend/backend.hpp)
    static constexpr model_config config = validated_config<Cfg>::value;
    static constexpr model_shape shape = Cfg.shape;
    static constexpr loop_budget budget = Cfg.loops;
    static constexpr int NL = shape.layers, NH = shape.heads, HD = shape.head_dim, C = shape.width(),
                         F = shape.d_ff, V = shape.vocab;
    template <class U>
    using buffer = typename Backend::template buffer<U>;
    using value_type = T;
    using backend_type = Backend;
    using variant_type = Variant;

    // The parameter table of this model type: the decoder's tensors, then the variant's own, then σReparam's γ.
    static sgt::parameter_table make_parameter_table(const Variant& v = Variant{},
                                                     const sigma_reparam_options& sigma = {}) {
        auto t = sgt::parameter_table::llama(shape);
        v.add_parameters(config, t);
        if (sigma.enabled) add_sigma_reparam_parameters(shape, t);
        return t;
    }

    // Activation capacity: batches of at most max_batch sequences of at most max_seq tokens. `sigma`: σReparam on
    // every linear layer (sigma_reparam.hpp), fixed for the model's life (its γ are tensors of the table).
    model(int max_batch, int max_seq, std::uint64_t seed = 0, Variant variant = Variant{},
          const sigma_reparam_options& sigma = {})
        : max_batch_(max_batch), max_seq_(max_seq), variant_(std::move(variant)),
          table_(make_parameter_table(variant_, sigma)), dropout_rng_(seed ^ 0xD50Full) {
        require(max_batch > 0, "model: expected a positive batch size, found {}", max_batch);
        require(max_seq > 1 && max_seq <= shape.max_seq,
                "model: sequence length {} is outside [2, {}], the preset's maximum", max_seq, shape.max_seq);
        require(std::int64_t(max_batch) * max_seq <= std::numeric_limits<int>::max(),
                "model: a batch of {} x {} = {} tokens exceeds the {} the ops index", max_batch, max_seq,
                std::int64_t(max_batch) * max_seq, std::numeric_limits<int>::max());
        for (int l = 0; l < NL; ++l) layers_.push_back(table_.layer(l));
        embed_ = &table_.at("model.embed_tokens.weight");
        final_norm_ = &table_.at("model.norm.weight");
        lm_head_ = &table_.at("lm_head.weight");
        params_.resize(std::size_t(table_.numel()));
        grads_.resize(params_.size());
        zero_grad();
        rope_cos_.resize(std::size_t(max_seq) * HD / 2);
        rope_sin_.resize(rope_cos_.size());
        rope_tables(Backend{}, rope_cos_.data(), rope_sin_.data(), max_seq, HD, config.rope_base);
        if (sigma.enabled) sigma_.emplace(table_, shape, seed, sigma);
        rng r(seed);
        init_weights(r);
    }

    // Every tensor as its table entry says: the decoder's matrices N(0, 0.02), RMSNorm weights 1 (spec Sec. 1).
    // Drawn on the host, in table order, so every backend starts from the same values. With σReparam, then its
    // u, v afresh and γ = σ(W₀).
    void init_weights(rng& r) {
        std::vector<T> host(params_.size());
        for (const auto& e : table_) {
            T* p = host.data() + e.offset;
            for (std::int64_t i = 0; i < e.numel(); ++i)
                p[i] = e.init.std > 0.0 ? T(e.init.value + e.init.std * r.normal()) : T(e.init.value);
        }
        copy_from_host(Backend{}, params_.data(), host.data(), std::int64_t(host.size()));
        if (sigma_) sigma_->reset(Backend{}, params_.data());
    }

    // The parameter and gradient buffers, in the backend's memory (device memory on a GPU backend: read and
    // write them on the host through the *_to_host / parameters_from_host copies below).
    std::span<T> parameters() { return params_; }
    std::span<const T> parameters() const { return params_; }
    std::span<T> gradients() { return grads_; }
    std::span<const T> gradients() const { return grads_; }
    const sgt::parameter_table& parameter_table() const { return table_; }
    const param_entry& entry(std::string_view name) const { return table_.at(name); }
    Variant& variant() { return variant_; }
    const Variant& variant() const { return variant_; }
    std::span<T> parameter(std::string_view name) {
        const auto& e = entry(name);
        return {params_.data() + e.offset, std::size_t(e.numel())};
    }
    std::span<T> gradient(std::string_view name) {
        const auto& e = entry(name);
        return {grads_.data() + e.offset, std::size_t(e.numel())};
    }
    std::vector<T> parameters_to_host() const { return detail::to_host(Backend{}, parameters()); }
    std::vector<T> gradients_to_host() const { return detail::to_host(Backend{}, gradients()); }
    void parameters_from_host(std::span<const T> host) {
        require(host.size() == params_.size(), "model: expected {} parameters, found {}", params_.size(), host.size());
        copy_from_host(Backend{}, params_.data(), host.data(), std::int64_t(host.size()));
    }
    void zero_grad() {
        fill_zero(Backend{}, grads_.data(), std::int64_t(grads_.size()));
        // What a training forward added into the LM head's gradient is gone with the rest (backward() redoes it);
        // under σReparam it was added into ∂L/∂Ŵ, which is not in grads_.
        if (head_gradient_scale_ && sigma_) fill_zero(Backend{}, grad(*lm_head_), lm_head_->numel());
        head_gradient_scale_.reset();
        if (sigma_) sigma_->new_step();  // the next training forward takes σReparam's power-iteration step
    }

    // σReparam (sigma_reparam.hpp): null when the model was built without it.
    const sigma_reparam<T, Backend>* sigma_reparam_state() const { return sigma_ ? &*sigma_ : nullptr; }
    // State that is not trained but saved in checkpoints beside the parameters: σReparam's u and v (an empty table
    // without it), in one buffer of state_table() order.
    const sgt::parameter_table& state_table() const {
        static const sgt::parameter_table none;
        return sigma_ ? sigma_->state_table() : none;
    }
    std::vector<T> state_to_host() const { return sigma_ ? sigma_->state_to_host() : std::vector<T>{}; }
    void state_from_host(std::span<const T> host) {
        if (sigma_)
            sigma_->state_from_host(host);
        else
            require(host.empty(), "model: expected no state values (the model has no σReparam), found {}", host.size());
    }

    // Dropout on the embeddings and on every residual branch, applied while training() is on.
    void set_dropout(double p) {
        require(p >= 0.0 && p < 1.0, "model: expected dropout in [0, 1), found {}", p);
        dropout_ = p;
    }
    double dropout() const { return dropout_; }
    void set_training(bool on) { training_ = on; }
    bool training() const { return training_; }
    rng& dropout_rng() { return dropout_rng_; }

    int max_batch() const { return max_batch_; }
    int max_seq() const { return max_seq_; }

    // The largest structure of the loop budget: the last L layers loop K_max times over all heads. Every
    // plan a growth operator of this budget produces has no more passes, each over no more heads.
    static loop_plan budget_plan() { return budget_plan_over(NH); }

    // The largest structure whose loop steps run in the subspace (set_loop_subspace): the last L layers loop K_max
    // times over h heads (at most a third of the width), as SGT's growth makes them; none when no run would apply.
    std::optional<loop_plan> subspace_budget_plan() const {
        const int h = std::min(budget.h, C / (3 * HD));
        if (!loop_subspace_ || h < 1 || !loop_subspace_applies(budget.k_max, h, HD, C)) return std::nullopt;
        return budget_plan_over(h);
    }

    // Sizes every activation and scratch buffer once, for batches of max_batch x max_seq under `plan` (and any
    // plan with no more passes, each over no more heads), by running it on a dummy batch; afterwards a training
    // step allocates nothing, growth events included (where `plan` loops K ≥ 2 times, also the subspace runs of
    // subspace_budget_plan, over up to the budget's h heads). The weights, gradients (left zero) and dropout RNG
    // are unchanged. Call it after set_dropout and set_loop_subspace. The cost is memory: each reserved pass holds
    // full-width buffers.
    void reserve(const loop_plan& plan) {
        const std::size_t n = std::size_t(max_batch_) * max_seq_;
        const batch dummy{max_batch_, max_seq_, std::vector<std::int32_t>(n, 0), std::vector<std::int32_t>(n, 0)};
        const auto rng_state = dropout_rng_.state();
        const auto state = state_to_host();
        forward(dummy, plan);
        backward();
        // The runs' buffers (a plan over all heads has none), when `plan` has loops that runs could come from.
        const bool loops = std::any_of(plan.layers.begin(), plan.layers.end(), [](const layer_loop& l) { return l.k >= 2; });
        if (const auto sub = subspace_budget_plan(); sub && loops) {
            forward(dummy, *sub);
            backward();
        }
        sum_squares(Backend{}, grads_.data(), std::int64_t(grads_.size()));  // the clipping reduction's scratch
        zero_grad();
        dropout_rng_.set_state(rng_state);
        state_from_host(state);
    }

    // Runs the model on a batch under a loop plan; keeps what backward() needs. Returns the mean loss over
    // the counted targets (0 when there are none). The entropies of this pass are in entropies().
    // With loss_scale, the backward(loss_scale) that follows is known now (a training step): each chunk of logits
    // (set_logits_chunk) gets its cross-entropy's gradient in the same pass over it as its loss, and the LM head's
    // backward follows at once, its gradient added into gradients() by the forward (a zero_grad() before the
    // backward discards it, and the backward then computes it again). Without one, the backward computes the
    // chunks' logits again.
    double forward(const batch& x, const loop_plan& plan, std::optional<double> loss_scale = {}) {
        stage_batch(x);
        enqueue_forward(plan, loss_scale);
        return finish_forward();
    }

    // forward() in its three parts, for a training step recorded as a graph (train/trainer.hpp): stage_batch
    // checks the batch and copies it to the backend's memory; enqueue_forward issues the forward's work without
    // reading anything back (on a GPU it only enqueues: the backward can follow it in the same recording);
    // finish_forward brings the loss and the entropies to the host and returns what forward() does.
    void stage_batch(const batch& x) {
        check_batch(x);
        const Backend be{};
        d_ = pass_dims{x.B, x.T, C, NH, HD, F, V, config.norm_eps};
        const std::int64_t N = d_.tokens();
        detail::grow(tokens_, N);
        detail::grow(targets_, N);
        copy_from_host(be, tokens_.data(), x.inputs.data(), N);
        copy_from_host(be, targets_.data(), x.targets.data(), N);
        loss_ = loss_sum{.sum = 0.0, .count = std::int64_t(std::count_if(x.targets.begin(), x.targets.end(),
                                                                          [](std::int32_t y) { return y >= 0; }))};
    }
    void enqueue_forward(const loop_plan& plan, std::optional<double> loss_scale = {}) {
        require(d_.B > 0, "model: enqueue_forward() needs a stage_batch() first");
        validate_plan(plan, NL, NH, budget);
        const Backend be{};
        if (sigma_) sigma_->forward(be, params_.data(), training_);  // Ŵ = (γ/σ) W, read through weight()
        const std::int64_t N = d_.tokens();
        const double p = training_ ? dropout_ : 0.0;
        active_dropout_ = p;

        detail::grow(emb_, N * C);
        embedding_forward(be, emb_.data(), tokens_.data(), weight(*embed_), int(N), C);
        if (p > 0.0) {
            detail::grow(emb_mask_, N * C);
            dropout_forward(be, emb_.data(), emb_mask_.data(), N * C, p, dropout_rng_);
        }

        stages_.clear();
        entropy_passes_.clear();
        passes_.clear();
        planned_.clear();
        for_each_pass(variant_, plan, NH, [&](const pass_site& site, const layer_loop& lp, pass_spec spec) {
            planned_.push_back({site, &lp, std::move(spec)});
        });
        const T* h = emb_.data();
        std::size_t n_attn = 0, n_ffn = 0, n_runs = 0;
        extra_loss_ = 0.0;
        const accum_t<T>* rc = rope_cos_.data();
        const accum_t<T>* rs = rope_sin_.data();
        for (std::size_t i = 0; i < planned_.size();) {
            const pass_site site = planned_[i].site;
            const layer_loop& lp = *planned_[i].lp;
            const int l = site.layer;
            const auto aw = attention_weights_of(l);
            // The next attention record, for planned pass j (of this layer).
            auto take_record = [&](std::size_t j) -> attention_record<T, Backend>& {
                auto& r = attention_record_at(n_attn);
                r.heads = std::move(planned_[j].spec.heads);
                r.gains = std::move(planned_[j].spec.gains);
                // Eq. 4 on the passes the entropy report takes: each layer's first pass, and the last loop step of
                // a looped layer (its last block repeat); the other passes skip it.
                const pass_site& at = planned_[j].site;
                const bool first_pass = at.repeat == 0 && at.step == 0;
                const bool last_loop = at.repeat == lp.block_repeat - 1 && at.step == lp.k && at.step > 0;
                r.want_entropy = first_pass || last_loop;
                if (first_pass) entropy_passes_.push_back({l, n_attn, true});
                if (last_loop) entropy_passes_.push_back({l, n_attn, false});
                passes_.push_back({planned_[j].site, n_attn});
                ++n_attn;
                return r;
            };
            const std::size_t run_steps = subspace_run_length(i, p);
            pass_site last = site;
            if (run_steps > 0) {  // loop steps over the same heads, computed in their subspace (loop_subspace.hpp)
                if constexpr (has_subspace_ops<Backend>) {
                    run_steps_.clear();
                    const std::size_t first = n_attn;
                    for (std::size_t j = i; j < i + run_steps; ++j) run_steps_.push_back(&take_record(j));
                    auto& run = subspace_run_at(n_runs);
                    subspace_run_forward(be, run, std::span<attention_record<T, Backend>* const>(run_steps_),
                                         subspace_scratch_, aw, h, d_, rc, rs);
                    stages_.push_back({stage::subspace, l, n_runs++, site, false, first, run_steps});
                    h = run.out.data();
                    last = planned_[i + run_steps - 1].site;
                }
                i += run_steps;
            } else {
                const bool after_same_layer = !stages_.empty() && stages_.back().kind == stage::attention &&
                                              stages_.back().layer == l;  // a loop step: may share its packed weights
                auto& r = take_record(i);
                r.packed_source = after_same_layer ? &attn_records_[n_attn - 2] : nullptr;
                const bool hooked = variant_.transforms(site, lp);
                if (hooked)
                    extra_loss_ += attention_pass_forward(be, r, attn_scratch_, aw, h, d_, rc, rs, p, dropout_rng_,
                                                          variant_hook{*this, site});
                else
                    attention_pass_forward(be, r, attn_scratch_, aw, h, d_, rc, rs, p, dropout_rng_);
                stages_.push_back({stage::attention, l, n_attn - 1, site, hooked});
                h = r.out.data();
                ++i;
            }
            if (last.step == lp.k) {  // the block's FFN follows its last attention pass
                auto& f = ffn_record_at(n_ffn);
                ffn_forward(be, f, ffn_scratch_, ffn_weights_of(l), h, d_, p, dropout_rng_);
                stages_.push_back({stage::ffn, l, n_ffn++, last, false});
                h = f.out.data();
            }
        }

        final_in_ = h;
        detail::grow(final_rstd_, N);
        detail::grow(final_x_, N * C);
        rmsnorm_forward(be, final_x_.data(), final_rstd_.data(), h, weight(*final_norm_), int(N), C, config.norm_eps);
        lm_head_chunks(loss_scale);
        head_gradient_scale_ = loss_scale;
        backward_pending_ = true;
        logits_on_host_ = false;
    }
    double finish_forward() {
        require(!stages_.empty(), "model: finish_forward() needs an enqueue_forward() first");
        const Backend be{};
        std::vector<double> sums(static_cast<std::size_t>(loss_chunks_));  // each chunk's, added in order
        copy_to_host(be, sums.data(), static_cast<const double*>(loss_sum_.data()), loss_chunks_);
        loss_.sum = 0.0;
        for (const double x : sums) loss_.sum += x;
        entropy_ = entropy_report(NL, NH);
        for (const auto& [l, record, first] : entropy_passes_) {
            auto& r = attn_records_[record];
            r.fetch_entropy(be, d_.B);
            for (int i = 0; i < r.n(); ++i)
                (first ? entropy_.first_pass : entropy_.last_loop)[std::size_t(l) * NH + r.heads[i]] =
                    r.head_entropy(i, d_.B);
        }
        return loss_.mean() + extra_loss_;
    }
    // Whether a training step of this model may be recorded once and replayed (train/trainer.hpp): its device
    // work must not depend on host values that change from step to step. Not with dropout (a new mask each step),
    // σReparam (its power iteration's state) or a variant that transforms head outputs (gates.hpp reads its
    // statistics back), which run every step eagerly.
    bool replayable() const {
        return !sigma_ && dropout_ == 0.0 && std::is_same_v<Variant, paper_variant>;
    }

    // Gradients of the loss of the last forward() (the mean cross-entropy plus any loss term of the variant),
    // accumulated into gradients().
    void backward() { backward(loss_.count ? 1.0 / double(loss_.count) : 0.0); }

    // The same with the cross-entropy weighted by loss_scale: gradients of loss_scale × last_loss().sum plus the
    // variant's loss term. Gradient accumulation over micro-batches passes 1 / (targets counted in all of them),
    // so that the micro-batches' gradients add up to those of the mean over the whole batch.
    void backward(double loss_scale) {
        backward(loss_scale, [](std::int64_t, std::int64_t) {});
    }

    // The same, calling on_final(offset, count) for each range of gradients() that is final while the backward
    // goes on: the LM head and final norm first, then each layer's tensors once its first pass (the last in the
    // backward) is done, then the embedding. Data parallelism (dist/data_parallel.hpp) sums them over the ranks meanwhile.
    // Ranges not reported (a variant's or σReparam's tensors; with σReparam, whose backward rewrites every linear
    // weight's gradient at the end, nothing is reported) are final when backward returns.
    template <class OnFinal>
    void backward(double loss_scale, OnFinal&& on_final) {
        require(!stages_.empty(), "model: backward() needs a forward() first");
        require(backward_pending_, "model: backward() a second time after one forward(); run forward() again");
        require(!head_gradient_scale_ || *head_gradient_scale_ == loss_scale,
                "model: backward({}) after a forward that wrote the cross-entropy's gradient with scale {}", loss_scale,
                head_gradient_scale_.value_or(0.0));
        const Backend be{};
        const std::int64_t N = d_.tokens();
        detail::grow(dres_, N * C);
        if (!head_gradient_scale_) lm_head_chunks(loss_scale);  // else the forward did it
        head_gradient_scale_.reset();
        backward_pending_ = false;
        fill_zero(be, dres_.data(), N * C);
        rmsnorm_backward(be, dres_.data(), grad(*final_norm_), dx_.data(), final_in_, weight(*final_norm_),
                         final_rstd_.data(), int(N), C);
        // Ranges are reported from the end of the table towards its start (LM head, final norm, each layer's
        // tensors last to first, the embedding), so that adjacent ones coalesce into buckets.
        const bool report = !sigma_;
        if (report) {
            on_final(lm_head_->offset, lm_head_->numel());
            on_final(final_norm_->offset, final_norm_->numel());
        }
        std::array<std::size_t, NL> first_stage{};  // each layer's first stage in execution order
        first_stage.fill(stages_.size());
        for (std::size_t i = stages_.size(); i-- > 0;) first_stage[std::size_t(stages_[i].layer)] = i;
        for (auto it = stages_.rbegin(); it != stages_.rend(); ++it) {
            if (it->kind == stage::attention && it->hooked)
                attention_pass_backward(be, dres_.data(), attention_grads_of(it->layer), attn_records_[it->record],
                                        attention_weights_of(it->layer), attn_scratch_, d_, rope_cos_.data(),
                                        rope_sin_.data(), active_dropout_, variant_hook{*this, it->site});
            else if (it->kind == stage::attention)
                attention_pass_backward(be, dres_.data(), attention_grads_of(it->layer), attn_records_[it->record],
                                        attention_weights_of(it->layer), attn_scratch_, d_, rope_cos_.data(),
                                        rope_sin_.data(), active_dropout_);
            else if (it->kind == stage::subspace)
                subspace_backward(*it);
            else
                ffn_backward(be, dres_.data(), ffn_grads_of(it->layer), ffn_records_[it->record],
                             ffn_weights_of(it->layer), ffn_scratch_, d_, active_dropout_);
            if (report && std::size_t(stages_.rend() - it - 1) == first_stage[std::size_t(it->layer)]) {
                const layer_params& p = layers_[std::size_t(it->layer)];
                for (const param_entry* e : {p.down, p.up, p.gate, p.ffn_norm, p.o, p.v, p.k, p.q, p.attn_norm})
                    on_final(e->offset, e->numel());
            }
        }
        if (active_dropout_ > 0.0) dropout_backward(be, dres_.data(), emb_mask_.data(), N * C);
        embedding_backward(be, grad(*embed_), dres_.data(), tokens_.data(), int(N), C);
        if (report) on_final(embed_->offset, embed_->numel());
        if (sigma_) sigma_->backward(be, params_.data(), grads_.data());  // ∂L/∂Ŵ → ∂L/∂W, ∂L/∂γ
    }

    // (B, T, V) logits of the last forward(), in host memory. The device never holds them whole: the first call
    // after a forward computes them again from the normed final hidden states, chunk by chunk, into host memory
    // (an LM-head product more; the forward computed them only chunk by chunk for the loss).
    std::span<const T> logits() {
        require(!stages_.empty(), "model: logits() needs a forward() first");
        if (!logits_on_host_) {
            logits_host_.resize(std::size_t(d_.tokens() * V));
            for_each_logits_chunk([&](std::int64_t, std::int64_t r0, int n) {
                copy_to_host(Backend{}, logits_host_.data() + r0 * V, static_cast<const T*>(logits_.data()), n * V);
            });
            logits_on_host_ = true;
        }
        return logits_host_;
    }

    // The LM head and the cross-entropy run over the B·T rows in chunks, so that the (B·T, V) logits are never
    // held whole (at gpt2's size in bf16 they would be 1.6 GB, more than any other activation): at most `rows`
    // rows at a time, or, with 0 (the default), as many as take at most 1 GiB of logits. A chunk's gradient is
    // added into the LM head's before the next one is computed, so more chunks mean more passes over that gradient.
    void set_logits_chunk(std::int64_t rows) {
        require(rows >= 0, "model: expected a logits chunk of 0 (automatic) or more rows, found {}", rows);
        logits_chunk_ = rows;
    }
    // The rows of one chunk for a batch of N tokens. Automatic: a multiple of 8 (so that the chunks' rows start
    // aligned), the chunks as even as that allows.
    std::int64_t logits_chunk_rows(std::int64_t N) const {
        if (logits_chunk_ > 0) return std::max<std::int64_t>(1, std::min(logits_chunk_, N));
        const std::int64_t most =
            std::max<std::int64_t>(8, (std::int64_t(1) << 30) / (std::int64_t(V) * std::int64_t(sizeof(T))) / 8 * 8);
        if (N <= most) return std::max<std::int64_t>(N, 1);
        const std::int64_t chunks = (N + most - 1) / most;
        return ((N + chunks - 1) / chunks + 7) / 8 * 8;
    }
    const entropy_report& entropies() const { return entropy_; }
    // The cross-entropy of the last forward() (sum and count of the counted targets), without the variant's term.
    const loss_sum& last_loss() const { return loss_; }
    // The loss term the variant added in the last forward() (0 for the paper's model).
    double extra_loss() const { return extra_loss_; }
    const pass_dims& dims() const { return d_; }

    // The attention passes of the last forward(), in execution order, read only: where the pass ran (layer, block
    // application, step: 0 the first pass over all heads, k loop step k of Eq. 6) and what it saved (its heads,
    // gains and RoPE'd q, k, v). For analysis (analysis.hpp); valid until the next forward().
    struct attention_pass {
        pass_site site;
        const attention_record<T, Backend>* record = nullptr;
    };
    std::vector<attention_pass> attention_passes() const {
        std::vector<attention_pass> out;
        for (const auto& [site, record] : passes_) out.push_back({site, &attn_records_[record]});
        return out;
    }

    // Loop steps of a layer over the same heads computed as one run in those heads' subspace (loop_subspace.hpp):
    // the same function with fewer products and no full-width normalisation per step, rounded differently. Taken
    // for every run where loop_subspace_applies (K ≥ 2 steps over at most a third of the width) and the backend has
    // the ops, without dropout and without a head-output transform. On by default wherever the backend has the ops
    // (docs/BENCHMARKS.md measures both backends). Set it before reserve(), which sizes the runs' buffers.
    void set_loop_subspace(bool on) { loop_subspace_ = on && has_subspace_ops<Backend>; }
    bool loop_subspace() const { return loop_subspace_; }
    // The runs of loop steps the last forward() computed in the subspace.
    int subspace_runs() const {
        return int(std::count_if(stages_.begin(), stages_.end(), [](const stage& s) { return s.kind == stage::subspace; }));
    }

    // Training FLOPs of one step of B sequences of `seq` tokens under `plan` (spec Sec. 6), the variant's and
    // σReparam's included.
    double step_flops(std::int64_t B, int seq, const loop_plan& plan) const {
        return sgt::step_flops(shape, B, seq, plan, variant_) + (sigma_ ? sigma_->step_flops() : 0.0);
    }

private:
    struct stage {
        enum kind_t { attention, ffn, subspace } kind;
        int layer;
        std::size_t record;  // into attn_records_, ffn_records_ or runs_
        pass_site site;
        bool hooked;  // the variant transforms this pass's head outputs
        std::size_t first_step = 0, steps = 0;  // a subspace run's attention records
    };

    // The last L layers loop K_max times over heads 0..n-1.
    static loop_plan budget_plan_over(int n) {
        loop_plan p = loop_plan::vanilla(NL);
        for (int i = 0; i < budget.L; ++i) {
            auto& l = p.layers[NL - 1 - i];
            l.k = budget.k_max;
            for (int h = 0; h < n; ++h) l.heads.push_back(h);
        }
        return p;
    }

    // One pass of the plan, as for_each_pass gives it.
    struct planned_pass {
        pass_site site;
        const layer_loop* lp;  // into the plan of enqueue_forward, valid during that call
        pass_spec spec;
    };
    // The number of loop steps from planned_[i] on that form a subspace run, or 0.
    std::size_t subspace_run_length(std::size_t i, double dropout) const {
        const planned_pass& first = planned_[i];
        if (!loop_subspace_ || dropout > 0.0 || first.site.step == 0 || variant_.transforms(first.site, *first.lp))
            return 0;
        std::size_t j = i + 1;
        while (j < planned_.size() && planned_[j].site.layer == first.site.layer &&
               planned_[j].site.repeat == first.site.repeat && planned_[j].site.step == planned_[j - 1].site.step + 1 &&
               planned_[j].spec.heads == first.spec.heads && !variant_.transforms(planned_[j].site, *planned_[j].lp))
            ++j;
        return loop_subspace_applies(int(j - i), int(first.spec.heads.size()), HD, C) ? j - i : 0;
    }
    void subspace_backward(const stage& st) {
        if constexpr (has_subspace_ops<Backend>) {
            run_steps_.clear();
            for (std::size_t k = 0; k < st.steps; ++k) run_steps_.push_back(&attn_records_[st.first_step + k]);
            subspace_run_backward(Backend{}, dres_.data(), attention_grads_of(st.layer), runs_[st.record],
                                  std::span<attention_record<T, Backend>* const>(run_steps_),
                                  attention_weights_of(st.layer), subspace_scratch_, d_, rope_cos_.data(),
                                  rope_sin_.data());
        }
    }
    subspace_run<T, Backend>& subspace_run_at(std::size_t i) {
        if (runs_.size() <= i) runs_.resize(i + 1);
        return runs_[i];
    }

    // The pass hook of attention.hpp bound to the variant: builds the pass_context the variant sees.
    struct variant_hook {
        model& m;
        pass_site site;
        pass_context<T, Backend> context(attention_record<T, Backend>& r) const {
            return {site, std::span<const int>(r.heads), m.d_, r.qkv.data(), &r.variant, &m.table_,
                    m.params_.data(), m.grads_.data()};
        }
        double forward(attention_record<T, Backend>& r) {
            auto c = context(r);
            return m.variant_.transform_forward(Backend{}, c, r.o.data());
        }
        template <class Buffer>
        bool backward(attention_record<T, Backend>& r, T* d_o, Buffer& dqkv) {
            auto c = context(r);
            detail::grow(dqkv, c.d.tokens() * 3 * c.n() * c.d.HD);
            return m.variant_.transform_backward(Backend{}, c, d_o, dqkv.data());
        }
    };

    // The LM head and the cross-entropy, one chunk of rows at a time (logits_chunk_rows): the chunk's logits
    // z = x W_lmᵀ from the normed final states x, the sum of its rows' losses into loss_sum_[c]; with a scale also
    // their backward at once: ∂L/∂z = scale · (softmax(z) − onehot(target)) written over z, then the chunk's rows
    // of ∂L/∂x = ∂L/∂z W_lm into dx_ and ∂L/∂W_lm += ∂L/∂zᵀ x.
    void lm_head_chunks(std::optional<double> scale) {
        const Backend be{};
        const std::int64_t N = d_.tokens(), rows = logits_chunk_rows(N);
        loss_chunks_ = (N + rows - 1) / rows;
        detail::grow(loss_sum_, loss_chunks_);
        if (scale) detail::grow(dx_, N * C);
        for_each_logits_chunk([&](std::int64_t c, std::int64_t r0, int n) {
            if (!scale) {
                cross_entropy_forward(be, logits_.data(), targets_.data() + r0, n, V, static_cast<accum_t<T>*>(nullptr),
                                      loss_sum_.data() + c);
                return;
            }
            cross_entropy_forward_backward(be, logits_.data(), targets_.data() + r0, n, V, *scale, loss_sum_.data() + c);
            matmul_backward(be, dx_.data() + r0 * C, grad(*lm_head_), logits_.data(), final_x_.data() + r0 * C,
                            weight(*lm_head_), n, C, V, overwrite{.din = true});
        });
    }
    // Each chunk c of rows [r0, r0 + n) in order: its logits x W_lmᵀ into logits_, then f(c, r0, n).
    template <class F>
    void for_each_logits_chunk(F&& f) {
        const std::int64_t N = d_.tokens(), rows = logits_chunk_rows(N);
        detail::grow(logits_, rows * V);
        for (std::int64_t c = 0, r0 = 0; r0 < N; ++c, r0 += rows) {
            const int n = int(std::min(rows, N - r0));
            matmul_forward(Backend{}, logits_.data(), final_x_.data() + r0 * C, weight(*lm_head_), n, C, V);
            f(c, r0, n);
        }
    }

    void check_batch(const batch& x) const {
        require(x.B > 0 && x.T > 0, "model: expected a non-empty batch, found B = {}, T = {}", x.B, x.T);
        require(x.T <= shape.max_seq, "model: sequence length {} exceeds the preset's maximum sequence {}", x.T,
                shape.max_seq);
        require(x.T <= max_seq_ && x.B <= max_batch_,
                "model: batch {}x{} exceeds the capacity {}x{} the model was built for", x.B, x.T, max_batch_,
                max_seq_);
        const std::size_t n = std::size_t(x.B) * x.T;
        require(x.inputs.size() == n && x.targets.size() == n,
                "model: expected {} inputs and targets for B = {}, T = {}, found {} and {}", n, x.B, x.T,
                x.inputs.size(), x.targets.size());
        for (std::size_t i = 0; i < n; ++i) {
            require(x.inputs[i] >= 0 && x.inputs[i] < V, "model: token {} at position {} is outside [0, {})",
                    x.inputs[i], i, V);
            require(x.targets[i] >= ignore_target && x.targets[i] < V,
                    "model: target {} at position {} is outside [0, {}) and not ignore_target ({})", x.targets[i], i,
                    V, ignore_target);
        }
    }

    attention_record<T, Backend>& attention_record_at(std::size_t i) {
        if (attn_records_.size() <= i) attn_records_.resize(i + 1);
        return attn_records_[i];
    }
    ffn_record<T, Backend>& ffn_record_at(std::size_t i) {
        if (ffn_records_.size() <= i) ffn_records_.resize(i + 1);
        return ffn_records_[i];
    }

    // The weights the passes use (Ŵ for a linear layer under σReparam) and where their gradients go (∂L/∂Ŵ there).
    const T* weight(const param_entry& e) const {
        return sigma_ ? sigma_->weight(e, params_.data()) : params_.data() + e.offset;
    }
    T* grad(const param_entry& e) { return sigma_ ? sigma_->grad(e, grads_.data()) : grads_.data() + e.offset; }
    attention_weights<T> attention_weights_of(int l) const {
        const layer_params& L = layers_[std::size_t(l)];
        return {weight(*L.attn_norm), weight(*L.q), weight(*L.k), weight(*L.v), weight(*L.o)};
    }
    attention_grads<T> attention_grads_of(int l) {
        const layer_params& L = layers_[std::size_t(l)];
        return {grad(*L.attn_norm), grad(*L.q), grad(*L.k), grad(*L.v), grad(*L.o)};
    }
    ffn_weights<T> ffn_weights_of(int l) const {
        const layer_params& L = layers_[std::size_t(l)];
        return {weight(*L.ffn_norm), weight(*L.gate), weight(*L.up), weight(*L.down)};
    }
    ffn_grads<T> ffn_grads_of(int l) {
        const layer_params& L = layers_[std::size_t(l)];
        return {grad(*L.ffn_norm), grad(*L.gate), grad(*L.up), grad(*L.down)};
    }

    int max_batch_, max_seq_;
    Variant variant_;
    sgt::parameter_table table_;
    std::vector<layer_params> layers_;  // (NL) each layer's tensors, by role
    const param_entry *embed_, *final_norm_, *lm_head_;
    buffer<T> params_, grads_;  // (total_params) in table_ order
    std::optional<sgt::sigma_reparam<T, Backend>> sigma_;  // σReparam's state, Ŵ and ∂L/∂Ŵ; empty when off
    buffer<accum_t<T>> rope_cos_, rope_sin_;  // (max_seq, HD/2)
    double dropout_ = 0.0, active_dropout_ = 0.0;
    bool training_ = true;
    rng dropout_rng_;

    pass_dims d_{};
    buffer<std::int32_t> tokens_, targets_;       // (B, T)
    buffer<T> emb_, emb_mask_;                    // (B, T, C)
    std::deque<attention_record<T, Backend>> attn_records_;
    std::deque<subspace_run<T, Backend>> runs_;
    subspace_scratch<T, Backend> subspace_scratch_;
    bool loop_subspace_ = has_subspace_ops<Backend>;
    std::vector<planned_pass> planned_;                       // the passes of the plan at hand
    std::vector<attention_record<T, Backend>*> run_steps_;    // a run's records, for the run's calls
    std::vector<std::pair<pass_site, std::size_t>> passes_;  // every attention pass's site and record, in order
    std::deque<ffn_record<T, Backend>> ffn_records_;
    std::vector<stage> stages_;
    attention_scratch<T, Backend> attn_scratch_;
    ffn_scratch<T, Backend> ffn_scratch_;
    const T* final_in_ = nullptr;
    buffer<T> final_rstd_, final_x_, dx_, dres_;
    buffer<T> logits_;                 // (rows of a chunk, V) the logits of one chunk, then their gradient
    std::int64_t logits_chunk_ = 0;    // set_logits_chunk
    std::vector<T> logits_host_;       // logits(), all of them
    bool logits_on_host_ = false;      // logits_host_ holds the last forward's
    bool backward_pending_ = false;    // a forward ran and its backward has not
    std::optional<double> head_gradient_scale_;  // the forward did the LM head's backward with this scale (dx_ holds
                                                 // ∂L/∂ of the normed final states; the LM head's gradient is added)
    buffer<double> loss_sum_;          // (chunks) each chunk's sum of the cross-entropy, in the backend's memory
    std::int64_t loss_chunks_ = 0;     // the chunks of the last forward
    loss_sum loss_;
    double extra_loss_ = 0.0;
    struct entropy_pass {
        int layer;
        std::size_t record;
        bool first;  // the first pass (all heads), else the last loop step
    };
    std::vector<entropy_pass> entropy_passes_;  // the passes whose entropies the report takes (Eq. 4)
    entropy_report entropy_;
};

}  // namespace sgt
