// Tests of the baselines as loop schedules (schedule.hpp, spec Sec. 5): one training loop runs them all.
#include <doctest/doctest.h>

#include "support.hpp"

#include <vector>

#include "sgt/schedule.hpp"

namespace {

constexpr int NL = 6;
constexpr int NH = 4;
using v = std::vector<int>;

// layer_report (support.hpp): layer l has mean m[l]; top-2 heads {0, 2}, bottom-2 {1, 3}.
sgt::entropy_report report(const std::vector<double>& m) {
    REQUIRE(int(m.size()) == NL);
    return sgt::test::layer_report(m);
}
// Layer 0 (excluded by default) highest; then 3 > 5 > 1 > 4 > 2.
const std::vector<double> mixed{0.99, 0.5, 0.2, 0.8, 0.4, 0.6};

// The one training loop: runs steps from..to of any schedule; returns the plan each step ran and the events.
template <sgt::loop_schedule S>
std::pair<std::vector<sgt::loop_plan>, std::vector<sgt::growth_event>> drive(S& s, int from, int to,
                                                                            const sgt::entropy_report& r) {
    std::vector<sgt::loop_plan> plans;
    std::vector<sgt::growth_event> events;
    for (int t = from; t <= to; ++t) {
        plans.push_back(s.plan());
        for (auto& e : s.end_step(t, r)) events.push_back(std::move(e));
    }
    return {plans, events};
}

sgt::loop_plan plan_with(int layer, sgt::layer_loop x) {
    auto p = sgt::loop_plan::vanilla(NL);
    p.layers[layer] = std::move(x);
    return p;
}

}  // namespace

static_assert(sgt::loop_schedule<sgt::growth_operator<>>);
static_assert(sgt::loop_schedule<sgt::growth_operator<sgt::random_h>>);
static_assert(sgt::resumable_schedule<sgt::head_loop_schedule<sgt::random_h>>);
static_assert(!sgt::loop_schedule<sgt::loop_plan>);

TEST_CASE("vanilla never loops") {
    sgt::vanilla_schedule s(NL);
    CHECK(s.name() == "vanilla");
    const auto [plans, events] = drive(s, 1, 30, report(mixed));
    CHECK(events.empty());
    for (const auto& p : plans) CHECK(p == sgt::loop_plan::vanilla(NL));
    sgt::vanilla_schedule copy(NL);
    copy.load_json(s.to_json());
    CHECK(copy.to_json() == s.to_json());
    CHECK_THROWS_WITH_AS(copy.end_step(30, report(mixed)),
                         "vanilla: expected step 31 (steps count from 1, one at a time), found 30", sgt::error);
    sgt::vanilla_schedule wrong(NL + 1);
    CHECK_THROWS_WITH_AS(wrong.load_json(s.to_json()), "vanilla schedule: expected 7 layers, found 6", sgt::error);
}

TEST_CASE("a static plan runs at every step and is validated") {
    const auto p = plan_with(2, {.k = 2, .heads = {1, 3}});
    sgt::static_schedule s(p, NH, "mine");
    CHECK(s.name() == "mine");
    const auto [plans, events] = drive(s, 1, 10, report(mixed));
    CHECK(events.empty());
    for (const auto& x : plans) CHECK(x == p);
    sgt::static_schedule copy(sgt::loop_plan::vanilla(NL), NH);
    copy.load_json(nlohmann::json::parse(s.to_json().dump()));
    CHECK(copy.plan() == p);
    CHECK(copy.name() == "mine");

    CHECK_THROWS_WITH_AS(sgt::static_schedule(plan_with(1, {.k = 1, .heads = {4}}), NH),
                         "loop plan: layer 1 loops head 4, out of range [0, 4)", sgt::error);
    CHECK_THROWS_WITH_AS(sgt::static_schedule(plan_with(1, {.k = 1, .heads = {2, 1}}), NH),
                         "loop plan: layer 1 heads must be ascending and unique", sgt::error);
    CHECK_THROWS_WITH_AS(sgt::static_schedule(plan_with(1, {.k = 1, .heads = {}}), NH),
                         "loop plan: layer 1 loops K = 1 times over no heads", sgt::error);
    CHECK_THROWS_WITH_AS(sgt::static_schedule(plan_with(1, {.k = 1, .heads = {0}, .fade = 1.5}), NH),
                         "loop plan: layer 1 has fade = 1.5, expected [0, 1]", sgt::error);
    CHECK_THROWS_WITH_AS(sgt::static_schedule(plan_with(1, {.block_repeat = 0}), NH),
                         "loop plan: layer 1 has block_repeat = 0, expected ≥ 1", sgt::error);
    CHECK_THROWS_WITH_AS(sgt::validate_plan(p, NL + 1, NH), "loop plan: expected 7 layers, found 6", sgt::error);
}

