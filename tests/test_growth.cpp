// Tests of the growth operator (growth.hpp, Algorithm 1) driven by scripted entropy sequences: every branch of
// Algorithm 1, the decision-step boundaries, D2S/S2D, excluded layers, ties, fade and hard transitions, the EMA,
// the release rules, JSON round trips and option validation.
#include <doctest/doctest.h>

#include "support.hpp"
#include <fmt/format.h>

#include <cmath>
#include <map>
#include <vector>

#include "sgt/growth.hpp"

namespace {

constexpr int NL = 8;
constexpr int NH = 4;
using v = std::vector<int>;
using kind = sgt::growth_event_kind;
using events_by_step = std::map<int, std::vector<sgt::growth_event>>;

// layer_report (support.hpp): layer l has mean m[l]; top-2 heads {0, 2}, bottom-2 {1, 3}.
sgt::entropy_report report(const std::vector<double>& m) {
    REQUIRE(int(m.size()) == NL);
    return sgt::test::layer_report(m);
}

// Entropy rising with depth; layer 0 (excluded by default) is the highest of all. Top-3 of layers 1..7: 7, 6, 5.
const std::vector<double> rising{0.99, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7};

sgt::growth_options small(int k_max) {
    sgt::growth_options o;
    o.t_start = 10;
    o.dt = 5;
    o.L = 3;
    o.k_max = k_max;
    o.h = 2;
    return o;
}

// Ends steps last_step+1 .. to with the same report; returns the events by step.
template <class Op>
events_by_step run_to(Op& op, int to, const sgt::entropy_report& r) {
    events_by_step out;
    for (int t = op.last_step() + 1; t <= to; ++t) {
        auto ev = op.end_step(t, r);
        for (const auto& e : ev) CHECK(e.step == t);
        if (!ev.empty()) out[t] = std::move(ev);
    }
    return out;
}

void check_event(const sgt::growth_event& e, int step, kind k, int layer, int depth, const v& heads) {
    CHECK(e.step == step);
    CHECK(e.kind == k);
    CHECK(e.layer == layer);
    CHECK(e.k == depth);
    CHECK(e.heads == heads);
}

std::vector<int> steps_of(const events_by_step& m) {
    std::vector<int> out;
    for (const auto& [t, e] : m) out.push_back(t);
    return out;
}

}  // namespace

TEST_CASE("warm-up is vanilla and no decision is taken before t_start") {
    sgt::growth_operator<> op(NL, NH, small(2));
    CHECK(op.plan() == sgt::loop_plan::vanilla(NL));
    CHECK(op.state().phase == sgt::growth_phase::warm_up);
    const auto ev = run_to(op, 9, report(rising));  // t_start - 1 = 9: no decision yet
    CHECK(ev.empty());
    CHECK(op.plan() == sgt::loop_plan::vanilla(NL));
    CHECK(op.state().phase == sgt::growth_phase::warm_up);
    CHECK(op.state().active.empty());
}

