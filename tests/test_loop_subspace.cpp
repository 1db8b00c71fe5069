// Loop steps computed in the looped heads' subspace (loop_subspace.hpp) against the same steps run one by one
// through attention.hpp, in double: the loss, every gradient, the entropies and every pass's q, k, v; finite
// differences through the subspace form; when a run is taken and when not; reserve() sizing the runs.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>

#include "gradcheck.hpp"
#include "support.hpp"
#include "sgt/model.hpp"

using namespace sgt;
using tiny_model = model<double, presets::tiny>;  // 4 heads of 8, width 32: runs over one head (3m ≤ C)

namespace {

loop_plan plan_with(std::initializer_list<std::pair<int, layer_loop>> layers) {
    loop_plan p = loop_plan::vanilla(tiny_model::NL);
    for (const auto& [l, lp] : layers) p.layers[l] = lp;
    return p;
}

// A model far from its init (weights x 8, norm weights off 1) so that every term of the update matters.
tiny_model make_model(bool subspace, const sigma_reparam_options& sigma = {}) {
    tiny_model m(2, 12, 21, {}, sigma);
    m.set_loop_subspace(subspace);
    rng r(4);
    for (const auto& e : m.parameter_table())
        for (auto& w : m.parameter(e.name)) w = e.decay ? 8.0 * w : 1.0 + 0.3 * r.normal();
    return m;
}

double max_abs(const std::vector<double>& v) {
    double x = 0.0;
    for (double e : v) x = std::max(x, std::abs(e));
    return x;
}

struct outcome {
    double loss = 0.0;
    std::vector<double> grads, qkv, entropies;
    int runs = 0;
};

outcome run(tiny_model& m, const batch& b, const loop_plan& plan) {
    outcome o;
    m.zero_grad();
    o.loss = m.forward(b, plan);
    m.backward();
    o.grads = m.gradients_to_host();
    o.runs = m.subspace_runs();
    for (const auto& p : m.attention_passes()) {
        const auto& q = p.record->qkv;
        o.qkv.insert(o.qkv.end(), q.data(), q.data() + std::int64_t(b.B) * b.T * 3 * p.record->n() * tiny_model::HD);
    }
    for (const auto* e : {&m.entropies().first_pass, &m.entropies().last_loop}) o.entropies.insert(o.entropies.end(), e->begin(), e->end());
    return o;
}

// The subspace form against the step-by-step one: `runs` runs taken, results equal to rounding.
void check_same(const loop_plan& plan, int runs, const std::string& what, const sigma_reparam_options& sigma = {}) {
    CAPTURE(what);
    const batch b = test::random_batch(2, 12, tiny_model::V, 9);
    auto direct = make_model(false, sigma), sub = make_model(true, sigma);
    const outcome x = run(direct, b, plan), y = run(sub, b, plan);
    CHECK(x.runs == 0);
    CHECK(y.runs == runs);
    CHECK(std::abs(x.loss - y.loss) <= 1e-12 * std::abs(x.loss));
    REQUIRE(x.grads.size() == y.grads.size());
    const double g = max_abs(x.grads);
    for (std::size_t i = 0; i < x.grads.size(); ++i)
        if (std::abs(x.grads[i] - y.grads[i]) > 1e-11 * g) {
            FAIL_CHECK("gradient " << i << ": " << x.grads[i] << " step by step, " << y.grads[i] << " in the subspace");
            break;
        }
    REQUIRE(x.qkv.size() == y.qkv.size());
    const double q = max_abs(x.qkv);
    for (std::size_t i = 0; i < x.qkv.size(); ++i) REQUIRE(std::abs(x.qkv[i] - y.qkv[i]) <= 1e-12 * q);
    REQUIRE(x.entropies.size() == y.entropies.size());
    for (std::size_t i = 0; i < x.entropies.size(); ++i) {  // NaN where a layer has no such pass
        CHECK(std::isnan(x.entropies[i]) == std::isnan(y.entropies[i]));
        if (!std::isnan(x.entropies[i])) CHECK(std::abs(x.entropies[i] - y.entropies[i]) <= 1e-12);
    }
}

}  // namespace