TEST_CASE("validate_plan within a loop budget: K <= K_max, block_repeat <= K_max + 1, at most L looping layers") {
    const sgt::loop_budget b{.h = 2, .L = 2, .k_max = 2};
    auto plan = [](std::initializer_list<std::pair<int, sgt::layer_loop>> layers) {
        sgt::loop_plan p = sgt::loop_plan::vanilla(NL);
        for (const auto& [l, lp] : layers) p.layers[std::size_t(l)] = lp;
        return p;
    };
    // At the budget: two layers, K = K_max over all heads (h bounds the growth operator's choice, not the model),
    // or a block applied K_max + 1 times.
    CHECK_NOTHROW(sgt::validate_plan(plan({{1, {.k = 2, .heads = {0, 1, 2, 3}}}, {5, {.k = 2, .heads = {0}}}}), NL, NH, b));
    CHECK_NOTHROW(sgt::validate_plan(plan({{2, {.block_repeat = 3}}, {4, {.k = 1, .heads = {3}}}}), NL, NH, b));
    CHECK(sgt::test::error_of([&] {
              sgt::validate_plan(plan({{1, {.k = 3, .heads = {0}}}}), NL, NH, b);
          }) == "loop plan: layer 1 has K = 3, expected K ≤ K_max = 2");
    CHECK(sgt::test::error_of([&] {
              sgt::validate_plan(plan({{2, {.block_repeat = 4}}}), NL, NH, b);
          }) == "loop plan: layer 2 has block_repeat = 4, expected ≤ K_max + 1 = 3 (the model's loop budget)");
    CHECK(sgt::test::error_of([&] {
              sgt::validate_plan(plan({{1, {.k = 1, .heads = {0}}}, {3, {.block_repeat = 2}}, {5, {.k = 2, .heads = {1}}}}),
                                 NL, NH, b);
          }) == "loop plan: 3 layers loop (1, 3, 5), expected at most L = 2 (the model's loop budget)");
}

TEST_CASE("attention loop: one layer, K loop steps over all heads") {
    auto s = sgt::attention_loop(NL, NH, 4, 2);
    CHECK(s.name() == "attention_loop");
    CHECK(s.plan() == plan_with(4, {.k = 2, .heads = {0, 1, 2, 3}}));
    CHECK_THROWS_WITH_AS(sgt::attention_loop(NL, NH, 6), "attention loop: layer 6 is out of range [0, 6)",
                         sgt::error);
    CHECK_THROWS_WITH_AS(sgt::attention_loop(NL, NH, 1, 0), "attention loop: expected K ≥ 1, found 0", sgt::error);
}

TEST_CASE("block loop over given layers repeats each block from step 1") {
    auto s = sgt::block_loop_schedule::given(NL, {4, 2});
    CHECK(s.name() == "block_loop");
    CHECK(s.looped_layers() == v{2, 4});
    auto expected = sgt::loop_plan::vanilla(NL);
    expected.layers[2].block_repeat = 2;
    expected.layers[4].block_repeat = 2;
    const auto [plans, events] = drive(s, 1, 300, report(mixed));
    CHECK(events.empty());
    for (const auto& p : plans) CHECK(p == expected);
    CHECK_THROWS_WITH_AS(sgt::block_loop_schedule::given(NL, {1, 1}), "block loop: layer 1 is listed twice",
                         sgt::error);
    CHECK_THROWS_WITH_AS(sgt::block_loop_schedule::given(NL, {9}), "block loop: layer 9 is out of range [0, 6)",
                         sgt::error);
    CHECK_THROWS_WITH_AS(sgt::block_loop_schedule::given(NL, {1}, 1),
                         "block loop: repeat must be at least 2 (1 is no loop), found 1", sgt::error);
}

TEST_CASE("block loop by entropy picks the top-L layers at the end of t_start") {
    auto s = sgt::block_loop_schedule::by_entropy(NL, 3, 20);
    const auto [plans, events] = drive(s, 1, 19, report(mixed));
    CHECK(events.empty());
    for (const auto& p : plans) CHECK(p == sgt::loop_plan::vanilla(NL));  // steps 1..19
    const auto at20 = s.end_step(20, report(mixed));
    // Non-excluded layers by Ē: 3 (0.8), 5 (0.6), 1 (0.5): C = {3, 5, 1}; layer 0 (0.99) is excluded.
    REQUIRE(at20.size() == 3);
    CHECK(at20[0].layer == 1);
    CHECK(at20[1].layer == 3);
    CHECK(at20[2].layer == 5);
    CHECK(at20[0].kind == sgt::growth_event_kind::activate_block);
    CHECK(at20[0].block_repeat == 2);
    CHECK(at20[0].candidates == v{3, 5, 1});
    CHECK(at20[0].candidate_entropy[0] == doctest::Approx(0.8));
    CHECK(at20[1].head_entropy[0] == doctest::Approx(0.82));
    CHECK(s.looped_layers() == v{1, 3, 5});
    auto expected = sgt::loop_plan::vanilla(NL);
    for (int l : {1, 3, 5}) expected.layers[l].block_repeat = 2;
    CHECK(s.plan() == expected);  // from step 21

    auto copy = sgt::block_loop_schedule::by_entropy(NL, 3, 20);
    copy.load_json(nlohmann::json::parse(s.to_json().dump()));
    CHECK(copy.plan() == expected);
    const auto later = drive(copy, 21, 40, report({0.99, 0.1, 0.9, 0.1, 0.9, 0.1}));
    CHECK(later.second.empty());  // chosen once, kept for all of training
    CHECK(copy.plan() == expected);

    CHECK_THROWS_WITH_AS(sgt::block_loop_schedule::by_entropy(NL, 6, 20),
                         "block loop: L must be in [1, 5] (the layers not excluded), found 6", sgt::error);
    CHECK_THROWS_WITH_AS(sgt::block_loop_schedule::by_entropy(NL, 2, 0), "block loop: t_start must be at least 1, found 0",
                         sgt::error);
}

