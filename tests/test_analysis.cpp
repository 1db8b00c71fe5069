// The analysis hook (sgt/analysis.hpp): the last token's attention row, value norms and contributions
// C_j = A_{N,j} · ‖V_j‖₂ of every pass, checked against the attention matrices the CPU backend saved and against
// value vectors recomputed from the layer's W_V and the pass's normalised input.
#include <doctest/doctest.h>

#include <cmath>
#include <map>
#include <tuple>

#include "support.hpp"
#include "sgt/analysis.hpp"
#include "sgt/model.hpp"

using namespace sgt;
using tiny_model = model<double, presets::tiny>;

using test::random_batch;

TEST_CASE("last-token contributions: every pass and head, rows equal to the saved attention, C = A·‖V‖") {
    constexpr int B = 3, T = 12, HD = tiny_model::HD, C = tiny_model::C;
    tiny_model m(B, T, 7);
    // Step by step, so that every pass keeps its input and rstd, from which V is rebuilt below (loop steps in the
    // subspace do not form their input); the same rows with them are checked at the end.
    m.set_loop_subspace(false);
    loop_plan plan = loop_plan::vanilla(tiny_model::NL);
    plan.layers[1] = layer_loop{.k = 1, .heads = {0, 3}, .fade = 0.25};
    plan.layers[2].block_repeat = 2;
    plan.layers[3] = layer_loop{.k = 2, .heads = {2}};
    m.forward(random_batch(B, T, tiny_model::V, 3), plan);

    const int b = 1;
    const auto rows = last_token_contributions(m, b);
    // Passes: layer 0 one, layer 1 two (the second over all heads with the fade gain), layer 2 one per
    // repeat, layer 3 three (loop steps over S = {2}).
    std::map<std::tuple<int, int, int>, int> heads_per_pass;
    for (const auto& r : rows) ++heads_per_pass[{r.layer, r.repeat, r.pass}];
    const std::map<std::tuple<int, int, int>, int> expected{
        {{0, 0, 0}, 4}, {{1, 0, 0}, 4}, {{1, 0, 1}, 4}, {{2, 0, 0}, 4}, {{2, 1, 0}, 4},
        {{3, 0, 0}, 4}, {{3, 0, 1}, 1}, {{3, 0, 2}, 1}};
    CHECK(heads_per_pass == expected);

    const auto passes = m.attention_passes();
    REQUIRE(passes.size() == expected.size());
    std::size_t k = 0;
    for (const auto& p : passes) {
        const auto& rec = *p.record;
        const int n = rec.n();
        for (int i = 0; i < n; ++i, ++k) {
            const auto& r = rows[k];
            CHECK(r.layer == p.site.layer);
            CHECK(r.repeat == p.site.repeat);
            CHECK(r.pass == p.site.step);
            CHECK(r.head == rec.heads[i]);
            CHECK(r.gain == (p.site.layer == 1 && p.site.step == 1 && (r.head == 1 || r.head == 2) ? 0.25 : 1.0));
            REQUIRE(r.attention.size() == std::size_t(T));
            // The attention matrices the CPU backend saved, (B, n, T, T): the last row of (b, i).
            const double* saved = rec.probs.data() + ((std::size_t(b) * n + i) * T + (T - 1)) * T;
            double sum = 0.0;
            for (int j = 0; j < T; ++j) {
                CHECK(std::abs(r.attention[j] - saved[j]) <= 1e-12);
                sum += r.attention[j];
            }
            CHECK(std::abs(sum - 1.0) <= 1e-12);
            // V_j = W_V^(i) a_j, a = RMSNorm_attn of the pass input (rebuilt from the input, its saved rstd and the
            // norm weight: the record keeps no copy), from the layer's weights.
            const std::string layer = "model.layers." + std::to_string(p.site.layer);
            const auto wv = m.parameter(layer + ".self_attn.v_proj.weight");
            const auto wn = m.parameter(layer + ".input_layernorm.weight");
            std::vector<double> a(C);
            for (int j = 0; j < T; ++j) {
                const std::size_t row = std::size_t(b) * T + j;
                for (int c = 0; c < C; ++c) a[std::size_t(c)] = rec.in[row * C + c] * rec.rstd.data()[row] * wn[std::size_t(c)];
                double s = 0.0;
                for (int e = 0; e < HD; ++e) {
                    double v = 0.0;
                    for (int c = 0; c < C; ++c) v += wv[std::size_t(r.head * HD + e) * C + c] * a[c];
                    s += v * v;
                }
                CHECK(std::abs(r.value_norm[j] - std::sqrt(s)) <= 1e-12 * (1.0 + std::sqrt(s)));
                CHECK(r.contribution[j] == r.attention[j] * r.value_norm[j]);
            }
        }
    }
    CHECK(k == rows.size());

    // A filter: the looped heads of layer 3 only.
    const auto looped = last_token_contributions(m, b, [](int l, int, int h) { return l == 3 && (h == 1 || h == 2); });
    CHECK(looped.size() == 4);  // the first pass's heads 1 and 2, and head 2 in each of the two loop steps

    // With layer 3's two loop steps computed in their subspace (one run): the same rows, to rounding.
    tiny_model ms(B, T, 7);
    REQUIRE(ms.loop_subspace());
    ms.forward(random_batch(B, T, tiny_model::V, 3), plan);
    CHECK(ms.subspace_runs() == 1);
    const auto sub = last_token_contributions(ms, b);
    REQUIRE(sub.size() == rows.size());
    for (std::size_t i = 0; i < rows.size(); ++i) {
        CHECK(sub[i].head == rows[i].head);
        CHECK(sub[i].pass == rows[i].pass);
        for (int j = 0; j < T; ++j) {
            CHECK(std::abs(sub[i].attention[j] - rows[i].attention[j]) <= 1e-12);
            CHECK(std::abs(sub[i].value_norm[j] - rows[i].value_norm[j]) <= 1e-12 * (1.0 + rows[i].value_norm[j]));
        }
    }
}

TEST_CASE("last-token contributions: bad input") {
    tiny_model m(2, 8, 1);
    CHECK(test::error_of([&] { last_token_contributions(m); }) ==
          "analysis: the model has not run a forward() yet");
    m.forward(random_batch(2, 8, tiny_model::V, 1), loop_plan::vanilla(tiny_model::NL));
    CHECK(test::error_of([&] { last_token_contributions(m, 2); }) ==
          "analysis: sequence 2 requested, expected 0 <= b < B = 2");
}