TEST_CASE("the growing layer stays in the pool: deepens to K_max, then the next layer; then fixed") {
    sgt::growth_operator<> op(NL, NH, small(2));
    const auto ev = run_to(op, 100, report(rising));
    // Decisions at 10, 15, ..., 35 (t_start + nΔt); after step 35 the structure is fixed. Fade windows end at
    // t_a + Δt: 15, 25, 35.
    CHECK(steps_of(ev) == v{10, 15, 20, 25, 30, 35});
    REQUIRE(ev.at(10).size() == 1);
    check_event(ev.at(10)[0], 10, kind::activate, 7, 1, {0, 2});
    REQUIRE(ev.at(15).size() == 2);
    check_event(ev.at(15)[0], 15, kind::fade_end, 7, 1, {0, 2});
    check_event(ev.at(15)[1], 15, kind::deepen, 7, 2, {0, 2});
    REQUIRE(ev.at(20).size() == 1);
    check_event(ev.at(20)[0], 20, kind::activate, 6, 1, {0, 2});  // 7 is at K_max: max{l ∈ C, l < 7} = 6
    REQUIRE(ev.at(25).size() == 2);
    check_event(ev.at(25)[1], 25, kind::deepen, 6, 2, {0, 2});
    check_event(ev.at(30)[0], 30, kind::activate, 5, 1, {0, 2});
    REQUIRE(ev.at(35).size() == 3);
    check_event(ev.at(35)[0], 35, kind::fade_end, 5, 1, {0, 2});
    check_event(ev.at(35)[1], 35, kind::deepen, 5, 2, {0, 2});
    check_event(ev.at(35)[2], 35, kind::fix, 5, 2, {0, 2});

    // The events carry what caused them: C (highest first, layer 0 excluded although it is the highest), its
    // layer entropies, and the head entropies of the layer.
    const auto& a = ev.at(10)[0];
    CHECK(a.candidates == v{7, 6, 5});
    REQUIRE(a.candidate_entropy.size() == 3);
    CHECK(a.candidate_entropy[0] == doctest::Approx(0.7));
    CHECK(a.candidate_entropy[1] == doctest::Approx(0.6));
    CHECK(a.candidate_entropy[2] == doctest::Approx(0.5));
    REQUIRE(a.head_entropy.size() == NH);
    CHECK(a.head_entropy[0] == doctest::Approx(0.72));
    CHECK(a.head_entropy[1] == doctest::Approx(0.68));
    CHECK(a.head_entropy[3] == doctest::Approx(0.69));

    const auto& s = op.state();
    CHECK(s.phase == sgt::growth_phase::fixed);
    CHECK(s.active == v{7, 6, 5});
    CHECK(s.growing == 5);
    CHECK(s.k == v{0, 0, 0, 0, 0, 2, 2, 2});
    CHECK(s.activated_at == v{0, 0, 0, 0, 0, 30, 20, 10});
    sgt::loop_plan expected = sgt::loop_plan::vanilla(NL);
    for (int l : {5, 6, 7}) expected.layers[l] = {.k = 2, .heads = {0, 2}, .fade = 0.0, .block_repeat = 1};
    CHECK(op.plan() == expected);
}

TEST_CASE("decisions fall exactly on t_start + nΔt") {
    sgt::growth_operator<> op(NL, NH, small(3));
    run_to(op, 9, report(rising));
    CHECK(op.end_step(10, report(rising)).size() == 1);  // t_start
    run_to(op, 13, report(rising));
    CHECK(op.end_step(14, report(rising)).empty());  // t_start + Δt - 1
    CHECK(op.state().k[7] == 1);
    const auto at15 = op.end_step(15, report(rising));  // t_start + Δt
    REQUIRE(at15.size() == 2);
    CHECK(at15[1].kind == kind::deepen);
    CHECK(op.state().k[7] == 2);
    const auto between = run_to(op, 19, report(rising));
    CHECK(between.empty());
}

TEST_CASE("a growing layer that leaves the pool: a new layer is activated although K < K_max") {
    sgt::growth_operator<> op(NL, NH, small(3));
    run_to(op, 10, report(rising));
    REQUIRE(op.state().active == v{7});
    auto dropped = rising;
    dropped[7] = 0.05;  // C becomes {6, 5, 4}
    const auto ev = run_to(op, 15, report(dropped));
    REQUIRE(ev.at(15).size() == 2);
    check_event(ev.at(15)[1], 15, kind::activate, 6, 1, {0, 2});
    CHECK(ev.at(15)[1].candidates == v{6, 5, 4});
    CHECK(op.state().k[7] == 1);  // K_7 < K_max, but 7 is no longer grown
    CHECK(op.state().growing == 6);
    CHECK(op.state().active == v{7, 6});
    const auto next = run_to(op, 20, report(dropped));  // 6 is in C and below K_max: it deepens
    REQUIRE(next.at(20).size() == 2);  // the fade window of 6 closes, then 6 deepens
    check_event(next.at(20)[1], 20, kind::deepen, 6, 2, {0, 2});
    CHECK(op.state().k[7] == 1);
}

