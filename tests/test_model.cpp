// Whole-model checks: finite-difference gradients through vanilla, looped, fading and block-looped layers;
// the loop identity of Eq. 6; entropies (Eq. 4) against a brute-force computation; bad input.
#include <doctest/doctest.h>

#include <cmath>

#include "gradcheck.hpp"
#include "support.hpp"
#include "sgt/model.hpp"

using namespace sgt;
using tiny_model = model<double, presets::tiny>;

namespace {

// Random tokens, one target ignored.
batch random_batch(int B, int T, int V, std::uint64_t seed) {
    batch b = test::random_batch(B, T, V, seed);
    b.targets[3] = ignore_target;
    return b;
}

// Norm weights perturbed away from 1 so that their gradients and their use in every pass are exercised.
void perturb_norms(tiny_model& m, std::uint64_t seed) {
    rng r(seed);
    for (const auto& e : m.parameter_table())
        if (!e.decay)
            for (auto& w : m.parameter(e.name)) w = 1.0 + 0.2 * r.normal();
}

loop_plan plan_with(std::initializer_list<std::pair<int, layer_loop>> layers) {
    loop_plan p = loop_plan::vanilla(tiny_model::NL);
    for (const auto& [l, lp] : layers) p.layers[l] = lp;
    return p;
}

// Gradient check of the whole model under a plan, on ~25 sampled entries of every tensor.
void check_model_gradient(const loop_plan& plan, const std::string& what) {
    tiny_model m(2, 8, 7);
    perturb_norms(m, 11);
    // Larger weights than the init so that attention is far from uniform and every path matters.
    for (const auto& e : m.parameter_table())
        if (e.decay)
            for (auto& w : m.parameter(e.name)) w *= 10.0;
    const batch b = random_batch(2, 8, tiny_model::V, 3);
    std::vector<std::string> every_tensor;
    for (const auto& e : m.parameter_table()) every_tensor.push_back(e.name);
    test::check_named_gradients(m, b, plan, every_tensor, what, 25);
}

}  // namespace

TEST_CASE("whole-model gradient: vanilla") { check_model_gradient(loop_plan::vanilla(tiny_model::NL), "vanilla"); }

TEST_CASE("whole-model gradient through head-sparse loops (Eq. 6)") {
    for (int k = 1; k <= 3; ++k) {
        check_model_gradient(plan_with({{2, layer_loop{.k = k, .heads = {1}}}}), fmt::format("K={} |S|=1 mid", k));
        check_model_gradient(plan_with({{2, layer_loop{.k = k, .heads = {0, 3}}}}), fmt::format("K={} |S|=2 mid", k));
        check_model_gradient(plan_with({{2, layer_loop{.k = k, .heads = {0, 1, 2, 3}}}}),
                             fmt::format("K={} |S|=all mid", k));
    }
    check_model_gradient(plan_with({{0, layer_loop{.k = 2, .heads = {1, 2}}}}), "first layer K=2");
    check_model_gradient(plan_with({{3, layer_loop{.k = 3, .heads = {0, 2}}}}), "last layer K=3");
    check_model_gradient(plan_with({{1, layer_loop{.k = 1, .heads = {3}}}, {3, layer_loop{.k = 2, .heads = {0, 1}}}}),
                         "two looped layers");
}

TEST_CASE("whole-model gradient: fade transition and Block Loop") {
    for (double f : {0.25, 0.5, 0.9})
        check_model_gradient(plan_with({{2, layer_loop{.k = 2, .heads = {1, 3}, .fade = f}}}),
                             fmt::format("fade {}", f));
    check_model_gradient(plan_with({{1, layer_loop{.block_repeat = 2}}}), "block loop, layer 1");
    check_model_gradient(plan_with({{1, layer_loop{.block_repeat = 2}}, {3, layer_loop{.block_repeat = 2}}}),
                         "block loop, layers 1 and 3");
}

