// The trainer: a step runs the schedule's plan and feeds the entropies back (Algorithm 1 sees them), counts the
// FLOPs of the plan that ran, reproduces bit for bit from the same seed, and stops on a non-finite loss.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "sgt/sgt.hpp"
#include "support.hpp"

using namespace sgt;
using test::tiny_bytes;
using tiny_model = model<float, tiny_bytes>;

namespace {
std::vector<double> run(std::uint64_t seed, int steps, double dropout) {
    tiny_model m(4, 16, seed);
    m.set_dropout(dropout);
    growth_options o = growth_options::from_budget(tiny_bytes.loops);
    o.t_start = 3;
    o.dt = 2;
    growth_operator<> g(tiny_model::shape, o);
    trainer tr(m, g, cosine_schedule{.lr_max = 1e-2, .warmup = 2, .total = steps}, adamw_options{}, 4, 16);
    k_hop_dataset data(k_hop_options{.symbols = 2});
    rng r(seed);
    std::vector<double> losses;
    for (int t = 0; t < steps; ++t) losses.push_back(tr.step(data.train_batch(r, 4, 16)).loss);
    return losses;
}
}  // namespace

TEST_CASE("a run is reproducible bit for bit from its seed, dropout included") {
    const auto a = run(5, 12, 0.1), b = run(5, 12, 0.1), c = run(6, 12, 0.1);
    CHECK(a == b);
    CHECK(a != c);
}

TEST_CASE("the trainer applies growth from the next step and counts the FLOPs of the plan that ran") {
    tiny_model m(2, 16, 1);
    growth_options o = growth_options::from_budget(tiny_bytes.loops);
    o.t_start = 2;
    o.dt = 2;
    o.transition = growth_transition::hard;
    growth_operator<> g(tiny_model::shape, o);
    trainer tr(m, g, cosine_schedule{.lr_max = 1e-3, .warmup = 1, .total = 10}, adamw_options{}, 2, 16);
    k_hop_dataset data(k_hop_options{.symbols = 2});
    rng r(1);
    const double vanilla = step_flops(tiny_model::shape, 2, 16, loop_plan::vanilla(tiny_model::NL));
    auto s1 = tr.step(data.train_batch(r, 2, 16));
    CHECK(s1.events.empty());
    CHECK(s1.flops == doctest::Approx(vanilla));
    auto s2 = tr.step(data.train_batch(r, 2, 16));
    REQUIRE(s2.events.size() == 1);  // t_start = 2: the deepest eligible layer is activated with K = 1
    CHECK(s2.events[0].kind == growth_event_kind::activate);
    CHECK(s2.flops == doctest::Approx(vanilla));  // the new structure applies from step 3
    auto s3 = tr.step(data.train_batch(r, 2, 16));
    CHECK(s3.flops > vanilla);
    CHECK(s3.flops == doctest::Approx(step_flops(tiny_model::shape, 2, 16, g.plan())));
    CHECK(tr.flops().total() == doctest::Approx(s1.flops + s2.flops + s3.flops));
}

TEST_CASE("a non-finite loss stops training with an sgt::error naming the step") {
    tiny_model m(2, 16, 1);
    vanilla_schedule v(tiny_model::NL);
    trainer tr(m, v, cosine_schedule{.lr_max = 1e-3, .warmup = 1, .total = 10}, adamw_options{}, 2, 16);
    k_hop_dataset data(k_hop_options{.symbols = 2});
    rng r(1);
    tr.step(data.train_batch(r, 2, 16));
    for (auto& w : m.parameter("lm_head.weight")) w = std::numeric_limits<float>::quiet_NaN();
    const std::vector<float> before(m.parameters().begin(), m.parameters().end());
    CHECK_THROWS_WITH_AS(tr.step(data.train_batch(r, 2, 16)), "training: the loss is not finite (nan) at step 2",
                         sgt::error);
    // Nothing was updated: the NaN gradients' norm stops the update (compared as bits, NaN included).
    CHECK(std::memcmp(before.data(), m.parameters().data(), before.size() * sizeof(float)) == 0);
}