TEST_CASE("no eligible layer: R is empty and nothing changes") {
    // First C = {3, 2, 1}: layer 3 is activated. Then C = {7, 6, 5}: 3 is out of C and every candidate is deeper
    // than min(𝓛) = 3, so R = ∅ (D2S).
    const std::vector<double> shallow{0.99, 0.8, 0.85, 0.9, 0.1, 0.2, 0.3, 0.4};
    sgt::growth_operator<> op(NL, NH, small(3));
    run_to(op, 10, report(shallow));
    REQUIRE(op.state().active == v{3});
    const auto before = op.state();
    const auto ev = run_to(op, 15, report(rising));
    REQUIRE(ev.size() == 1);
    REQUIRE(ev.at(15).size() == 1);
    CHECK(ev.at(15)[0].kind == kind::fade_end);  // the only event: the fade window closes
    auto after = op.state();
    after.last_step = before.last_step;
    CHECK(after == before);
    CHECK(op.state().phase == sgt::growth_phase::growing);
    const auto back = run_to(op, 20, report(shallow));  // 3 is back in C below K_max: it deepens
    check_event(back.at(20)[0], 20, kind::deepen, 3, 2, {0, 2});
}

TEST_CASE("the L-th layer with K_max reached fixes the structure, and nothing changes afterwards") {
    sgt::growth_operator<> op(NL, NH, small(1));
    const auto ev = run_to(op, 20, report(rising));
    CHECK(steps_of(ev) == v{10, 15, 20});
    check_event(ev.at(10)[0], 10, kind::activate, 7, 1, {0, 2});
    check_event(ev.at(15)[1], 15, kind::activate, 6, 1, {0, 2});  // K_7 = K_max = 1: next layer
    REQUIRE(ev.at(20).size() == 3);
    check_event(ev.at(20)[1], 20, kind::activate, 5, 1, {0, 2});
    check_event(ev.at(20)[2], 20, kind::fix, 5, 1, {0, 2});
    const auto fixed_state = op.state();
    // Entropies that would choose other layers and heads: no decision is taken any more.
    const std::vector<double> reversed{0.99, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1};
    const auto later = run_to(op, 200, report(reversed));
    REQUIRE(later.size() == 1);  // only the fade window of layer 5 closes, at 20 + 5
    CHECK(later.at(25)[0].kind == kind::fade_end);
    auto now = op.state();
    now.last_step = fixed_state.last_step;
    CHECK(now == fixed_state);
}

TEST_CASE("S2D grows from shallow to deep") {
    auto o = small(1);
    o.direction = sgt::growth_direction::shallow_to_deep;
    sgt::growth_operator<> op(NL, NH, o);
    const auto ev = run_to(op, 20, report(rising));  // C = {7, 6, 5} each time
    CHECK(ev.at(10)[0].layer == 5);                  // min C
    CHECK(ev.at(15)[1].layer == 6);                  // min{l ∈ C, l > max 𝓛 = 5}
    CHECK(ev.at(20)[1].layer == 7);
    CHECK(op.state().active == v{5, 6, 7});
    CHECK(op.state().phase == sgt::growth_phase::fixed);
}

TEST_CASE("excluded layers are never chosen") {
    auto o = small(1);
    o.excluded = {0, 7, 6};
    sgt::growth_operator<> op(NL, NH, o);
    const auto ev = run_to(op, 20, report(rising));
    CHECK(ev.at(10)[0].candidates == v{5, 4, 3});
    CHECK(op.state().active == v{5, 4, 3});
    for (const auto& [t, es] : ev)
        for (const auto& e : es)
            for (int c : e.candidates) CHECK((c != 0 && c != 6 && c != 7));
}

TEST_CASE("ties: equal layer entropies rank the lower layer first, equal head entropies pick the lower heads") {
    sgt::entropy_report flat(NL, NH);
    for (auto& x : flat.first_pass) x = 0.5;
    sgt::growth_operator<> op(NL, NH, small(1));
    const auto ev = run_to(op, 10, flat);
    // C = {1, 2, 3} (the lowest non-excluded indices); D2S activates max C = 3, heads {0, 1}.
    CHECK(ev.at(10)[0].candidates == v{1, 2, 3});
    check_event(ev.at(10)[0], 10, kind::activate, 3, 1, {0, 1});
}