TEST_CASE("loop steps in the subspace equal the steps one by one (double)") {
    for (int k = 2; k <= 3; ++k)
        for (int h = 0; h < 4; ++h)
            check_same(plan_with({{2, layer_loop{.k = k, .heads = {h}}}}), 1, fmt::format("K={} S={{{}}}", k, h));
    check_same(plan_with({{0, layer_loop{.k = 3, .heads = {2}}}}), 1, "first layer");
    check_same(plan_with({{1, layer_loop{.k = 2, .heads = {3}}}, {2, layer_loop{.k = 3, .heads = {0}}},
                          {3, layer_loop{.k = 3, .heads = {2}}}}),
               3, "three looped layers");
    // Fade: step 1 runs all heads (one by one), steps 2..K over S form the run.
    check_same(plan_with({{2, layer_loop{.k = 3, .heads = {3}, .fade = 0.4}}}), 1, "fade, K=3");
    check_same(plan_with({{2, layer_loop{.k = 2, .heads = {3}, .fade = 0.4}}}), 0, "fade, K=2: one step over S");
    // Block Loop with loops: a run in each application of the block.
    check_same(plan_with({{1, layer_loop{.k = 2, .heads = {0}, .block_repeat = 2}}}), 2, "block loop with loops");
    check_same(plan_with({{2, layer_loop{.k = 3, .heads = {2}}}}), 1, "with σReparam",
               sigma_reparam_options{.enabled = true});
}

TEST_CASE("where a run is not taken") {
    // One step (nothing to save), or more heads than a third of the width: step by step.
    check_same(plan_with({{2, layer_loop{.k = 1, .heads = {1}}}}), 0, "K=1");
    check_same(plan_with({{2, layer_loop{.k = 3, .heads = {0, 3}}}}), 0, "|S|=2 of 4");
    check_same(plan_with({{2, layer_loop{.k = 2, .heads = {0, 1, 2, 3}}}}), 0, "Attention Loop");
    // Dropout changes x between the steps: step by step.
    auto m = make_model(true);
    m.set_dropout(0.1);
    const batch b = test::random_batch(2, 12, tiny_model::V, 9);
    m.forward(b, plan_with({{2, layer_loop{.k = 3, .heads = {1}}}}));
    CHECK(m.subspace_runs() == 0);
    m.set_training(false);  // no dropout outside training
    m.forward(b, plan_with({{2, layer_loop{.k = 3, .heads = {1}}}}));
    CHECK(m.subspace_runs() == 1);
}

TEST_CASE("whole-model gradient through loop steps in the subspace (finite differences)") {
    for (const auto& [plan, what] :
         {std::pair{plan_with({{2, layer_loop{.k = 3, .heads = {3}}}}), "K=3 S={3}"},
          std::pair{plan_with({{1, layer_loop{.k = 3, .heads = {2}, .fade = 0.6}}, {3, layer_loop{.k = 2, .heads = {1}}}}),
                    "fade and a second layer"}}) {
        tiny_model m(2, 8, 7);
        REQUIRE(m.loop_subspace());
        rng r(11);
        for (const auto& e : m.parameter_table())
            for (auto& w : m.parameter(e.name)) w = e.decay ? 10.0 * w : 1.0 + 0.2 * r.normal();
        batch b = test::random_batch(2, 8, tiny_model::V, 3);
        b.targets[3] = ignore_target;
        std::vector<std::string> every_tensor;
        for (const auto& e : m.parameter_table()) every_tensor.push_back(e.name);
        m.forward(b, plan);
        CHECK(m.subspace_runs() >= 1);
        test::check_named_gradients(m, b, plan, every_tensor, what, 25);
    }
}

TEST_CASE("reserve with subspace runs leaves the model as it was") {
    // reserve() also runs the budget's subspace plan (model::subspace_budget_plan); afterwards the weights are
    // unchanged, the gradients zero, and a step gives what a fresh model's does. (That it leaves nothing to allocate
    // is checked on the GPU, which counts device allocations: tests/gpu/test_cuda_model.cpp.)
    REQUIRE(tiny_model::budget.h == 2);
    auto m = make_model(true), fresh = make_model(true);
    REQUIRE(m.subspace_budget_plan().has_value());
    const auto before = m.parameters_to_host();
    m.reserve(tiny_model::budget_plan());
    CHECK(m.parameters_to_host() == before);
    CHECK(max_abs(m.gradients_to_host()) == 0.0);
    const batch b = test::random_batch(2, 12, tiny_model::V, 9);
    const loop_plan sgt_plan = plan_with({{1, layer_loop{.k = 3, .heads = {2}}}, {2, layer_loop{.k = 3, .heads = {1}}},
                                          {3, layer_loop{.k = 3, .heads = {0}}}});
    const outcome x = run(m, b, sgt_plan), y = run(fresh, b, sgt_plan);
    CHECK(x.runs == 3);
    CHECK(x.loss == y.loss);
    CHECK(x.grads == y.grads);
    CHECK_FALSE(make_model(false).subspace_budget_plan().has_value());
}