namespace {
template <class Trainer>
std::string error_of_step(Trainer& t) {
    try {
        t.step(std::span<const batch>());
    } catch (const sgt::error& e) {
        return e.what();
    }
    return "";
}
// B sequences of random tokens whose targets are ignored with probability `ignore`, so that micro-batches
// count different numbers of targets.
batch random_batch_ignoring(rng& r, int B, int T, int V, double ignore) {
    batch b{B, T, {}, {}};
    for (int i = 0; i < B * T; ++i) {
        b.inputs.push_back(std::int32_t(r.below(V)));
        b.targets.push_back(r.uniform() < ignore ? ignore_target : std::int32_t(r.below(V)));
    }
    return b;
}
batch concatenate(const std::vector<batch>& parts) {
    batch all{0, parts.front().T, {}, {}};
    for (const auto& p : parts) {
        all.B += p.B;
        all.inputs.insert(all.inputs.end(), p.inputs.begin(), p.inputs.end());
        all.targets.insert(all.targets.end(), p.targets.begin(), p.targets.end());
    }
    return all;
}
double max_abs_diff(std::span<const double> a, std::span<const double> b) {
    REQUIRE(a.size() == b.size());
    double m = 0.0;
    for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
    return m;
}
}  // namespace

TEST_CASE("gradient accumulation: 4 micro-batches of B give the loss, gradients and entropies of one batch of 4B") {
    using double_model = model<double, tiny_bytes>;
    constexpr int B = 2, T = 16, N = 4;
    rng r(11);
    std::vector<batch> micro;
    for (int i = 0; i < N; ++i) micro.push_back(random_batch_ignoring(r, B, T, double_model::V, 0.15 + 0.2 * i));
    std::vector<std::int64_t> counts;
    for (const auto& b : micro) counts.push_back(std::count_if(b.targets.begin(), b.targets.end(), [](auto y) { return y >= 0; }));
    REQUIRE(counts[0] != counts[3]);  // unequal counts: a plain mean of the micro-batch means would be wrong
    const batch whole = concatenate(micro);

    // A plan with loops, a fade step and a block loop, so that every kind of pass accumulates.
    loop_plan plan = loop_plan::vanilla(double_model::NL);
    plan.layers[1] = layer_loop{.k = 1, .heads = {0, 3}, .fade = 0.5};
    plan.layers[2].block_repeat = 2;
    plan.layers[3] = layer_loop{.k = 2, .heads = {1, 2}};
    const adamw_options no_clip{.clip = 0.0};
    const cosine_schedule lr{.lr_max = 1e-2, .warmup = 1, .total = 10};

    double_model one(N * B, T, 3), acc(B, T, 3);
    static_schedule s_one(plan, double_model::NH), s_acc(plan, double_model::NH);
    trainer t_one(one, s_one, lr, no_clip, N * B, T), t_acc(acc, s_acc, lr, no_clip, N * B, T);
    for (int step = 0; step < 2; ++step) {  // the second step starts from the weights the first one updated
        const step_stats a = t_one.step(whole);
        const step_stats b = t_acc.step(std::span<const batch>(micro));
        CHECK(std::abs(a.loss - b.loss) <= 1e-12 * std::abs(a.loss));
        CHECK(max_abs_diff(one.gradients(), acc.gradients()) <= 1e-12);
        CHECK(max_abs_diff(one.parameters(), acc.parameters()) <= 1e-12);
        CHECK(std::abs(a.grad_norm - b.grad_norm) <= 1e-12 * a.grad_norm);
        CHECK(a.flops == doctest::Approx(b.flops).epsilon(1e-15));
        const auto &ea = t_one.entropies(), &eb = t_acc.entropies();
        CHECK(max_abs_diff(ea.first_pass, eb.first_pass) <= 1e-12);
        for (std::size_t i = 0; i < ea.last_loop.size(); ++i) {
            CHECK(std::isnan(ea.last_loop[i]) == std::isnan(eb.last_loop[i]));
            if (!std::isnan(ea.last_loop[i])) CHECK(std::abs(ea.last_loop[i] - eb.last_loop[i]) <= 1e-12);
        }
    }
    // The mean over all counted targets, not the mean of the micro-batch means.
    double plain_mean = 0.0;
    for (const auto& b : micro) {
        double_model fresh(B, T, 3);
        fresh.forward(b, plan);
        plain_mean += fresh.last_loss().mean() / N;
    }
    double_model fresh(N * B, T, 3);
    CHECK(std::abs(fresh.forward(whole, plan) - plain_mean) > 1e-6);
    CHECK(t_one.flops().total() == doctest::Approx(t_acc.flops().total()).epsilon(1e-15));
    CHECK(error_of_step(t_acc).find("a step needs at least one micro-batch, found none") != std::string::npos);
}