TEST_CASE("another allocation policy picks the heads") {
    sgt::growth_operator<sgt::bottom_h> op(NL, NH, small(1));
    const auto ev = run_to(op, 10, report(rising));
    check_event(ev.at(10)[0], 10, kind::activate, 7, 1, {1, 3});
    CHECK(op.name() == "sgt(bottom_h)");
}

TEST_CASE("fade: loop step 1 runs all heads for Δt steps with a decaying gain; hard: never") {
    SUBCASE("linear") {
        sgt::growth_operator<> op(NL, NH, small(2));
        run_to(op, 10, report(rising));  // layer 7 activated at the end of step 10
        // f(t) = 1 - (t - 11)/5 for t = 11..15, then 0.
        const double expected[] = {1.0, 0.8, 0.6, 0.4, 0.2};
        for (int t = 11; t <= 15; ++t) {
            CHECK(op.plan().layers[7].fade == doctest::Approx(expected[t - 11]));  // the plan of step t
            CHECK(op.plan().layers[7].heads == v{0, 2});
            op.end_step(t, report(rising));
        }
        CHECK(op.plan().layers[7].fade == 0.0);  // step 16: S_l only, and K = 2 from the deepening at 15
        CHECK(op.plan().layers[7].k == 2);
        CHECK(op.plan().layers[6].fade == 0.0);
    }
    SUBCASE("cosine and exponential") {
        auto o = small(2);
        o.shape = sgt::fade_shape::cosine;
        sgt::growth_operator<> cos_op(NL, NH, o);
        o.shape = sgt::fade_shape::exponential;
        sgt::growth_operator<> exp_op(NL, NH, o);
        run_to(cos_op, 12, report(rising));
        run_to(exp_op, 12, report(rising));
        // Step 13: j = 3, u = 2/5 = 0.4. cos: (1 + cos 0.4π)/2 = (1 + 0.3090170)/2; exp: 0.01^0.4 = 10^-0.8.
        CHECK(cos_op.plan().layers[7].fade == doctest::Approx(0.6545085));
        CHECK(exp_op.plan().layers[7].fade == doctest::Approx(0.1584893));
        CHECK(sgt::fade_gain(sgt::fade_shape::cosine, 5, 11, 10) == 1.0);
        CHECK(sgt::fade_gain(sgt::fade_shape::exponential, 5, 11, 10) == 1.0);
        CHECK(sgt::fade_gain(sgt::fade_shape::exponential, 5, 15, 10) > 0.0);
        CHECK(sgt::fade_gain(sgt::fade_shape::cosine, 5, 15, 10) > 0.0);
        CHECK(sgt::fade_gain(sgt::fade_shape::cosine, 5, 16, 10) == 0.0);
        CHECK(sgt::fade_gain(sgt::fade_shape::linear, 5, 10, 10) == 0.0);
    }
    SUBCASE("hard") {
        auto o = small(2);
        o.transition = sgt::growth_transition::hard;
        sgt::growth_operator<> op(NL, NH, o);
        const auto ev = run_to(op, 10, report(rising));
        CHECK(op.plan().layers[7].k == 1);
        CHECK(op.plan().layers[7].fade == 0.0);
        const auto more = run_to(op, 40, report(rising));
        for (const auto& [t, es] : more)
            for (const auto& e : es) CHECK(e.kind != kind::fade_end);
        for (const auto& x : op.plan().layers) CHECK(x.fade == 0.0);
    }
}

