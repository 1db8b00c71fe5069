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
//
// A step is global-norm clipping and the update, enqueued on the backend with no host round trip (on a GPU a
// training step records them into its CUDA graph): begin_step(params, lr) writes the step's rate and bias
// corrections to backend memory; update(params, grads) computes ‖g‖² of the trainable gradients there and runs one
// fused update that scales each gradient by clip_factor(‖g‖) as it reads it (the gradients are left unscaled);
// grad_norm() reads ‖g‖ back afterwards. A non-finite ‖g‖ leaves the weights and the moments as they were.
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
        values_.resize(1);
        require(o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1,
                "adamw: expected betas in [0, 1), found ({}, {})", o.beta1, o.beta2);
        require(o.eps > 0 && o.weight_decay >= 0 && o.clip >= 0,
                "adamw: expected eps > 0, weight_decay >= 0, clip >= 0, found {}, {}, {}", o.eps, o.weight_decay, o.clip);
        make_runs();
    }

    // Freezes the tensors for which trainable(entry) is false: updates leave them and their moments untouched, and
    // their gradients out of the norm (self-distillation trains the gates alone).
    template <class Pred>
    void set_trainable(Pred trainable) {
        frozen_.assign(table_.size(), false);
        std::size_t i = 0, kept = 0;
        for (const auto& e : table_) {
            frozen_[i] = !trainable(e);
            kept += frozen_[i++] ? 0 : 1;
        }
        require(kept > 0, "adamw: set_trainable left no tensor to train");
        make_runs();
    }
    bool trainable(std::size_t entry) const { return frozen_.empty() || !frozen_[entry]; }
    // Changes with every set_trainable: a recorded update is valid while it stays the same.
    int layout_version() const { return layout_version_; }

    // Step t + 1 begins: its learning rate and bias corrections go to backend memory (before a recorded update
    // replays); with mixed precision, the master weights are made from `params` the first time.
    void begin_step(std::span<const T> params, double lr) {
        if constexpr (mixed_precision) master_weights(params);
        ++t_;
        const adamw_step_values v{lr, 1.0 - std::pow(opt_.beta1, t_), 1.0 - std::pow(opt_.beta2, t_)};
        copy_from_host(Backend{}, values_.data(), &v, 1);
    }

    // The step's clipping and update, enqueued on the backend (nothing read back): ‖g‖² of the trainable gradients
    // in parts (one per run of adjacent trainable tensors), then AdamW over the runs with the gradients scaled by
    // min(1, clip / (‖g‖ + 1e-6)), as torch.nn.utils.clip_grad_norm_ and torch.optim.AdamW do.
    void update(std::span<T> params, std::span<const T> grads) {
        const Backend be{};
        for (std::size_t p = 0; p < parts_.size(); ++p)
            sum_squares(be, grads.data() + parts_[p].offset, parts_[p].n, sq_.data() + p);
        const adamw_hyper h{opt_.beta1, opt_.beta2, opt_.eps, opt_.clip};
        if constexpr (mixed_precision)
            adamw_update(be, params.data(), grads.data(), master_.data(), m_.data(), v_.data(), runs_, h,
                         values_.data(), sq_.data(), int(parts_.size()));
        else
            adamw_update(be, params.data(), grads.data(), m_.data(), v_.data(), runs_, h, values_.data(), sq_.data(),
                         int(parts_.size()));
    }

    // One whole step: begin_step, then update.
    void step(std::span<T> params, std::span<const T> grads, double lr) {
        begin_step(params, lr);
        update(params, grads);
    }

    // The global norm of the last update's trainable gradients, before clipping (read back from the backend).
    double grad_norm() const {
        std::vector<double> copy;
        double sq = 0.0;  // in the update's order
        for (const double x : detail::host_view(Backend{}, sq_.data(), parts_.size(), copy)) sq += x;
        return std::sqrt(sq);
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
    // The update's runs (adjacent trainable tensors with the same weight decay: fewer, longer launches on a GPU)
    // and the norm's parts (adjacent trainable tensors).
    void make_runs() {
        runs_.clear();
        parts_.clear();
        std::size_t i = 0;
        for (const auto& e : table_) {
            if (!trainable(i++)) continue;
            const double wd = e.decay ? opt_.weight_decay : 0.0;
            if (!runs_.empty() && runs_.back().offset + runs_.back().n == e.offset && runs_.back().decay == wd)
                runs_.back().n += e.numel();
            else
                runs_.push_back({e.offset, e.numel(), wd});
            if (!parts_.empty() && parts_.back().offset + parts_.back().n == e.offset)
                parts_.back().n += e.numel();
            else
                parts_.push_back({e.offset, e.numel(), 0.0});
        }
        sq_.resize(parts_.size());
        ++layout_version_;
    }

    parameter_table table_;
    adamw_options opt_;
    buffer<moment_type> m_, v_;  // (total_params)
    buffer<moment_type> master_;  // (total_params) fp32 master weights, mixed precision only
    buffer<adamw_step_values> values_;  // (1) this step's rate and bias corrections
    buffer<double> sq_;                 // (parts) Σ g² of each part of the trainable gradients
    std::vector<adamw_run> runs_, parts_;
    std::vector<bool> frozen_;  // (table entries) set_trainable's; empty: every tensor trains
    int t_ = 0;
    int layout_version_ = 0;
};

}  // namespace sgt
