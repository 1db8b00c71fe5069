// sgt/train/trainer.hpp: one training step of any model under any loop schedule, and evaluation.
//
// A step t (counting from 1) runs the schedule's current plan Θ_t: forward, backward, global-norm clipping,
// AdamW at the cosine schedule's rate, then the schedule's end_step(t, entropies) (Algorithm 1 for SGT), whose
// new structure applies from step t + 1. FLOPs are counted per step with the plan that ran (spec Sec. 6).
// On a GPU, a one-batch step (forward, backward, clipping and update) is recorded as a CUDA graph once the plan
// and the batch shape repeat, and replayed after that (set_graphs; model::replayable says which models allow it):
// the host reads the loss, the entropies and the gradient norm once, after the whole step.
// With set_data_parallel, a step of one of several processes is the step of one process over their global batch
// (dist/data_parallel.hpp); with a sharded optimizer (ZeRO-1) each rank updates its share of the weights and the
// ranks exchange them after the update. The exchanges of a sync that allows it (gradient_sync::replayable, as
// NCCL's does) are recorded into the step's graph with the rest. The training loop itself (data, logging,
// checkpoints) belongs to the program: see examples/train.cpp.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <span>
#include <type_traits>
#include <vector>

#include "sgt/core/step_graph.hpp"
#include "sgt/data/batch.hpp"
#include "sgt/dist/gradient_sync.hpp"
#include "sgt/flops.hpp"
#include "sgt/growth.hpp"
#include "sgt/schedule.hpp"
#include "sgt/train/adamw.hpp"
#include "sgt/train/lr_schedule.hpp"

namespace sgt {

struct step_stats {
    int step = 0;
    double loss = 0.0;
    double grad_norm = 0.0;  // before clipping
    double lr = 0.0;
    double flops = 0.0;      // of this step
    double seconds = 0.0;    // wall time of this step
    std::vector<growth_event> events;  // changes decided at the end of this step
};

template <class Model, loop_schedule Schedule>
class trainer {
public:
    using value_type = typename Model::value_type;

    // sync, shard_optimizer: as set_data_parallel's; given here, a sharded optimizer never holds the whole state.
    trainer(Model& m, Schedule& s, const cosine_schedule& lr, const adamw_options& o, int batch, int seq,
            dist::gradient_sync<typename Model::value_type, typename Model::backend_type>* sync = nullptr,
            bool shard_optimizer = false)
        : model_(m), schedule_(s), lr_(lr),
          opt_(m.parameter_table(), std::int64_t(m.parameters().size()), o,
               sync && shard_optimizer ? std::optional(share_of(*sync, std::int64_t(m.parameters().size())))
                                       : std::nullopt),
          flops_(Model::shape, batch, seq,
                 [&m](std::int64_t B, int T, const loop_plan& p) { return m.step_flops(B, T, p); }) {
        lr_.validate();
        if (sync) set_data_parallel(sync, shard_optimizer);
    }

    step_stats step(const batch& b) { return step(std::span<const batch>(&b, 1)); }