TEST_CASE("EMA: decisions use the smoothed entropies") {
    // Steps 1..9 report A, step 10 reports B, which differs from A in layer 2 only: A 1.0, B 0.3.
    // α = 0: Ē_2 = 0.3, C = {7, 6, 5}. α = 0.5: Ê_2 = 0.5·1.0 + 0.5·0.3 = 0.65, C = {7, 2, 6}.
    auto a = rising;
    a[2] = 1.0;
    auto b = rising;
    b[2] = 0.3;
    for (double alpha : {0.0, 0.5}) {
        auto o = small(2);
        o.ema_alpha = alpha;
        sgt::growth_operator<> op(NL, NH, o);
        run_to(op, 9, report(a));
        const auto ev = op.end_step(10, report(b));
        REQUIRE(ev.size() == 1);
        if (alpha == 0.0) {
            CHECK(ev[0].candidates == v{7, 6, 5});
        } else {
            CHECK(ev[0].candidates == v{7, 2, 6});
            CHECK(ev[0].candidate_entropy[1] == doctest::Approx(0.65));
            CHECK(op.smoothed_entropy()[2 * NH + 0] == doctest::Approx(0.5 * 1.02 + 0.5 * 0.32));
        }
    }
}

TEST_CASE("reports may be skipped between decisions, not before the first") {
    sgt::growth_operator<> op(NL, NH, small(2));
    const sgt::entropy_report none;
    run_to(op, 9, none);
    CHECK_THROWS_WITH_AS(op.end_step(10, none),
                         "growth operator: step 10 is a decision step but no entropy has been reported yet", sgt::error);
    sgt::growth_operator<> op2(NL, NH, small(2));
    op2.end_step(1, report(rising));
    run_to(op2, 10, none);  // decides at 10 on the last measured entropies (step 1)
    CHECK(op2.state().active == v{7});
}

TEST_CASE("release rule (a): a depth increase goes to the first active layer still in C") {
    // 10: activate 7. 15: 7 leaves C, activate 6. 20: C = {7, 6, 5} again.
    auto dropped = rising;
    dropped[7] = 0.05;
    for (bool release : {false, true}) {
        auto o = small(2);
        o.release_rules = release;
        sgt::growth_operator<> op(NL, NH, o);
        run_to(op, 10, report(rising));
        run_to(op, 15, report(dropped));
        REQUIRE(op.state().active == v{7, 6});
        const auto ev = run_to(op, 20, report(rising));
        const auto& deepen = ev.at(20).back();
        CHECK(deepen.kind == kind::deepen);
        CHECK(deepen.layer == (release ? 7 : 6));  // paper: l* = 6; release: 7 comes first in activation order
    }
}

TEST_CASE("release rule (b): a decision with nothing to do fixes the structure") {
    const std::vector<double> shallow{0.99, 0.8, 0.85, 0.9, 0.1, 0.2, 0.3, 0.4};
    auto o = small(3);
    o.release_rules = true;
    sgt::growth_operator<> op(NL, NH, o);
    run_to(op, 10, report(shallow));
    const auto ev = run_to(op, 15, report(rising));  // R = ∅ as in the paper-rule test above
    REQUIRE(ev.at(15).size() == 2);
    check_event(ev.at(15)[1], 15, kind::fix, 3, 1, {0, 2});
    CHECK(op.state().phase == sgt::growth_phase::fixed);
    CHECK(run_to(op, 60, report(shallow)).empty());  // no deepening of 3 any more
}

TEST_CASE("release rule (d): looped heads enter the EMA with their last-loop entropy") {
    for (bool release : {false, true}) {
        auto o = small(2);
        o.release_rules = release;
        sgt::growth_operator<> op(NL, NH, o);
        run_to(op, 10, report(rising));  // layer 7 loops heads {0, 2}
        auto r = report(rising);
        r.last_loop[7 * NH + 0] = 0.0;
        r.last_loop[7 * NH + 2] = 0.0;
        const auto ev = run_to(op, 15, r);
        // release: Ê_7 = (0 + 0.68 + 0 + 0.69)/4 = 0.3425, 7 leaves C = {6, 5, 4}, so 6 is activated;
        // paper rules: the first pass only, 7 stays in C and deepens.
        CHECK(op.smoothed_entropy()[7 * NH + 0] == doctest::Approx(release ? 0.0 : 0.72));
        CHECK(ev.at(15).back().kind == (release ? kind::activate : kind::deepen));
        CHECK(ev.at(15).back().layer == (release ? 6 : 7));
    }
}

