// Tests of the training cost model (flops.hpp, spec Sec. 6): hand-computed costs on a toy shape, then the
// paper's Table 1 and Table 2 overheads from the real schedules driven step by step over 5035 steps.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <cmath>
#include <vector>

#include "sgt/flops.hpp"
#include "sgt/schedule.hpp"

namespace {

// The paper's run: sequence 4096, global batch 1024, 5035 steps, t_start = Δt = 250.
constexpr int seq = 4096;
constexpr int batch = 1024;
constexpr int steps = 5035;

// A report whose layer entropy rises with depth (so C is always the deepest L non-excluded layers and the
// growing layer never leaves it) and whose heads differ (so S is well defined).
sgt::entropy_report rising_report(const sgt::model_shape& s) {
    sgt::entropy_report r(s.layers, s.heads);
    for (int l = 0; l < s.layers; ++l)
        for (int i = 0; i < s.heads; ++i) r.first_pass[std::size_t(l) * s.heads + i] = 0.01 * l + 0.001 * i;
    return r;
}

// Runs any schedule for the paper's 5035 steps, counting each step's FLOPs with the plan it ran.
template <sgt::loop_schedule S>
sgt::flops_counter count(S& schedule, const sgt::model_shape& shape) {
    sgt::flops_counter c(shape, batch, seq);
    const auto r = rising_report(shape);
    for (int t = 1; t <= steps; ++t) {
        c.add(schedule.plan());
        schedule.end_step(t, r);
    }
    return c;
}

double sgt_overhead_percent(const sgt::model_shape& shape, int k_max) {
    sgt::growth_options o;  // t_start = Δt = 250, h = 2, L = 3, excluded {0}, D2S, fade
    o.k_max = k_max;
    sgt::growth_operator<> g(shape, o);
    const double pct = 100.0 * count(g, shape).overhead();
    CHECK(g.state().phase == sgt::growth_phase::fixed);
    return pct;
}

}  // namespace

TEST_CASE("token FLOPs by hand on a toy shape") {
    // d = 8, n_h = 4, d_ff = 16, V = 10, n_l = 2, T = 4.
    // P_layer = 4·64 + 3·8·16 = 640; P = 2·640 + 2·10·8 = 1440.
    // vanilla: 6·1440 + 12·2·8·4 = 8640 + 768 = 9408.
    // one loop step over all heads: 6·4·64 + 12·8·4 = 1536 + 384 = 1920, i.e. 480 per head.
    // one extra block application: 6·640 + 12·8·4 = 4224.
    const sgt::model_shape s{.layers = 2, .heads = 4, .head_dim = 2, .d_ff = 16, .vocab = 10, .max_seq = 4};
    auto p = sgt::loop_plan::vanilla(2);
    CHECK(sgt::token_flops(s, 4, p) == 9408.0);
    p.layers[0] = {.k = 2, .heads = {1, 3}};  // 2 loop steps x 2 heads x 480 = 1920
    CHECK(sgt::token_flops(s, 4, p) == 9408.0 + 1920.0);
    p.layers[0].fade = 0.5;  // loop step 1 runs all 4 heads: 1920 + 960 = 2880
    CHECK(sgt::token_flops(s, 4, p) == 9408.0 + 2880.0);
    p.layers[1].block_repeat = 2;
    CHECK(sgt::token_flops(s, 4, p) == 9408.0 + 2880.0 + 4224.0);
    p.layers[1].k = 1;  // each of the 2 applications loops head 0: 2 x 480
    p.layers[1].heads = {0};
    CHECK(sgt::token_flops(s, 4, p) == 9408.0 + 2880.0 + 4224.0 + 960.0);
    CHECK(sgt::step_flops(s, 3, 4, p) == 12.0 * (9408.0 + 2880.0 + 4224.0 + 960.0));

    sgt::flops_counter c(s, 3, 4);
    c.add(sgt::loop_plan::vanilla(2), 10);
    c.add(p);
    CHECK(c.steps() == 11);
    CHECK(c.tokens() == 11 * 12);
    CHECK(c.vanilla_total() == 11.0 * 12.0 * 9408.0);
    CHECK(c.total() == 12.0 * (10.0 * 9408.0 + 9408.0 + 2880.0 + 4224.0 + 960.0));
    CHECK(c.overhead() == doctest::Approx((2880.0 + 4224.0 + 960.0) / (11.0 * 9408.0)));
    CHECK(c.to_json().at("steps") == 11);

    CHECK_THROWS_WITH_AS(sgt::token_flops(s, 4, sgt::loop_plan::vanilla(3)), "flops: expected a plan of 2 layers, found 3",
                         sgt::error);
    CHECK_THROWS_WITH_AS(sgt::step_flops(s, 0, 4, p), "flops: batch must be positive, found 0", sgt::error);
}

