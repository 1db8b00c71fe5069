// sgt/train/trainer.hpp: one training step of any model under any loop schedule, and evaluation.
//
// A step t (counting from 1) runs the schedule's current plan Θ_t: forward, backward, global-norm clipping,
// AdamW at the cosine schedule's rate, then the schedule's end_step(t, entropies) (Algorithm 1 for SGT), whose
// new structure applies from step t + 1. FLOPs are counted per step with the plan that ran (spec Sec. 6).
// The training loop itself (data, logging, checkpoints) belongs to the program: see examples/train.cpp.
#pragma once

#include <chrono>
#include <cmath>
#include <span>
#include <vector>

#include "sgt/data/batch.hpp"
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

    trainer(Model& m, Schedule& s, const cosine_schedule& lr, const adamw_options& o, int batch, int seq)
        : model_(m), schedule_(s), lr_(lr), opt_(m.parameter_table(), std::int64_t(m.parameters().size()), o),
          flops_(Model::shape, batch, seq,
                 [&m](std::int64_t B, int T, const loop_plan& p) { return m.step_flops(B, T, p); }) {
        lr_.validate();
    }

    step_stats step(const batch& b) {
        const auto start = std::chrono::steady_clock::now();
        step_stats r;
        r.step = ++t_;
        const loop_plan plan = schedule_.plan();
        model_.set_training(true);
        model_.zero_grad();
        r.loss = model_.forward(b, plan);
        require(std::isfinite(r.loss), "training: the loss is not finite ({}) at step {}", r.loss, t_);
        model_.backward();
        r.grad_norm = opt_.clip_gradients(model_.gradients());
        require(std::isfinite(r.grad_norm), "training: the gradient norm is not finite ({}) at step {}", r.grad_norm,
                t_);
        r.lr = lr_(t_);
        opt_.step(model_.parameters(), model_.gradients(), r.lr);
        r.events = schedule_.end_step(t_, model_.entropies());
        r.flops = model_.step_flops(b.B, b.T, plan);
        flops_.add(plan);
        r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        seconds_ += r.seconds;
        return r;
    }

    // Mean loss over the counted targets of all batches, under the current structure, dropout off.
    // on_batch(b, logits) is called after each batch's forward, with its (B, T, V) logits (e.g. for accuracy).
    template <class OnBatch = void (*)(const batch&, std::span<const value_type>)>
    double evaluate(const std::vector<batch>& batches,
                    OnBatch on_batch = [](const batch&, std::span<const value_type>) {}) {
        model_.set_training(false);
        double sum = 0.0;
        std::int64_t count = 0;
        for (const auto& b : batches) {
            model_.forward(b, schedule_.plan());
            sum += model_.last_loss().sum;
            count += model_.last_loss().count;
            on_batch(b, model_.logits());
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

    int steps() const { return t_; }
    double seconds() const { return seconds_; }
    const flops_counter& flops() const { return flops_; }
    adamw<value_type, typename Model::backend_type>& optimizer() { return opt_; }
    Model& model() { return model_; }
    Schedule& schedule() { return schedule_; }
    const cosine_schedule& lr_schedule() const { return lr_; }

private:
    Model& model_;
    Schedule& schedule_;
    cosine_schedule lr_;
    adamw<value_type, typename Model::backend_type> opt_;
    flops_counter flops_;
    int t_ = 0;
    double seconds_ = 0.0;
};

}  // namespace sgt