TEST_CASE("release rules fix the structure only once every active layer is at K_max") {
    auto o = small(2);
    o.release_rules = true;
    o.L = 2;
    auto dropped = rising;
    dropped[7] = 0.05;
    sgt::growth_operator<> op(NL, NH, o);
    run_to(op, 10, report(rising));   // activate 7
    run_to(op, 15, report(dropped));  // activate 6 (K_7 = 1)
    run_to(op, 20, report(dropped));  // deepen 6: |𝓛| = L and K_{l*} = K_max, but K_7 = 1
    CHECK(op.state().phase == sgt::growth_phase::growing);
    const auto ev = run_to(op, 25, report(rising));  // deepen 7, then every layer is at K_max
    REQUIRE(ev.at(25).size() == 2);
    check_event(ev.at(25)[0], 25, kind::deepen, 7, 2, {0, 2});
    CHECK(ev.at(25)[1].kind == kind::fix);
    CHECK(op.state().phase == sgt::growth_phase::fixed);
}

TEST_CASE("authors_release and from_budget options") {
    const auto r = sgt::growth_options::authors_release({.h = 3, .L = 2, .k_max = 1});
    CHECK(r.release_rules);
    CHECK(r.ema_alpha == 0.5);
    CHECK(r.h == 3);
    CHECK(r.L == 2);
    CHECK(r.k_max == 1);
    CHECK(r.t_start == 250);
    CHECK(r.dt == 250);
    const auto b = sgt::growth_options::from_budget(sgt::presets::paper_loops);
    CHECK(!b.release_rules);
    CHECK(b.excluded == v{0});
    CHECK(b.transition == sgt::growth_transition::fade);
}

TEST_CASE("Θ round-trips through JSON and the copy continues identically") {
    auto o = small(3);
    o.ema_alpha = 0.5;
    sgt::growth_operator<sgt::random_h> op(NL, NH, o, sgt::random_h(9));
    run_to(op, 17, report(rising));  // mid-growth: 7 at K = 2, in the middle of nothing; policy state advanced
    const auto j = nlohmann::json::parse(op.to_json().dump());
    auto copy = sgt::growth_operator<sgt::random_h>::from_json(j);
    CHECK(copy.state() == op.state());
    CHECK(copy.options() == op.options());
    CHECK(copy.plan() == op.plan());
    CHECK(copy.smoothed_entropy() == op.smoothed_entropy());
    CHECK(copy.to_json() == op.to_json());
    std::vector<double> wobble = rising;
    for (int t = 18; t <= 80; ++t) {
        wobble[1 + t % 7] += 0.013 * ((t % 3) - 1);
        const auto r = report(wobble);
        const auto e1 = op.end_step(t, r);
        const auto e2 = copy.end_step(t, r);
        CHECK(e1 == e2);
        CHECK(copy.plan() == op.plan());
    }
    CHECK(copy.state() == op.state());

    // Events serialise too.
    sgt::growth_operator<> g(NL, NH, small(2));
    const auto ev = run_to(g, 10, report(rising)).at(10)[0];
    CHECK(nlohmann::json(ev).get<sgt::growth_event>() == ev);
}

TEST_CASE("load_json rejects another shape or policy and changes nothing") {
    sgt::growth_operator<> op(NL, NH, small(2));
    run_to(op, 12, report(rising));
    const auto saved = op.to_json();
    const auto state = op.state();
    sgt::growth_operator<> other(NL + 1, NH, small(2));
    CHECK_THROWS_WITH_AS(other.load_json(saved), "growth operator: expected a model of 9 layers x 4 heads, found 8 x 4",
                         sgt::error);
    sgt::growth_operator<sgt::bottom_h> bottom(NL, NH, small(2));
    CHECK_THROWS_WITH_AS(bottom.load_json(saved), "growth operator: expected allocation policy bottom_h, found top_h",
                         sgt::error);
    auto bad = saved;
    bad["state"]["k"][7] = 9;
    CHECK_THROWS_WITH_AS(op.load_json(bad), "growth operator: layer 7 has K = 9, expected [1, 2]", sgt::error);
    CHECK(op.state() == state);
    auto bad_phase = saved;
    bad_phase["state"]["phase"] = "sleeping";
    CHECK_THROWS_WITH_AS(op.load_json(bad_phase),
                         "growth phase: expected one of warm_up, growing, fixed, found \"sleeping\"", sgt::error);
    CHECK(op.state() == state);
}