TEST_CASE("the paper's parameter counts and vanilla totals") {
    // 275M: P_layer = 4·768² + 3·768·6144 = 16,515,072; P = 12·P_layer + 2·50304·768 = 275,447,808 (Table 8: 275.4M).
    CHECK(sgt::presets::p275m.shape.matrix_params() == 275'447'808);
    CHECK(sgt::presets::p573m.shape.matrix_params() == doctest::Approx(572.8e6).epsilon(1e-3));
    CHECK(sgt::presets::p1_2b.shape.matrix_params() == doctest::Approx(1211.5e6).epsilon(1e-3));
    // The paper's vanilla totals are 2-4% below this convention (spec Sec. 6).
    const double paper[] = {42.83e18, 87.41e18, 175.76e18};
    const sgt::model_shape shapes[] = {sgt::presets::p275m.shape, sgt::presets::p573m.shape, sgt::presets::p1_2b.shape};
    for (int i = 0; i < 3; ++i) {
        sgt::vanilla_schedule v(shapes[i].layers);
        const auto c = count(v, shapes[i]);
        MESSAGE(fmt::format("vanilla {}: {:.2f}e18 (paper {:.2f}e18)", i, c.total() / 1e18, paper[i] / 1e18));
        CHECK(c.total() == doctest::Approx(paper[i]).epsilon(0.05));
        CHECK(c.overhead() == 0.0);
    }
    // 275M by hand: (6·275,447,808 + 12·12·768·4096) · 4096 · 1024 · 5035 = 2,105,671,680 · 21,118,320,640 ≈ 44.47e18.
    sgt::flops_counter c(sgt::presets::p275m.shape, batch, seq);
    c.add(sgt::loop_plan::vanilla(12), steps);
    CHECK(c.total() == doctest::Approx(2'105'671'680.0 * 21'118'320'640.0));
}

