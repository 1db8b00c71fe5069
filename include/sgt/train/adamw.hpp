// sgt/train/adamw.hpp: the AdamW optimizer over a model's contiguous parameter buffer, with decoupled weight
// decay on the weight matrices and none on the RMSNorm weights, and global-norm gradient clipping.
// Backend-generic: the update itself is the backend's adamw_update leaf op.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
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

// ZeRO-1 (adamw::set_shard; trainer::set_data_parallel makes it): the optimizer of one of several data-parallel
// ranks keeps the moments (and, with mixed precision, the master weights) of its share [offset, offset + count)
// of the parameter buffer only, and updates only that share of the weights; the ranks then exchange their shares
// (dist::gradient_sync::share_ranges). Every rank still sees the whole summed gradient, so the clipping norm is
// the same everywhere; the weights are those of the unsharded optimizer, bit for bit.
struct adamw_shard {
    std::int64_t offset = 0, count = 0;
    bool root = true;  // the rank that writes checkpoints
    // Collective: every rank's bytes on the root, rank by rank (shares in rank order make the whole buffer).
    std::function<std::vector<std::byte>(std::span<const std::byte>)> gather;
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

    // share: ZeRO-1's (set_shard), given here so that the whole moments are never allocated.
    adamw(const parameter_table& table, std::int64_t n_params, adamw_options o = {},
          std::optional<adamw_shard> share = std::nullopt)
        : table_(table), opt_(o), n_(n_params), shard_{0, n_params, true, {}} {
        if (share) shard_ = checked(std::move(*share));
        zero_moments();
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

    // ZeRO-1 (adamw_shard): from now on this optimizer keeps and updates only its share of the buffer. Before the
    // first step (the moments start at zero; a checkpoint loaded after it fills the share).
    void set_shard(adamw_shard s) {
        require(t_ == 0 && master_.empty(), "adamw: set_shard after the first step (at step {})", t_);
        const bool same = s.offset == shard_.offset && s.count == shard_.count;
        shard_ = checked(std::move(s));
        if (!same) zero_moments();
        make_runs();
    }
    bool sharded() const { return shard_.count != n_; }
    const adamw_shard& shard() const { return shard_; }
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
    // Sharded: the norm is still that of the whole gradient; the update writes this rank's share of `params`.
    void update(std::span<T> params, std::span<const T> grads) {
        const Backend be{};
        for (std::size_t p = 0; p < parts_.size(); ++p)
            sum_squares(be, grads.data() + parts_[p].offset, parts_[p].n, sq_.data() + p);
        const adamw_hyper h{opt_.beta1, opt_.beta2, opt_.eps, opt_.clip};
        T* const param = params.data() + shard_.offset;  // runs_ count from the share's start
        const T* const grad = grads.data() + shard_.offset;
        if constexpr (mixed_precision)
            adamw_update(be, param, grad, master_.data(), m_.data(), v_.data(), runs_, h, values_.data(), sq_.data(),
                         int(parts_.size()));
        else
            adamw_update(be, param, grad, m_.data(), v_.data(), runs_, h, values_.data(), sq_.data(),
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

    // Mixed precision: the fp32 master weights of this rank's share (all of them unless sharded), made from the
    // working copy `params` (the whole buffer) the first time, in the backend's memory; checkpoints save these.
    std::span<moment_type> master_weights(std::span<const T> params)
        requires mixed_precision
    {
        require(std::int64_t(params.size()) == n_, "adamw: expected {} parameters, found {}", n_, params.size());
        if (master_.empty() && shard_.count > 0) {
            master_.resize(std::size_t(shard_.count));
            convert(Backend{}, master_.data(), params.data() + shard_.offset, shard_.count);
        }
        return master_;
    }
    // Mixed precision: sets the master weights from host values (the whole buffer) and the working copy `params`
    // from them.
    void load_master_weights(std::span<const moment_type> host, std::span<T> params)
        requires mixed_precision
    {
        require(host.size() == params.size() && std::int64_t(host.size()) == n_,
                "adamw: expected {} master weights, found {}", n_, host.size());
        buffer<moment_type> whole;  // the share alone is kept; the working copy needs all
        if (sharded()) whole.resize(host.size());
        master_.resize(std::size_t(shard_.count));
        auto& from = sharded() ? whole : master_;
        copy_from_host(Backend{}, from.data(), host.data(), std::int64_t(from.size()));
        if (sharded()) copy_from_host(Backend{}, master_.data(), host.data() + shard_.offset, shard_.count);
        convert(Backend{}, params.data(), static_cast<const moment_type*>(from.data()), n_);
    }

    // The moments (and, mixed precision, the master weights) of the whole buffer on the host, for a checkpoint.
    // Sharded, every rank must call it (it gathers the shares) and the root gets them, the others empty vectors.
    struct host_state {
        std::vector<moment_type> master, m, v;  // master: mixed precision only
    };
    host_state state_to_host(std::span<const T> params) {
        host_state h;
        if constexpr (mixed_precision) h.master = whole_on_host(master_weights(params));
        h.m = whole_on_host(m_);
        h.v = whole_on_host(v_);
        return h;
    }
    // The moments from whole host buffers (a checkpoint's): this rank's share of each.
    void load_moments(std::span<const moment_type> m, std::span<const moment_type> v) {
        require(std::int64_t(m.size()) == n_ && std::int64_t(v.size()) == n_,
                "adamw: expected {} values of each moment, found {} and {}", n_, m.size(), v.size());
        copy_from_host(Backend{}, m_.data(), m.data() + shard_.offset, shard_.count);
        copy_from_host(Backend{}, v_.data(), v.data() + shard_.offset, shard_.count);
    }

    int steps() const { return t_; }
    const adamw_options& options() const { return opt_; }
    // The moments of this rank's share (all of them unless sharded), in the backend's memory.
    std::span<moment_type> first_moment() { return m_; }
    std::span<moment_type> second_moment() { return v_; }
    void set_steps(int t) { t_ = t; }

private:
    // The update's runs (adjacent trainable tensors with the same weight decay: fewer, longer launches on a GPU)
    // and the norm's parts (adjacent trainable tensors).
    // Sharded, the runs are cut to the share and counted from its start; the parts cover the whole buffer.
    void make_runs() {
        runs_.clear();
        parts_.clear();
        std::size_t i = 0;
        const std::int64_t lo = shard_.offset, hi = shard_.offset + shard_.count;
        for (const auto& e : table_) {
            if (!trainable(i++)) continue;
            const double wd = e.decay ? opt_.weight_decay : 0.0;
            const std::int64_t a = std::max(e.offset, lo) - lo, b = std::min(e.offset + e.numel(), hi) - lo;
            if (a < b) {
                if (!runs_.empty() && runs_.back().offset + runs_.back().n == a && runs_.back().decay == wd)
                    runs_.back().n += b - a;
                else
                    runs_.push_back({a, b - a, wd});
            }
            if (!parts_.empty() && parts_.back().offset + parts_.back().n == e.offset)
                parts_.back().n += e.numel();
            else
                parts_.push_back({e.offset, e.numel(), 0.0});
        }
        sq_.resize(parts_.size());
        ++layout_version_;
    }

    adamw_shard checked(adamw_shard s) const {
        require(s.offset >= 0 && s.count >= 0 && s.offset + s.count <= n_,
                "adamw: the share [{}, {}) is outside the buffer of {} parameters", s.offset, s.offset + s.count, n_);
        require(s.count == n_ || bool(s.gather), "adamw: a share of part of the buffer needs a gather");
        return s;
    }
    // New buffers of the share's size (a resize would keep a host vector's whole capacity).
    void zero_moments() {
        m_ = buffer<moment_type>();
        v_ = buffer<moment_type>();
        m_.resize(std::size_t(shard_.count));
        v_.resize(std::size_t(shard_.count));
        fill_zero(Backend{}, m_.data(), shard_.count);
        fill_zero(Backend{}, v_.data(), shard_.count);
    }
    // This rank's share of a buffer as the whole buffer on the host: a copy, or sharded, the shares gathered on
    // the root (empty elsewhere).
    std::vector<moment_type> whole_on_host(std::span<const moment_type> share) const {
        std::vector<moment_type> mine = detail::to_host(Backend{}, share);
        if (!sharded()) return mine;
        const std::vector<std::byte> all = shard_.gather(std::as_bytes(std::span<const moment_type>(mine)));
        if (!shard_.root) return {};
        require(all.size() == std::size_t(n_) * sizeof(moment_type),
                "adamw: the ranks' shares hold {} bytes, the buffer of {} parameters {}", all.size(), n_,
                std::size_t(n_) * sizeof(moment_type));
        std::vector<moment_type> whole(static_cast<std::size_t>(n_));
        std::memcpy(whole.data(), all.data(), all.size());
        return whole;
    }

    parameter_table table_;
    adamw_options opt_;
    std::int64_t n_;      // parameters in the buffer
    adamw_shard shard_;   // this optimizer's share: all of it unless set_shard
    buffer<moment_type> m_, v_;   // (shard_.count)
    buffer<moment_type> master_;  // (shard_.count) fp32 master weights, mixed precision only
    buffer<adamw_step_values> values_;  // (1) this step's rate and bias corrections
    buffer<double> sq_;                 // (parts) Σ g² of each part of the trainable gradients
    std::vector<adamw_run> runs_, parts_;
    std::vector<bool> frozen_;  // (table entries) set_trainable's; empty: every tensor trains
    int t_ = 0;
    int layout_version_ = 0;
};

}  // namespace sgt