TEST_CASE("loop with S = all heads, K = 1 equals applying the attention sublayer twice") {
    // Independent construction: a vanilla 5-layer model whose layers 1 and 2 both carry the attention weights
    // of the looped model's layer 1, with layer 1's FFN switched off (W_2 = 0) and layer 2's FFN that of layer 1.
    constexpr model_config five{.shape = {.layers = 5, .heads = 4, .head_dim = 8, .d_ff = 64, .vocab = 64,
                                          .max_seq = 32},
                                .loops = presets::tiny.loops};
    tiny_model looped(2, 8, 1);
    perturb_norms(looped, 2);
    model<double, five> twice(2, 8, 99);
    auto name = [](int l, const char* t) { return fmt::format("model.layers.{}.{}", l, t); };
    auto copy_tensor = [&](const std::string& from, const std::string& to) {
        auto src = looped.parameter(from);
        auto dst = twice.parameter(to);
        REQUIRE(src.size() == dst.size());
        std::copy(src.begin(), src.end(), dst.begin());
    };
    const char* attn[] = {"input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
                          "self_attn.v_proj.weight", "self_attn.o_proj.weight"};
    const char* ffn[] = {"post_attention_layernorm.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
                         "mlp.down_proj.weight"};
    const int src_layer[] = {0, 1, 1, 2, 3};  // layer of `looped` that each layer of `twice` copies
    for (int l = 0; l < 5; ++l) {
        for (const char* t : attn) copy_tensor(name(src_layer[l], t), name(l, t));
        for (const char* t : ffn) copy_tensor(name(src_layer[l], t), name(l, t));
    }
    for (auto& w : twice.parameter(name(1, "mlp.down_proj.weight"))) w = 0.0;
    for (const char* t : {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"}) copy_tensor(t, t);

    const batch b = random_batch(2, 8, tiny_model::V, 9);
    loop_plan plan = loop_plan::vanilla(4);
    plan.layers[1] = layer_loop{.k = 1, .heads = {0, 1, 2, 3}};
    const double l1 = looped.forward(b, plan);
    const double l2 = twice.forward(b, loop_plan::vanilla(5));
    CHECK(l1 == doctest::Approx(l2).epsilon(1e-12));
    double max_diff = 0.0;
    for (std::size_t i = 0; i < looped.logits().size(); ++i)
        max_diff = std::max(max_diff, std::abs(looped.logits()[i] - twice.logits()[i]));
    CHECK(max_diff < 1e-12);
    // And the loop does change the output (the check above is not vacuous).
    const double l0 = looped.forward(b, loop_plan::vanilla(4));
    CHECK(std::abs(l0 - l1) > 1e-6);
}

TEST_CASE("first-pass entropy (Eq. 4) matches a brute-force computation from the full attention matrix") {
    tiny_model m(3, 12, 21);
    perturb_norms(m, 4);
    for (auto& w : m.parameter("model.layers.0.self_attn.q_proj.weight")) w *= 20.0;  // sharper attention
    const batch b = random_batch(3, 12, tiny_model::V, 8);
    m.forward(b, loop_plan::vanilla(tiny_model::NL));
    constexpr int C = tiny_model::C, HD = tiny_model::HD, T = 12;
    const auto emb = m.parameter("model.embed_tokens.weight");
    const auto norm = m.parameter("model.layers.0.input_layernorm.weight");
    const auto wq = m.parameter("model.layers.0.self_attn.q_proj.weight");
    const auto wk = m.parameter("model.layers.0.self_attn.k_proj.weight");
    // RoPE by its definition: pair (j, j + HD/2) rotated by angle t · 10000^(−2j/HD).
    auto rope = [&](std::vector<double> v, int t) {
        for (int j = 0; j < HD / 2; ++j) {
            const double a = t * std::pow(10000.0, -2.0 * j / HD), x1 = v[j], x2 = v[j + HD / 2];
            v[j] = x1 * std::cos(a) - x2 * std::sin(a);
            v[j + HD / 2] = x2 * std::cos(a) + x1 * std::sin(a);
        }
        return v;
    };
    for (int head = 0; head < tiny_model::NH; ++head) {
        double mean = 0.0;
        for (int s = 0; s < b.B; ++s) {
            std::vector<std::vector<double>> q(T), k(T);
            for (int t = 0; t < T; ++t) {
                const double* x = emb.data() + std::size_t(b.inputs[s * T + t]) * C;
                double ss = 0.0;
                for (int c = 0; c < C; ++c) ss += x[c] * x[c];
                const double r = 1.0 / std::sqrt(ss / C + 1e-5);
                q[t].assign(HD, 0.0);
                k[t].assign(HD, 0.0);
                for (int d = 0; d < HD; ++d)
                    for (int c = 0; c < C; ++c) {
                        const double a = x[c] * r * norm[c];
                        q[t][d] += a * wq[std::size_t(head * HD + d) * C + c];
                        k[t][d] += a * wk[std::size_t(head * HD + d) * C + c];
                    }
                q[t] = rope(q[t], t);
                k[t] = rope(k[t], t);
            }
            std::vector<double> score(T);
            double mx = -1e300, z = 0.0;
            for (int j = 0; j < T; ++j) {
                score[j] = 0.0;
                for (int d = 0; d < HD; ++d) score[j] += q[T - 1][d] * k[j][d] / std::sqrt(double(HD));
                mx = std::max(mx, score[j]);
            }
            for (int j = 0; j < T; ++j) z += std::exp(score[j] - mx);
            double e = 0.0;
            for (int j = 0; j < T; ++j) {
                const double p = std::exp(score[j] - mx) / z;
                e -= p * std::log(p);
            }
            mean += e / std::log(double(T)) / b.B;
        }
        CAPTURE(head);
        CHECK(m.entropies().head(0, head) == doctest::Approx(mean).epsilon(1e-12));
        CHECK(mean < 0.999);  // attention is not uniform, so the comparison is not trivially 1 = 1
    }
    CHECK(m.entropies().layer_mean(0) ==
          doctest::Approx((m.entropies().head(0, 0) + m.entropies().head(0, 1) + m.entropies().head(0, 2) +
                           m.entropies().head(0, 3)) / 4));
}

TEST_CASE("uniform attention gives entropy 1 in every layer") {
    tiny_model m(2, 8, 3);
    for (const auto& e : m.parameter_table())
        if (e.name.find("q_proj") != std::string::npos)
            for (auto& w : m.parameter(e.name)) w = 0.0;  // q = 0: every score is 0, every row uniform
    m.forward(random_batch(2, 8, tiny_model::V, 1), loop_plan::vanilla(tiny_model::NL));
    for (double e : m.entropies().first_pass) CHECK(e == doctest::Approx(1.0).epsilon(1e-12));
}

TEST_CASE("the last-loop entropy is reported for the looped heads only") {
    tiny_model m(2, 8, 3);
    loop_plan p = loop_plan::vanilla(tiny_model::NL);
    p.layers[2] = layer_loop{.k = 2, .heads = {1, 3}};
    m.forward(random_batch(2, 8, tiny_model::V, 1), p);
    const auto& e = m.entropies();
    for (int l = 0; l < tiny_model::NL; ++l)
        for (int i = 0; i < tiny_model::NH; ++i) {
            const double v = e.last_loop[std::size_t(l) * tiny_model::NH + i];
            const bool looped = l == 2 && (i == 1 || i == 3);
            CHECK(std::isnan(v) != looped);
            if (looped) CHECK((v > 0.0 && v <= 1.0));
        }
}

TEST_CASE("bad input gives sgt::error saying what was expected and what was found") {
    CHECK_THROWS_WITH_AS(tiny_model(2, 40), "model: sequence length 40 is outside [2, 32], the preset's maximum",
                         sgt::error);
    CHECK_THROWS_WITH_AS(tiny_model(0, 8), "model: expected a positive batch size, found 0", sgt::error);
    tiny_model m(2, 8);
    const auto plan = loop_plan::vanilla(tiny_model::NL);
    CHECK_THROWS_WITH_AS(m.forward(random_batch(2, 33, tiny_model::V, 1), plan),
                         "model: sequence length 33 exceeds the preset's maximum sequence 32", sgt::error);
    CHECK_THROWS_WITH_AS(m.forward(random_batch(3, 8, tiny_model::V, 1), plan),
                         "model: batch 3x8 exceeds the capacity 2x8 the model was built for", sgt::error);
    batch b = random_batch(2, 8, tiny_model::V, 1);
    b.inputs[5] = 64;
    CHECK_THROWS_WITH_AS(m.forward(b, plan), "model: token 64 at position 5 is outside [0, 64)", sgt::error);
    b = random_batch(2, 8, tiny_model::V, 1);
    b.targets.pop_back();
    CHECK_THROWS_WITH_AS(m.forward(b, plan), "model: expected 16 inputs and targets for B = 2, T = 8, found 16 and 15",
                         sgt::error);
    loop_plan deep = plan;
    deep.layers[1] = layer_loop{.k = 4, .heads = {0}};
    CHECK_THROWS_WITH_AS(m.forward(random_batch(2, 8, tiny_model::V, 1), deep),
                         "loop plan: layer 1 has K = 4, expected K ≤ K_max = 3", sgt::error);
    CHECK_THROWS_WITH_AS(m.forward(random_batch(2, 8, tiny_model::V, 1), loop_plan::vanilla(3)),
                         "loop plan: expected 4 layers, found 3", sgt::error);
    CHECK_THROWS_WITH_AS(m.backward(), "model: backward() needs a forward() first", sgt::error);
}

TEST_CASE("a forward told the loss scale writes the cross-entropy's gradient: the backward's gradients, nothing twice") {
    const loop_plan plan = plan_with({{2, layer_loop{.k = 2, .heads = {0, 2}}}});
    const batch b = random_batch(2, 8, tiny_model::V, 5);
    tiny_model plain(2, 8, 7), fused(2, 8, 7);
    const double scale = 0.37;  // any weight of the summed loss, as gradient accumulation passes
    const double lp = plain.forward(b, plan);
    plain.backward(scale);
    const double lf = fused.forward(b, plan, scale);
    CHECK(lf == lp);
    CHECK_THROWS_WITH_AS(fused.backward(0.5),
                         "model: backward(0.5) after a forward that wrote the cross-entropy's gradient with scale 0.37",
                         sgt::error);
    fused.backward(scale);
    CHECK(fused.gradients_to_host() == plain.gradients_to_host());
    CHECK_THROWS_WITH_AS(fused.backward(scale), "model: backward() a second time after one forward(); run forward() again",
                         sgt::error);
}

TEST_CASE("the LM head and cross-entropy in chunks of rows: the loss, every gradient and the logits of one batch") {
    const loop_plan plan = plan_with({{2, layer_loop{.k = 2, .heads = {0, 2}}}});
    const batch b = random_batch(3, 7, tiny_model::V, 6);  // 21 rows: chunks of 5 leave one of 1
    tiny_model whole(3, 7, 9), chunked(3, 7, 9);
    CHECK(whole.logits_chunk_rows(21) == 21);  // tiny's logits are far below the automatic chunk's 1 GiB
    chunked.set_logits_chunk(5);
    CHECK(chunked.logits_chunk_rows(21) == 5);
    const double scale = 1.0 / 20.0;
    const double lw = whole.forward(b, plan, scale), lc = chunked.forward(b, plan, scale);
    CHECK(lc == doctest::Approx(lw).epsilon(1e-14));
    whole.backward(scale);
    chunked.backward(scale);
    const auto gw = whole.gradients_to_host(), gc = chunked.gradients_to_host();
    REQUIRE(gw.size() == gc.size());
    double worst = 0.0, largest = 0.0;
    for (std::size_t i = 0; i < gw.size(); ++i) {
        worst = std::max(worst, std::abs(gw[i] - gc[i]));
        largest = std::max(largest, std::abs(gw[i]));
    }
    CHECK(largest > 0.0);
    CHECK(worst <= 1e-12 * largest);
    // The logits after a training forward: formed again chunk by chunk, equal to an unscaled forward's.
    const auto lgc = chunked.logits();
    REQUIRE(lgc.size() == std::size_t(21 * tiny_model::V));
    tiny_model plain(3, 7, 9);
    plain.forward(b, plan);
    const auto lgp = plain.logits();
    double logit_gap = 0.0;
    for (std::size_t i = 0; i < lgc.size(); ++i) logit_gap = std::max(logit_gap, std::abs(lgc[i] - lgp[i]));
    CHECK(logit_gap <= 1e-12);  // products over 5 rows and over 21 may round differently, no more
    CHECK_THROWS_WITH_AS(chunked.set_logits_chunk(-1),
                         "model: expected a logits chunk of 0 (automatic) or more rows, found -1", sgt::error);
}

TEST_CASE("zero_grad() between a training forward and its backward: the backward redoes the LM head's gradient") {
    const loop_plan plan = plan_with({{1, layer_loop{.k = 1, .heads = {1}}}});
    const batch b = random_batch(2, 8, tiny_model::V, 8);
    for (const bool sigma : {false, true}) {  // under σReparam the LM head's gradient is first ∂L/∂Ŵ
        CAPTURE(sigma);
        const sigma_reparam_options so{.enabled = sigma};
        tiny_model straight(2, 8, 4, paper_variant{}, so), zeroed(2, 8, 4, paper_variant{}, so);
        zeroed.set_logits_chunk(8);
        straight.set_logits_chunk(8);
        straight.forward(b, plan, 0.25);
        straight.backward(0.25);
        zeroed.forward(b, plan, 0.25);
        zeroed.zero_grad();  // wipes what the forward added into the LM head's gradient
        zeroed.backward(0.25);
        CHECK(zeroed.gradients_to_host() == straight.gradients_to_host());
    }
}

TEST_CASE("the model refuses a plan beyond its compile-time loop budget (tiny: L = 3, K_max = 3)") {
    tiny_model m(2, 8, 1);
    const batch b = test::random_batch(2, 8, tiny_model::V, 4);
    loop_plan four = loop_plan::vanilla(tiny_model::NL);
    for (auto& l : four.layers) l = layer_loop{.k = 1, .heads = {0}};
    CHECK(test::error_of([&] { m.forward(b, four); }) ==
          "loop plan: 4 layers loop (0, 1, 2, 3), expected at most L = 3 (the model's loop budget)");
    loop_plan deep = loop_plan::vanilla(tiny_model::NL);
    deep.layers[2] = layer_loop{.k = 4, .heads = {0}};
    CHECK(test::error_of([&] { m.forward(b, deep); }) == "loop plan: layer 2 has K = 4, expected K ≤ K_max = 3");
    four.layers[0] = layer_loop{};  // three looping layers: at the budget
    CHECK_NOTHROW(m.forward(b, four));
}

TEST_CASE("ffn: W_1 and W_3 apart (copied into the scratch) give the bits of the adjacent [W_1; W_3]") {
    // The model's table keeps gate_proj and up_proj adjacent, so its FFN multiplies by them in place; a layout
    // that does not (a user's table) takes the copy and the scatter of ffn.hpp, which must change nothing.
    const pass_dims d{.B = 2, .T = 3, .C = 8, .NH = 2, .HD = 4, .F = 12};
    const std::int64_t N = d.tokens(), FC = std::int64_t(d.F) * d.C;
    rng r(11);
    auto rnd = [&](std::int64_t n) {
        std::vector<double> v(static_cast<std::size_t>(n));
        for (double& x : v) x = 0.5 * r.normal();
        return v;
    };
    const auto in = rnd(N * d.C), norm = rnd(d.C), w13 = rnd(2 * FC), w2 = rnd(FC), dout = rnd(N * d.C);
    const auto w3_apart = std::vector<double>(w13.begin() + FC, w13.end());  // W_3 in a buffer of its own
    struct result {
        std::vector<double> out, dres, g13, g2, gnorm;
    };
    auto run = [&](bool adjacent) {
        ffn_record<double, cpu> rec;
        ffn_scratch<double, cpu> s;
        std::vector<double> g13(std::size_t(2 * FC), 0.0), g3_apart(std::size_t(FC), 0.0), g2(std::size_t(FC), 0.0),
            gnorm(std::size_t(d.C), 0.0), dres = dout;
        const ffn_weights<double> w{norm.data(), w13.data(), adjacent ? w13.data() + FC : w3_apart.data(), w2.data()};
        const ffn_grads<double> g{gnorm.data(), g13.data(), adjacent ? g13.data() + FC : g3_apart.data(), g2.data()};
        rng dropout_rng(1);
        ffn_forward(cpu{}, rec, s, w, in.data(), d, 0.0, dropout_rng);
        ffn_backward(cpu{}, dres.data(), g, rec, w, s, d, 0.0);
        if (!adjacent) std::copy(g3_apart.begin(), g3_apart.end(), g13.begin() + FC);
        return result{std::vector<double>(rec.out.begin(), rec.out.begin() + N * d.C), dres, g13, g2, gnorm};
    };
    const result a = run(true), b = run(false);
    CHECK(a.out == b.out);
    CHECK(a.dres == b.dres);
    CHECK(a.g13 == b.g13);
    CHECK(a.g2 == b.g2);
    CHECK(a.gnorm == b.gnorm);
    CHECK(std::any_of(a.g13.begin() + FC, a.g13.end(), [](double x) { return x != 0.0; }));  // W_3's gradient reached
}