TEST_CASE("entropy head loop on one layer: top-h or bottom-h at the end of t_start") {
    const sgt::head_loop_options o{.layer = 3, .h = 2, .k = 1, .t_start = 10};
    sgt::head_loop_schedule<sgt::top_h> high(NL, NH, o);
    sgt::head_loop_schedule<sgt::bottom_h> low(NL, NH, o);
    CHECK(high.name() == "head_loop(top_h)");
    CHECK(low.name() == "head_loop(bottom_h)");
    const auto [hp, he] = drive(high, 1, 20, report(mixed));
    const auto [lp, le] = drive(low, 1, 20, report(mixed));
    for (int t = 1; t <= 10; ++t) CHECK(hp[t - 1] == sgt::loop_plan::vanilla(NL));
    for (int t = 11; t <= 20; ++t) {
        CHECK(hp[t - 1] == plan_with(3, {.k = 1, .heads = {0, 2}}));
        CHECK(lp[t - 1] == plan_with(3, {.k = 1, .heads = {1, 3}}));
    }
    REQUIRE(he.size() == 1);
    CHECK(he[0].step == 10);
    CHECK(he[0].kind == sgt::growth_event_kind::activate);
    CHECK(he[0].layer == 3);
    CHECK(he[0].heads == v{0, 2});
    CHECK(he[0].head_entropy[1] == doctest::Approx(0.78));

    // Before the selection the release computes all heads: that is what Table 2's FLOPs count.
    sgt::head_loop_schedule<> before_all(NL, NH, {.layer = 3, .t_start = 10, .before = sgt::before_selection::all_heads});
    CHECK(before_all.plan() == plan_with(3, {.k = 1, .heads = {0, 1, 2, 3}}));

    CHECK_THROWS_WITH_AS(sgt::head_loop_schedule<>(NL, NH, {.layer = 3, .h = 5}),
                         "head loop: h must be in [1, 4] (the head count), found 5", sgt::error);
    CHECK_THROWS_WITH_AS(sgt::head_loop_schedule<>(NL, NH, {.layer = -1}), "head loop: layer -1 is out of range [0, 6)",
                         sgt::error);
}

TEST_CASE("head loop with a random policy resumes from JSON") {
    const sgt::head_loop_options o{.layer = 2, .h = 2, .t_start = 5};
    sgt::head_loop_schedule<sgt::random_h> s(NL, NH, o, sgt::random_h(3));
    drive(s, 1, 7, report(mixed));
    REQUIRE(s.selected().size() == 2);
    sgt::head_loop_schedule<sgt::random_h> copy(NL, NH, {.layer = 0}, sgt::random_h(99));
    copy.load_json(nlohmann::json::parse(s.to_json().dump()));
    CHECK(copy.selected() == s.selected());
    CHECK(copy.plan() == s.plan());
    CHECK(copy.to_json() == s.to_json());
    sgt::head_loop_schedule<sgt::top_h> other(NL, NH, o);
    CHECK_THROWS_WITH_AS(other.load_json(s.to_json()), "head loop: expected allocation policy top_h, found random_h",
                         sgt::error);
}

TEST_CASE("the growth operator runs in the same loop") {
    sgt::growth_options go;
    go.t_start = 4;
    go.dt = 2;
    go.L = 2;
    go.k_max = 1;
    sgt::growth_operator<> g(NL, NH, go);
    const auto [plans, events] = drive(g, 1, 10, report(mixed));
    // C = {3, 5}: D2S activates 5 at the end of 4, then 3 at the end of 6 (and fixes).
    CHECK(plans[3] == sgt::loop_plan::vanilla(NL));
    CHECK(plans[4].layers[5].k == 1);
    CHECK(plans[4].layers[5].fade == 1.0);
    CHECK(plans[9].layers[3] == sgt::layer_loop{.k = 1, .heads = {0, 2}});
    CHECK(g.state().phase == sgt::growth_phase::fixed);
    CHECK(g.to_json().at("schedule") == "sgt");
    CHECK(!events.empty());
}