    // One optimizer step over micro-batches (gradient accumulation): the loss, the gradients and the entropies
    // are those of one batch made of all of them. Every micro-batch's summed loss is weighted by 1 / (targets
    // counted in all micro-batches), so the loss is the mean over all counted targets, as in one batch; the
    // entropies (batch means, Eq. 4) are averaged weighted by the micro-batches' sequence counts. The FLOPs
    // counter counts `batch` sequences per step (the constructor's): construct the trainer with the batch of a
    // whole step, micro-batch size × micro-batches.
    step_stats step(std::span<const batch> micro) {
        require(!micro.empty(), "training: a step needs at least one micro-batch, found none");
        const auto start = std::chrono::steady_clock::now();
        step_stats r;
        r.step = ++t_;
        const loop_plan plan = schedule_.plan();
        std::int64_t count = 0;  // counted targets of the whole step (of every rank)
        for (const auto& b : micro)
            for (const std::int32_t y : b.targets) count += y >= 0 ? 1 : 0;
        if (dp_) count = std::int64_t(sum_in_rank_order(dp_->all_gather(std::vector<double>{double(count)}), 1)[0]);
        model_.set_training(true);
        // Each micro-batch's summed loss is weighted by 1 / (all counted targets); known before the forward, so
        // the forward writes the cross-entropy's gradient in the same pass as its loss.
        const double scale = count > 0 ? 1.0 / double(count) : 0.0;
        r.lr = lr_(t_);
        opt_.begin_step(model_.parameters(), r.lr);
        double sum = 0.0;
        int sequences = 0;
        if (micro.size() == 1 && graphs_ && model_.replayable() && (!dp_ || dp_->replayable())) {
            // One batch: forward, backward and update (and a data-parallel step's exchanges) as one recorded
            // step, replayed while the plan, the batch shape, the count of targets (the backward's scale) and the
            // optimizer's trainable tensors stay those it was recorded with. The batch and the step's rate are
            // copied in before, the loss, the entropies and the gradient norm read after it.
            const batch& b = micro[0];
            const replay_key key{plan, b.B, b.T, count, opt_.layout_version()};
            if (!(key == replay_key_)) {
                graph_.reset();
                replay_key_ = key;
            }
            model_.stage_batch(b);
            graph_.run([&] {
                model_.zero_grad();
                model_.enqueue_forward(plan, scale);
                if (dp_)  // a replayable model adds no loss term (model::replayable)
                    backward_summed(scale);
                else
                    model_.backward(scale);
                update();
            });
            if (dp_) dp_->wait_step();  // before anything is read back: a failed rank is an error, not a hang
            replayed_ += graph_.captured() ? 1 : 0;
            model_.finish_forward();
            sum = model_.last_loss().sum;
            r.flops = model_.step_flops(std::int64_t(b.B) * (dp_ ? dp_->world() : 1), b.T, plan);
        } else {
            model_.zero_grad();
            for (const auto& b : micro) {
                model_.forward(b, plan, scale);
                require(micro.size() == 1 || model_.extra_loss() == 0.0,
                        "training: gradient accumulation over {} micro-batches with a variant that adds a loss term "
                        "({}) is not supported: the term's gradient would count once per micro-batch",
                        micro.size(), model_.extra_loss());
                sum += model_.last_loss().sum;
                if (dp_ && &b == &micro.back()) {  // the last backward sums the gradients over the ranks
                    require(model_.extra_loss() == 0.0,
                            "training: data parallelism with a variant that adds a loss term ({}) is not supported: "
                            "the term's gradient would count once per rank",
                            model_.extra_loss());
                    backward_summed(scale);
                } else {
                    model_.backward(scale);
                }
                if (micro.size() > 1) add_entropies(model_.entropies(), b.B, sequences == 0);
                sequences += b.B;
                r.flops += model_.step_flops(std::int64_t(b.B) * (dp_ ? dp_->world() : 1), b.T, plan);
            }
            update();
            if (dp_) dp_->wait_step();
        }
        if (micro.size() > 1)
            scale_entropies(1.0 / double(sequences));
        else
            entropy_ = model_.entropies();
        if (dp_) sum = combine_over_ranks(sum);
        // The mean cross-entropy over all counted targets, plus the variant's loss term (one micro-batch only). A
        // non-finite loss or norm stops training with the weights as they were: non-finite logits make non-finite
        // gradients, and the update writes nothing when their norm is not finite.
        r.loss = (count > 0 ? sum / double(count) : 0.0) + (micro.size() == 1 ? model_.extra_loss() : 0.0);
        require(std::isfinite(r.loss), "training: the loss is not finite ({}) at step {}", r.loss, t_);
        r.grad_norm = opt_.grad_norm();
        require(std::isfinite(r.grad_norm), "training: the gradient norm is not finite ({}) at step {}", r.grad_norm,
                t_);
        r.events = schedule_.end_step(t_, entropy_);
        flops_.add(plan);
        r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        seconds_ += r.seconds;
        return r;
    }

    // The entropies the schedule saw at the last step: the model's (one batch) or their average over the
    // micro-batches (empty before the first step).
    const entropy_report& entropies() const { return entropy_; }

    // Mean loss over the counted targets of all batches, under the current structure, dropout off.
    // on_batch(b, logits) is called after each batch's forward, with its (B, T, V) logits in host memory (e.g. for
    // accuracy); without it the logits are never formed whole (model::logits).
    struct no_logits {
        void operator()(const batch&, std::span<const value_type>) const {}
    };
    template <class OnBatch = no_logits>
    double evaluate(const std::vector<batch>& batches, OnBatch on_batch = {}) {
        model_.set_training(false);
        double sum = 0.0;
        std::int64_t count = 0;
        for (const auto& b : batches) {
            model_.forward(b, schedule_.plan());
            sum += model_.last_loss().sum;
            count += model_.last_loss().count;
            if constexpr (!std::is_same_v<OnBatch, no_logits>) on_batch(b, model_.logits());
        }
        model_.set_training(true);
        require(count > 0, "evaluation: the validation batches hold no counted target");
        return sum / double(count);
    }

