// sgt/train/adamw.hpp: the AdamW optimizer over a model's contiguous parameter buffer, with decoupled weight
// decay on the weight matrices and none on the RMSNorm weights, and global-norm gradient clipping.
// Backend-generic: the update itself is the backend's adamw_update leaf op.
#pragma once

#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "sgt/backend/common.hpp"
#include "sgt/core/error.hpp"
#include "sgt/core/precision.hpp"
#include "sgt/params.hpp"

namespace sgt {

struct adamw_options {
    double beta1 = 0.9;
    double beta2 = 0.95;
    double eps = 1e-8;
    double weight_decay = 0.1;  // applied to matrices (param_entry::decay), never to norm weights
    double clip = 1.0;          // global gradient-norm bound; 0 disables clipping
};

// Mixed precision (T = bf16 on the CUDA backend): the moments and a master copy of the weights are kept in
// accum_t<T> (fp32); each update writes the low-precision working copy the model runs on from the master.
template <class T, class Backend = cpu>
class adamw {
public:
    template <class U>
    using buffer = typename Backend::template buffer<U>;
    using moment_type = accum_t<T>;
    static constexpr bool mixed_precision = !std::is_same_v<T, moment_type>;

    adamw(const parameter_table& table, std::int64_t n_params, adamw_options o = {})
        : table_(table), opt_(o) {
        m_.resize(std::size_t(n_params));
        v_.resize(std::size_t(n_params));
        fill_zero(Backend{}, m_.data(), n_params);
        fill_zero(Backend{}, v_.data(), n_params);
        require(o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1,
                "adamw: expected betas in [0, 1), found ({}, {})", o.beta1, o.beta2);
        require(o.eps > 0 && o.weight_decay >= 0 && o.clip >= 0,
                "adamw: expected eps > 0, weight_decay >= 0, clip >= 0, found {}, {}, {}", o.eps, o.weight_decay, o.clip);
    }

    // Freezes the tensors for which trainable(entry) is false: step() leaves them and their moments untouched,
    // clip_gradients() leaves their gradients out of the norm (self-distillation trains the gates alone).
    template <class Pred>
    void set_trainable(Pred trainable) {
        frozen_.assign(table_.size(), false);
        std::size_t i = 0, kept = 0;
        for (const auto& e : table_) {
            frozen_[i] = !trainable(e);
            kept += frozen_[i++] ? 0 : 1;
        }
        require(kept > 0, "adamw: set_trainable left no tensor to train");
    }
    bool trainable(std::size_t entry) const { return frozen_.empty() || !frozen_[entry]; }

    // Global gradient norm of the trainable tensors; with clipping on, scales their gradients by
    // min(1, clip / (norm + 1e-6)) as torch.nn.utils.clip_grad_norm_ does. Returns the norm before clipping.
    double clip_gradients(std::span<T> grads) {
        const Backend be{};
        double sq = 0.0;
        if (frozen_.empty()) {
            sq = sum_squares(be, grads.data(), std::int64_t(grads.size()));
        } else {
            std::size_t i = 0;
            for (const auto& e : table_)
                if (trainable(i++)) sq += sum_squares(be, grads.data() + e.offset, e.numel());
        }
        const double norm = std::sqrt(sq);
        if (opt_.clip > 0.0) {
            const double s = opt_.clip / (norm + 1e-6);
            if (s < 1.0) {
                std::size_t i = 0;
                if (frozen_.empty())
                    scale(be, grads.data(), std::int64_t(grads.size()), s);
                else
                    for (const auto& e : table_)
                        if (trainable(i++)) scale(be, grads.data() + e.offset, e.numel(), s);
            }
        }
        return norm;
    }

    // One update with learning rate lr; the step counter (for bias correction) advances by one.
    void step(std::span<T> params, std::span<const T> grads, double lr) {
        const Backend be{};
        const adamw_hyper h{lr, opt_.beta1, opt_.beta2, opt_.eps};
        if constexpr (mixed_precision) master_weights(params);
        ++t_;
        // One update per run of adjacent trainable tensors with the same weight decay (fewer, longer launches
        // on a GPU; the same arithmetic per element).
        std::int64_t begin = 0, end = 0;
        double run_wd = 0.0;
        auto flush = [&] {
            if (end > begin) {
                if constexpr (mixed_precision)
                    adamw_update(be, params.data() + begin, grads.data() + begin, master_.data() + begin,
                                 m_.data() + begin, v_.data() + begin, end - begin, h, run_wd, t_);
                else
                    adamw_update(be, params.data() + begin, grads.data() + begin, m_.data() + begin,
                                 v_.data() + begin, end - begin, h, run_wd, t_);
            }
            begin = end;
        };
        std::size_t i = 0;
        for (const auto& e : table_) {
            const bool train = trainable(i++);
            const double wd = e.decay ? opt_.weight_decay : 0.0;
            if (!train || wd != run_wd || e.offset != end) {
                flush();
                begin = end = e.offset;
            }
            run_wd = wd;
            if (train) end = e.offset + e.numel();
            else begin = end = e.offset + e.numel();
        }
        flush();
    }

    // Mixed precision: the fp32 master weights (made from the working copy `params` the first time), in the
    // backend's memory; checkpoints save these, not the bf16 copy.
    std::span<moment_type> master_weights(std::span<const T> params)
        requires mixed_precision
    {
        if (master_.size() != params.size()) {
            master_.resize(params.size());
            convert(Backend{}, master_.data(), params.data(), std::int64_t(params.size()));
        }
        return master_;
    }
    // Mixed precision: sets the master weights from host values and the working copy `params` from them.
    void load_master_weights(std::span<const moment_type> host, std::span<T> params)
        requires mixed_precision
    {
        require(host.size() == params.size(), "adamw: expected {} master weights, found {}", params.size(), host.size());
        master_.resize(params.size());
        copy_from_host(Backend{}, master_.data(), host.data(), std::int64_t(host.size()));
        convert(Backend{}, params.data(), static_cast<const moment_type*>(master_.data()), std::int64_t(params.size()));
    }

    int steps() const { return t_; }
    const adamw_options& options() const { return opt_; }
    // The moments, in the backend's memory.
    std::span<moment_type> first_moment() { return m_; }
    std::span<moment_type> second_moment() { return v_; }
    void set_steps(int t) { t_ = t; }

private:
    parameter_table table_;
    adamw_options opt_;
    buffer<moment_type> m_, v_;  // (total_params)
    buffer<moment_type> master_;  // (total_params) fp32 master weights, mixed precision only
    std::vector<bool> frozen_;    // (table entries) set_trainable's; empty: every tensor trains
    int t_ = 0;
};

}  // namespace sgt
