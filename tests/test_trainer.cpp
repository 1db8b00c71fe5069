// The trainer: a step runs the schedule's plan and feeds the entropies back (Algorithm 1 sees them), counts the
// FLOPs of the plan that ran, reproduces bit for bit from the same seed, and stops on a non-finite loss.
#include <doctest/doctest.h>

#include <cmath>

#include "sgt/sgt.hpp"

using namespace sgt;
// The tiny shape with a byte-sized vocabulary, for the k-hop task's ASCII tokens.
constexpr model_config tiny_bytes{
    .shape = {.layers = 4, .heads = 4, .head_dim = 8, .d_ff = 64, .vocab = 128, .max_seq = 32},
    .loops = presets::tiny.loops};
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
    CHECK_THROWS_WITH_AS(tr.step(data.train_batch(r, 2, 16)), "training: the loss is not finite (nan) at step 2",
                         sgt::error);
}