    // The trainer's own counters, for checkpoints (io/checkpoint.hpp): step, wall time, FLOPs.
    struct counters {
        int step = 0;
        double seconds = 0.0;
        flops_counter flops;
    };
    nlohmann::json state_json() const { return {{"step", t_}, {"seconds", seconds_}, {"flops", flops_.to_json()}}; }
    // Validates state_json()'s output without changing the trainer; a malformed value throws sgt::error.
    counters parse_state_json(const nlohmann::json& j) const {
        constexpr std::string_view where = "trainer state";
        counters c{json_get<int>(j, "step", where), json_get<double>(j, "seconds", where), flops_};
        require(c.step >= 0 && c.seconds >= 0.0, "trainer state: expected step >= 0 and seconds >= 0, found {} and {}",
                c.step, c.seconds);
        require(j.contains("flops"), "trainer state: expected a field \"flops\", found none");
        c.flops.load_json(j.at("flops"));
        require(c.flops.steps() == c.step, "trainer state: the FLOPs counter holds {} steps, the trainer {}",
                c.flops.steps(), c.step);
        return c;
    }
    void set_state(counters c) {
        t_ = c.step;
        seconds_ = c.seconds;
        flops_ = std::move(c.flops);
    }
    void load_state_json(const nlohmann::json& j) { set_state(parse_state_json(j)); }

    // Whether a one-batch step of a model that allows it (model::replayable) is recorded once and replayed: on a
    // GPU, a CUDA graph of the forward and the backward, one launch instead of one per op (on by default; the
    // losses are bit-identical either way). No effect on the CPU.
    void set_graphs(bool on) {
        graphs_ = on;
        graph_.reset();
        replay_key_ = {};
    }

    // Data parallelism (dist/data_parallel.hpp): from the next step on, each step's batches are this rank's rows
    // of the global batch, and the step is that of one process over the global batch: the target count, the loss
    // and the entropies are combined over the ranks, the gradients summed (bucket by bucket during the backward),
    // so every rank takes the same step and the growth operator the same decision. nullptr: one process. The
    // sync must outlive the trainer's use of it. A one-batch step with a sync that allows it (NCCL's) is recorded
    // and replayed as a plain step is; with one that works through host memory it runs eagerly.
    // shard_optimizer (ZeRO-1, before the first step): each rank keeps AdamW's moments and master weights for its
    // share of the parameters only (dist::shard_of), updates that share and sends it to the others after the
    // update (gradient_sync::share_ranges), as PyTorch's ZeroRedundancyOptimizer does; the weights are those of
    // the unsharded step, bit for bit. Checkpoints then gather the shares: every rank calls save_checkpoint.
    void set_data_parallel(dist::gradient_sync<value_type, typename Model::backend_type>* sync,
                           bool shard_optimizer = false) {
        require(sync || !shard_optimizer, "training: a sharded optimizer (ZeRO-1) needs data parallelism");
        dp_ = sync;
        graph_.reset();
        replay_key_ = {};
        const std::int64_t n = std::int64_t(model_.parameters().size());
        shards_.clear();
        if (!shard_optimizer) {
            if (opt_.sharded()) opt_.set_shard({0, n, true, {}});
            return;
        }
        for (int r = 0; r < sync->world(); ++r) shards_.push_back(dist::shard_of(n, r, sync->world()));
        opt_.set_shard(share_of(*sync, n));
    }

    // Steps that ran as a replay of a recording (always 0 on the CPU).
    int replayed_steps() const { return replayed_; }