TEST_CASE("SGT overheads (Table 1) from the real growth operator") {
    struct row {
        const char* name;
        sgt::model_shape shape;
        double paper[3];  // K_max = 1, 2, 3
    };
    const row rows[] = {{"275M", sgt::presets::p275m.shape, {1.47, 2.45, 3.22}},
                        {"573M", sgt::presets::p573m.shape, {0.85, 1.36, 1.77}},
                        {"1.2B", sgt::presets::p1_2b.shape, {0.74, 1.19, 1.55}}};
    for (const auto& r : rows)
        for (int k = 1; k <= 3; ++k) {
            const double pct = sgt_overhead_percent(r.shape, k);
            MESSAGE(fmt::format("SGT {} K_max={}: +{:.3f}% (paper +{:.2f}%)", r.name, k, pct, r.paper[k - 1]));
            CHECK(std::abs(pct - r.paper[k - 1]) < 0.2);
        }

    // 275M, K_max = 1 by hand. Decisions at the end of 250, 500, 750 activate layers 11, 10, 9. Each runs its
    // first loop over all 12 heads for its fade window (251-500, 501-750, 751-1000: 750 steps in all) and over
    // 2 heads afterwards (4535 + 4285 + 4035 = 12855 steps). One all-head loop step costs 6·4·768² + 12·768·4096
    // = 51,904,512 per token; vanilla is 2,105,671,680 per token.
    const double expected = (750.0 + 12855.0 * 2.0 / 12.0) * 51'904'512.0 / (5035.0 * 2'105'671'680.0);
    CHECK(sgt_overhead_percent(sgt::presets::p275m.shape, 1) == doctest::Approx(100.0 * expected).epsilon(1e-9));
}

TEST_CASE("Block Loop overheads (Table 1): three given layers looped from step 1") {
    // The paper picks the layers on a separate vanilla run of t_start steps and trains Block Loop with them
    // from the start (Sec. 5.1), so every one of the 5035 steps repeats three blocks.
    struct row {
        const char* name;
        sgt::model_shape shape;
        double paper;
    };
    const row rows[] = {{"275M", sgt::presets::p275m.shape, 20.24},
                        {"573M", sgt::presets::p573m.shape, 16.42},
                        {"1.2B", sgt::presets::p1_2b.shape, 17.01}};
    for (const auto& r : rows) {
        const int n = r.shape.layers;
        auto s = sgt::block_loop_schedule::given(n, {n - 3, n - 2, n - 1});
        const double pct = 100.0 * count(s, r.shape).overhead();
        MESSAGE(fmt::format("Block Loop {}: +{:.3f}% (paper +{:.2f}%)", r.name, pct, r.paper));
        CHECK(std::abs(pct - r.paper) < 1.0);
    }
    // 275M by hand: 3·(6·16,515,072 + 12·768·4096) / 2,105,671,680 = 410,517,504 / 2,105,671,680 = 19.495%.
    auto s = sgt::block_loop_schedule::given(12, {1, 5, 9});
    CHECK(100.0 * count(s, sgt::presets::p275m.shape).overhead() ==
          doctest::Approx(100.0 * 410'517'504.0 / 2'105'671'680.0).epsilon(1e-9));
}

TEST_CASE("Table 2 (573M, one layer, one loop) under the same cost model") {
    const auto shape = sgt::presets::p573m.shape;
    // Attention Loop: all 16 heads, every step: (6·4·1024² + 12·1024·4096) / 4,242,014,208 = 1.780% (paper 1.83%).
    auto att = sgt::attention_loop(16, 16, 7);
    const double att_pct = 100.0 * count(att, shape).overhead();
    CHECK(att_pct == doctest::Approx(100.0 * 75'497'472.0 / 4'242'014'208.0).epsilon(1e-9));
    CHECK(std::abs(att_pct - 1.83) < 0.15);
    // Block Loop of one layer: (6·29,360,128 + 12·1024·4096) / 4,242,014,208 = 5.339% (paper 5.48%).
    auto blk = sgt::block_loop_schedule::given(16, {7});
    const double blk_pct = 100.0 * count(blk, shape).overhead();
    CHECK(std::abs(blk_pct - 5.48) < 0.15);
    // High-/Low-Entropy Loop: the two-stage selection of Appendix D.2 (two windows of 250 steps) with all heads
    // computed until the choice, then 2 of 16: (500 + 4535·2/16) / 5035 · 1.780% = 0.377% (paper 0.38%).
    sgt::head_loop_schedule<> high(16, 16, {.layer = 7, .h = 2, .k = 1, .t_start = 500,
                                            .before = sgt::before_selection::all_heads});
    const double high_pct = 100.0 * count(high, shape).overhead();
    MESSAGE(fmt::format("Table 2: attention +{:.3f}%, block +{:.3f}%, high-entropy +{:.3f}%", att_pct, blk_pct,
                        high_pct));
    CHECK(high_pct == doctest::Approx((500.0 + 4535.0 * 2.0 / 16.0) / 5035.0 * att_pct).epsilon(1e-9));
    CHECK(std::abs(high_pct - 0.38) < 0.05);
}

TEST_CASE("MFU") {
    // 989.5e12 FLOP/s for 2 s is 1.979e15 FLOPs: half of it is 50% MFU.
    CHECK(sgt::mfu(989.5e12, 2.0, sgt::peak_flops::h100_sxm_bf16) == doctest::Approx(0.5));
    CHECK(sgt::mfu(312e12 * 0.25, 1.0, sgt::peak_flops::a100_bf16) == doctest::Approx(0.25));
    CHECK_THROWS_WITH_AS(sgt::mfu(1.0, 0.0, 1.0), "mfu: seconds must be positive, found 0", sgt::error);
    CHECK_THROWS_WITH_AS(sgt::mfu(1.0, 1.0, -1.0), "mfu: peak FLOP/s must be positive, found -1", sgt::error);
}