TEST_CASE("Θ prints readably") {
    sgt::growth_operator<> op(NL, NH, small(2));
    run_to(op, 20, report(rising));  // 7 at K = 2; 6 just activated with fade 1 at step 21
    const auto s = op.to_string();
    CHECK(s == "sgt(top_h): growing after step 20, l* = 6 | layer 7 K=2 S={0,2} | layer 6 K=1 S={0,2}"
               " | layer 6 fade 1.000");
    CHECK(fmt::format("{}", op) == s);
    CHECK(fmt::format("{}", op.state()) == sgt::to_string(op.state()));
    sgt::growth_operator<> fresh(NL, NH, small(2));
    CHECK(fmt::format("{}", fresh.state()) == "warm_up after step 0, l* = none");
}

TEST_CASE("options are validated with messages that say what is wrong") {
    const auto msg = [](auto change) {
        auto o = small(2);
        change(o);
        try {
            sgt::growth_operator<> op(NL, NH, o);
        } catch (const sgt::error& e) {
            return std::string(e.what());
        }
        return std::string("no error");
    };
    CHECK(msg([](auto& o) { o.L = 8; }) == "growth options: L must be in [1, 7] (the 8 layers minus 1 excluded), found 8");
    CHECK(msg([](auto& o) { o.L = 0; }) == "growth options: L must be in [1, 7] (the 8 layers minus 1 excluded), found 0");
    CHECK(msg([](auto& o) {
              o.excluded = {0, 1, 2, 3, 4, 5};
          }) == "growth options: L must be in [1, 2] (the 8 layers minus 6 excluded), found 3");
    CHECK(msg([](auto& o) { o.k_max = 0; }) == "growth options: k_max must be at least 1, found 0");
    CHECK(msg([](auto& o) { o.h = 5; }) == "growth options: h must be in [1, 4] (the head count), found 5");
    CHECK(msg([](auto& o) { o.h = 0; }) == "growth options: h must be in [1, 4] (the head count), found 0");
    CHECK(msg([](auto& o) { o.t_start = 0; }) ==
          "growth options: t_start must be at least 1 (steps count from 1), found 0");
    CHECK(msg([](auto& o) { o.dt = 0; }) == "growth options: dt (the window Δt) must be at least 1, found 0");
    CHECK(msg([](auto& o) { o.excluded = {8}; }) == "growth options: excluded layer 8 is out of range [0, 8)");
    CHECK(msg([](auto& o) { o.excluded = {2, 2}; }) == "growth options: excluded layer 2 is listed twice");
    CHECK(msg([](auto& o) { o.ema_alpha = 1.0; }) == "growth options: ema_alpha must be in [0, 1), found 1");
    CHECK(msg([](auto&) {}) == "no error");
}

TEST_CASE("steps must come one at a time and reports must match the model") {
    sgt::growth_operator<> op(NL, NH, small(2));
    CHECK_THROWS_WITH_AS(op.end_step(2, report(rising)),
                         "growth operator: expected step 1 (steps count from 1, one at a time), found 2", sgt::error);
    CHECK_THROWS_WITH_AS(op.end_step(1, sgt::entropy_report(NL, NH + 1)),
                         "growth operator: expected an entropy report of 8 layers x 4 heads, found 8 x 5 (40 values)",
                         sgt::error);
    auto r = report(rising);
    r.first_pass[5] = std::nan("");
    CHECK_THROWS_WITH_AS(op.end_step(1, r), "growth operator: entropy of layer 1 head 1 is not finite (nan)",
                         sgt::error);
    CHECK(op.last_step() == 0);
}