    int steps() const { return t_; }
    double seconds() const { return seconds_; }
    const flops_counter& flops() const { return flops_; }
    adamw<value_type, typename Model::backend_type>& optimizer() { return opt_; }
    Model& model() { return model_; }
    Schedule& schedule() { return schedule_; }
    const cosine_schedule& lr_schedule() const { return lr_; }

private:
    // The backward, each final range of the gradients summed over the ranks as the backward goes on.
    void backward_summed(double scale) {
        dp_->begin_backward(model_.gradients());
        model_.backward(scale, [this](std::int64_t o, std::int64_t n) { dp_->ready({o, n}); });
        dp_->end_backward();
    }
    // Clipping and AdamW; ZeRO-1: each rank updated its share, and every rank gets every share.
    void update() {
        opt_.update(model_.parameters(), model_.gradients());
        if (dp_ && opt_.sharded()) {
            const std::span<value_type> w = model_.parameters();
            dp_->share_ranges(w.data(), sizeof(value_type), shards_);
        }
    }
    // This rank's share of n parameters for a sharded optimizer, gathering through the sync.
    static adamw_shard share_of(dist::gradient_sync<value_type, typename Model::backend_type>& sync, std::int64_t n) {
        const dist::param_range mine = dist::shard_of(n, sync.rank(), sync.world());
        return {mine.offset, mine.count, sync.rank() == 0,
                [&sync](std::span<const std::byte> b) { return sync.gather_to_root(b); }};
    }
    // entropy_ (+)= weight × e, first pass and last loop step alike (NaN where a head did not loop stays NaN).
    void add_entropies(const entropy_report& e, int weight, bool first) {
        if (first) {
            if (entropy_.layers != e.layers || entropy_.heads != e.heads) entropy_ = entropy_report(e.layers, e.heads);
            std::fill(entropy_.first_pass.begin(), entropy_.first_pass.end(), 0.0);
            std::fill(entropy_.last_loop.begin(), entropy_.last_loop.end(), 0.0);
        }
        for (std::size_t i = 0; i < e.first_pass.size(); ++i) {
            entropy_.first_pass[i] += weight * e.first_pass[i];
            entropy_.last_loop[i] += weight * e.last_loop[i];
        }
    }
    // The sum over ranks of each of n values, from an all_gather's rank-major result, added in rank order.
    std::vector<double> sum_in_rank_order(const std::vector<double>& all, std::size_t n) const {
        std::vector<double> s(all.begin(), all.begin() + std::ptrdiff_t(n));
        for (std::size_t r = 1; r * n < all.size(); ++r)
            for (std::size_t i = 0; i < n; ++i) s[i] += all[r * n + i];
        return s;
    }
    // One gather for the step's results: returns the loss sum over the ranks, and makes entropy_ the mean over
    // ranks (each rank's batch mean over the same number of sequences, Eq. 4); the same on every rank. NaN (a
    // head that did not loop) stays NaN: the plan is the same on every rank.
    double combine_over_ranks(double loss_sum) {
        const std::size_t n = entropy_.first_pass.size();
        std::vector<double> mine{loss_sum};
        mine.insert(mine.end(), entropy_.first_pass.begin(), entropy_.first_pass.end());
        mine.insert(mine.end(), entropy_.last_loop.begin(), entropy_.last_loop.end());
        const std::vector<double> s = sum_in_rank_order(dp_->all_gather(mine), mine.size());
        for (std::size_t i = 0; i < n; ++i) {
            entropy_.first_pass[i] = s[1 + i] / double(dp_->world());
            entropy_.last_loop[i] = s[1 + n + i] / double(dp_->world());
        }
        return s[0];
    }
    void scale_entropies(double f) {
        for (double& v : entropy_.first_pass) v *= f;
        for (double& v : entropy_.last_loop) v *= f;
    }

    Model& model_;
    Schedule& schedule_;
    cosine_schedule lr_;
    adamw<value_type, typename Model::backend_type> opt_;
    flops_counter flops_;
    int t_ = 0;
    double seconds_ = 0.0;
    entropy_report entropy_;  // of the last step: the model's, or averaged over its micro-batches
    struct replay_key {
        loop_plan plan;
        int B = 0, T = 0;
        std::int64_t count = -1;
        int optimizer_layout = -1;
        bool operator==(const replay_key&) const = default;
    };
    dist::gradient_sync<value_type, typename Model::backend_type>* dp_ = nullptr;
    std::vector<dist::param_range> shards_;  // ZeRO-1: every rank's share of the parameters (empty: not sharded)
    bool graphs_ = true;
    int replayed_ = 0;
    step_graph<typename Model::backend_type> graph_;
    replay_key replay_key_;
};

}  // namespace sgt
