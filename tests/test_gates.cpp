// Learned head gates (sgt/gates.hpp, GATES.md Sec. 1-2, 6, 7), CPU, double: the gate ops by finite differences
// (w, c, q and k through the prefix mean); the gated model's gradients by finite differences (gate parameters,
// W_Q, W_K through the gate); straight-through = a hard-masked forward with the soft backward, against an
// independent reference written with plain loops; causality; open gates and n_dense = NH reproduce the dense
// model bit for bit; the FLOPs by hand; the sparsity report; bad options; the gate allocation (Sec. 3.2); an
// exact resume with the gates in the checkpoint.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>

#include "gradcheck.hpp"
#include "resume.hpp"
#include "support.hpp"
#include "sgt/gates.hpp"
#include "sgt/io/checkpoint.hpp"
#include "sgt/sgt.hpp"

using namespace sgt;

namespace {

constexpr model_config cfg = presets::tiny;  // 4 layers, 4 heads, HD = 8
using dense_model = model<double, cfg>;
using gated_model = model<double, cfg, cpu, gated_variant>;

loop_plan looped_plan() {
    loop_plan p = loop_plan::vanilla(cfg.shape.layers);
    p.layers[1] = layer_loop{.k = 2, .heads = {1, 3}, .fade = 0.4};
    p.layers[2] = layer_loop{.k = 1, .heads = {2}, .block_repeat = 2};  // two block applications: gated twice
    p.layers[3] = layer_loop{.k = 1, .heads = {0, 2}};
    return p;
}

// Sharper weights than the init (attention far from uniform), and gates away from their init: w ~ N(0, w_std),
// c = bias + N(0, 1).
template <class Model>
void perturb(Model& m, std::uint64_t seed, double w_std, double bias) {
    rng r(seed);
    for (const auto& e : m.parameter_table()) {
        const bool gate = e.name.find(".gate.") != std::string::npos;
        for (auto& w : m.parameter(e.name)) {
            if (!gate)
                w = e.decay ? 10.0 * w : w + 0.2 * r.normal();
            else if (e.name.ends_with("weight"))
                w = w_std * r.normal();
            else
                w = bias + r.normal();
        }
    }
}

template <class Model>
std::vector<double> grads_after(Model& m, const batch& b, const loop_plan& plan, double* loss = nullptr) {
    m.zero_grad();
    const double l = m.forward(b, plan);
    if (loss) *loss = l;
    m.backward();
    return {m.gradients().begin(), m.gradients().end()};
}

double sigmoid(double z) { return 1.0 / (1.0 + std::exp(-z)); }

// The gate written again with plain loops and the prefix mean recomputed at every position: hard (s·[s ≥ θ]) or
// soft forward, the soft backward, λ · mean s per pass. Same parameters and names as gated_variant; gates the
// first pass of every layer, no dense heads. The independent reference for the straight-through tests.
struct reference_gate : paper_variant {
    double theta = 0.3, lambda = 0.0;
    bool hard = true;
    void add_parameters(const model_config& c, parameter_table& t) const {
        for (int l = 0; l < c.shape.layers; ++l) {
            t.add(gated_variant::weight_name(l), {c.shape.heads, 2 * c.shape.head_dim}, false, param_init::constant(0));
            t.add(gated_variant::bias_name(l), {c.shape.heads}, false, param_init::constant(2));
        }
    }
    bool transforms(const pass_site& site, const layer_loop&) const { return site.step == 0; }
    static std::vector<double> prefix_mean(const pass_context<double, cpu>& c, std::int64_t b, int t, int i) {
        const int n = c.n(), HD = c.d.HD;
        std::vector<double> kbar(std::size_t(HD), 0.0);
        for (int u = 0; u <= t; ++u)
            for (int d = 0; d < HD; ++d) kbar[std::size_t(d)] += c.qkv[((b * c.d.T + u) * 3 + 1) * n * HD + i * HD + d];
        for (auto& v : kbar) v /= double(t + 1);
        return kbar;
    }
    double transform_forward(cpu, pass_context<double, cpu>& c, double* o) {
        const int n = c.n(), HD = c.d.HD;
        const std::int64_t N = c.d.tokens();
        c.saved->assign(std::size_t(N * n * HD + N * n), 0.0);
        double* o_in = c.saved->data();
        double* s = o_in + N * n * HD;
        std::copy(o, o + N * n * HD, o_in);
        const double* w = c.weight(gated_variant::weight_name(c.site.layer));
        const double* cb = c.weight(gated_variant::bias_name(c.site.layer));
        double sum = 0.0;
        for (std::int64_t b = 0; b < c.d.B; ++b)
            for (int t = 0; t < c.d.T; ++t)
                for (int i = 0; i < n; ++i) {
                    const int h = c.heads[std::size_t(i)];
                    const auto kbar = prefix_mean(c, b, t, i);
                    const std::int64_t r = b * c.d.T + t;
                    double z = cb[h];
                    for (int d = 0; d < HD; ++d)
                        z += w[h * 2 * HD + d] * c.qkv[r * 3 * n * HD + i * HD + d] + w[h * 2 * HD + HD + d] * kbar[std::size_t(d)];
                    const double sv = sigmoid(z);
                    s[r * n + i] = sv;
                    sum += sv;
                    const double g = hard && sv < theta ? 0.0 : sv;
                    for (int d = 0; d < HD; ++d) o[(r * n + i) * HD + d] *= g;
                }
        return lambda * sum / double(N * n);
    }
    bool transform_backward(cpu, pass_context<double, cpu>& c, double* d_o, double* dqkv) {
        const int n = c.n(), HD = c.d.HD;
        const std::int64_t N = c.d.tokens();
        const double* o_in = c.saved->data();
        const double* s = o_in + N * n * HD;
        const double* w = c.weight(gated_variant::weight_name(c.site.layer));
        double* dw = c.grad(gated_variant::weight_name(c.site.layer));
        double* dc = c.grad(gated_variant::bias_name(c.site.layer));
        std::fill(dqkv, dqkv + N * 3 * n * HD, 0.0);
        for (std::int64_t b = 0; b < c.d.B; ++b)
            for (int t = 0; t < c.d.T; ++t)
                for (int i = 0; i < n; ++i) {
                    const int h = c.heads[std::size_t(i)];
                    const std::int64_t r = b * c.d.T + t;
                    double ds = lambda / double(N * n);
                    for (int d = 0; d < HD; ++d) {
                        ds += o_in[(r * n + i) * HD + d] * d_o[(r * n + i) * HD + d];
                        d_o[(r * n + i) * HD + d] *= s[r * n + i];
                    }
                    const double dz = ds * s[r * n + i] * (1.0 - s[r * n + i]);
                    const auto kbar = prefix_mean(c, b, t, i);
                    dc[h] += dz;
                    for (int d = 0; d < HD; ++d) {
                        dw[h * 2 * HD + d] += dz * c.qkv[r * 3 * n * HD + i * HD + d];
                        dw[h * 2 * HD + HD + d] += dz * kbar[std::size_t(d)];
                        dqkv[r * 3 * n * HD + i * HD + d] = dz * w[h * 2 * HD + d];
                        for (int u = 0; u <= t; ++u)
                            dqkv[(b * c.d.T + u) * 3 * n * HD + n * HD + i * HD + d] += dz * w[h * 2 * HD + HD + d] / double(t + 1);
                    }
                }
        return true;
    }
};
using reference_model = model<double, cfg, cpu, reference_gate>;

}  // namespace

TEST_CASE("gate ops: forward by hand, backward by finite differences (w, c, q, k through the prefix mean)") {
    const int B = 2, T = 5, n = 3, HD = 4, i0 = 1, ng = n - i0;
    rng r(3);
    auto qkv = test::random_vector(std::size_t(B * T * 3 * n * HD), r);
    auto w = test::random_vector(std::size_t(ng * 2 * HD), r, 0.5);
    auto c = test::random_vector(std::size_t(ng), r);
    const auto a = test::random_vector(std::size_t(B * T * n), r);  // f = Σ a·s over the gated heads + λ' Σ s
    const double ds_add = 0.37;
    std::vector<double> s(std::size_t(B * T * n)), g(s.size());
    const auto f = [&] {
        gate_forward(cpu{}, s.data(), g.data(), qkv.data(), w.data(), c.data(), B, T, n, HD, i0, 0.3, false);
        double v = 0.0;
        for (std::size_t o = 0; o < s.size(); ++o)
            if (int(o % n) >= i0) v += (a[o] + ds_add) * s[o];
        return v;
    };
    f();
    // By hand at (b = 1, t = 3, head 2): the prefix mean of the keys of positions 0..3.
    {
        const int b = 1, t = 3, i = 2, j = i - i0;
        double z = c[std::size_t(j)];
        for (int d = 0; d < HD; ++d) {
            double kbar = 0.0;
            for (int u = 0; u <= t; ++u) kbar += qkv[std::size_t(((b * T + u) * 3 + 1) * n * HD + i * HD + d)];
            z += w[std::size_t(j * 2 * HD + d)] * qkv[std::size_t((b * T + t) * 3 * n * HD + i * HD + d)] +
                 w[std::size_t(j * 2 * HD + HD + d)] * kbar / (t + 1);
        }
        CHECK(s[std::size_t((b * T + t) * n + i)] == doctest::Approx(sigmoid(z)).epsilon(1e-14));
        CHECK(s[std::size_t((b * T + t) * n + 0)] == 1.0);  // dense head
        CHECK(g[std::size_t((b * T + t) * n + 0)] == 1.0);
    }
    std::vector<double> dqkv(qkv.size(), 7.0), dw(w.size(), 0.0), dc(c.size(), 0.0);
    gate_backward(cpu{}, dqkv.data(), dw.data(), dc.data(), a.data(), s.data(), qkv.data(), w.data(), B, T, n, HD,
                  i0, ds_add);
    test::check_gradient(test::compare_gradient(w, dw, f), "gate op: w");
    test::check_gradient(test::compare_gradient(c, dc, f), "gate op: c");
    test::check_gradient(test::compare_gradient(qkv, dqkv, f), "gate op: q and k (v and the dense head: 0)");
    for (int r0 = 0; r0 < B * T; ++r0)
        for (int d = 0; d < n * HD; ++d) CHECK(dqkv[std::size_t(r0 * 3 * n * HD + 2 * n * HD + d)] == 0.0);  // v

    // Hard: g = s·[s ≥ θ]; s unchanged.
    std::vector<double> s2(s.size()), g2(s.size());
    gate_forward(cpu{}, s2.data(), g2.data(), qkv.data(), w.data(), c.data(), B, T, n, HD, i0, 0.5, true);
    int closed = 0;
    for (std::size_t o = 0; o < s.size(); ++o) {
        CHECK(s2[o] == s[o]);
        CHECK(g2[o] == (int(o % n) >= i0 && s[o] < 0.5 ? 0.0 : s[o]));
        closed += g2[o] == 0.0;
    }
    CHECK(closed > 0);
    CHECK(closed < ng * B * T);
}

TEST_CASE("gated model: parameters named, initialised (w = 0, c = +2), not decayed; only gated layers have them") {
    gated_model m(2, 8, 7, gated_variant(gate_options{.layers = {1, 3}}));
    const auto& w = m.entry("model.layers.1.self_attn.gate.weight");
    CHECK(w.shape == std::vector<std::int64_t>{cfg.shape.heads, 2 * cfg.shape.head_dim});
    CHECK_FALSE(w.decay);
    CHECK_FALSE(m.entry("model.layers.3.self_attn.gate.bias").decay);
    for (double v : m.parameter(w.name)) CHECK(v == 0.0);
    for (double v : m.parameter("model.layers.3.self_attn.gate.bias")) CHECK(v == 2.0);
    CHECK_FALSE(m.parameter_table().contains("model.layers.0.self_attn.gate.weight"));
    // At init every head is open: s = σ(2) everywhere, sparsity 0.
    m.forward(test::random_batch(2, 8, m.V, 1), looped_plan());
    const auto rep = m.variant().report();
    CHECK(rep.layers == std::vector<int>{1, 3});
    CHECK(rep.sparsity == 0.0);
    CHECK(rep.mean_score[0] == doctest::Approx(sigmoid(2.0)).epsilon(1e-12));
    CHECK(rep.score(3, 2) == doctest::Approx(sigmoid(2.0)).epsilon(1e-12));
    CHECK(rep.score(0, 2) == -1.0);
}

TEST_CASE("gated model, soft: gradients of the gates and of W_Q, W_K through them by finite differences") {
    gated_model m(2, 9, 7, gated_variant(gate_options{.straight_through = false, .n_dense = 1, .lambda = 0.5}));
    perturb(m, 11, 0.4, 0.0);
    const batch b = test::random_batch(2, 9, m.V, 6);
    const loop_plan plan = looped_plan();
    const double loss = m.forward(b, plan);
    CHECK(m.extra_loss() > 0.0);
    CHECK(loss == doctest::Approx(m.last_loss().mean() + m.extra_loss()).epsilon(1e-15));
    test::check_named_gradients(m, b, plan,
        {gated_variant::weight_name(0), gated_variant::bias_name(0), gated_variant::weight_name(2),
         gated_variant::bias_name(3)},
        "gate weights and biases", 30);
    test::check_named_gradients(m, b, plan,
        {"model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight",
         "model.layers.2.self_attn.k_proj.weight", "model.layers.3.self_attn.q_proj.weight",
         "model.embed_tokens.weight"},
        "W_Q, W_K and the embeddings through the gates", 20);
    // The dense head's gate row receives no gradient.
    grads_after(m, b, plan);
    for (int d = 0; d < 2 * m.HD; ++d) CHECK(m.gradient(gated_variant::weight_name(0))[std::size_t(d)] == 0.0);
    CHECK(m.gradient(gated_variant::bias_name(0))[0] == 0.0);
}

TEST_CASE("straight-through: the forward is the hard-masked model, the backward the soft one (vs a plain-loop reference)") {
    const batch b = test::random_batch(2, 9, cfg.shape.vocab, 8);
    const loop_plan plan = loop_plan::vanilla(cfg.shape.layers);
    reference_model ref(2, 9, 7);
    perturb(ref, 19, 0.6, 0.0);  // scores spread around 0.5: some pairs closed at θ = 0.45
    const std::vector<double> p(ref.parameters().begin(), ref.parameters().end());
    const auto load = [&](auto& m) { std::copy(p.begin(), p.end(), m.parameters().begin()); };

    for (const bool hard : {true, false}) {
        CAPTURE(hard);
        ref.variant().theta = 0.45;
        ref.variant().lambda = 0.2;
        ref.variant().hard = hard;
        gated_model m(2, 9, 7, gated_variant(gate_options{.threshold = 0.45, .straight_through = hard, .lambda = 0.2}));
        load(m);
        double l_ref = 0.0, l_m = 0.0;
        const auto g_ref = grads_after(ref, b, plan, &l_ref);
        const auto g_m = grads_after(m, b, plan, &l_m);
        CHECK(l_m == doctest::Approx(l_ref).epsilon(1e-13));
        double worst = 0.0, scale = 0.0;
        for (std::size_t i = 0; i < g_ref.size(); ++i) {
            worst = std::max(worst, std::abs(g_ref[i] - g_m[i]));
            scale = std::max(scale, std::abs(g_ref[i]));
        }
        CHECK(worst <= 1e-12 * scale);
        const double sparsity = m.variant().report().sparsity;
        CHECK(sparsity > 0.05);
        CHECK(sparsity < 0.95);
    }
    // The reference's soft backward is the soft model's gradient: finite differences.
    ref.variant().hard = false;
    test::check_named_gradients(ref, b, plan,
        {gated_variant::weight_name(1), "model.layers.1.self_attn.k_proj.weight"},
        "reference gate, soft", 20);
    // Hard and soft differ in the forward where pairs are closed.
    gated_model hard_m(2, 9, 7, gated_variant(gate_options{.threshold = 0.45}));
    gated_model soft_m(2, 9, 7, gated_variant(gate_options{.threshold = 0.45, .straight_through = false}));
    load(hard_m);
    load(soft_m);
    const double l_hard = hard_m.forward(b, plan);
    CHECK(l_hard != soft_m.forward(b, plan));
    // A soft-trained model thresholds at inference when asked: then it is the hard model's forward.
    CHECK_FALSE(soft_m.variant().thresholding());
    soft_m.variant().set_thresholding(true);
    CHECK(soft_m.forward(b, plan) == l_hard);
    soft_m.variant().set_thresholding(false);
    CHECK(soft_m.forward(b, plan) != l_hard);
    // With θ below every score nothing is closed, and straight-through is the soft model, bit for bit.
    gated_model open_st(2, 9, 7, gated_variant(gate_options{.threshold = 1e-9}));
    gated_model open_soft(2, 9, 7, gated_variant(gate_options{.threshold = 1e-9, .straight_through = false}));
    load(open_st);
    load(open_soft);
    double l1 = 0.0, l2 = 0.0;
    const auto g1 = grads_after(open_st, b, plan, &l1);
    const auto g2 = grads_after(open_soft, b, plan, &l2);
    CHECK(l1 == l2);
    CHECK(g1 == g2);
    CHECK(open_st.variant().report().sparsity == 0.0);
}

TEST_CASE("gated model: causal (tokens after t change nothing at positions ≤ t), straight-through, gates closed") {
    gated_model m(1, 12, 7, gated_variant(gate_options{.threshold = 0.45, .n_dense = 1}));
    perturb(m, 23, 0.6, 0.0);
    const loop_plan plan = looped_plan();
    batch a = test::random_batch(1, 12, m.V, 9);
    m.forward(a, plan);
    CHECK(m.variant().report().sparsity > 0.05);
    const std::vector<double> la(m.logits().begin(), m.logits().end());
    const int t0 = 6;
    batch b = a;
    rng r(4);
    for (int t = t0 + 1; t < 12; ++t) b.inputs[std::size_t(t)] = std::int32_t((b.inputs[std::size_t(t)] + 1 + r.below(10)) % m.V);
    m.forward(b, plan);
    const std::vector<double> lb(m.logits().begin(), m.logits().end());
    for (int i = 0; i < (t0 + 1) * m.V; ++i) REQUIRE(la[std::size_t(i)] == lb[std::size_t(i)]);
    bool later_differ = false;
    for (std::size_t i = std::size_t((t0 + 1) * m.V); i < la.size(); ++i) later_differ |= la[i] != lb[i];
    CHECK(later_differ);
}

TEST_CASE("open gates (w = 0, c = +50) and n_dense = NH reproduce the dense model bit for bit") {
    const batch b = test::random_batch(2, 10, cfg.shape.vocab, 12);
    const loop_plan plan = looped_plan();
    dense_model dense(2, 10, 7);
    perturb(dense, 29, 0.0, 0.0);
    const std::vector<double> p(dense.parameters().begin(), dense.parameters().end());
    double l_dense = 0.0;
    const auto g_dense = grads_after(dense, b, plan, &l_dense);
    const auto same_as_dense = [&](gated_model& m) {
        std::copy(p.begin(), p.end(), m.parameters().begin());  // the decoder's tensors come first, same order
        double l = 0.0;
        const auto g = grads_after(m, b, plan, &l);
        CHECK(l == l_dense);
        CHECK(std::equal(g_dense.begin(), g_dense.end(), g.begin()));
    };
    gated_model open(2, 10, 7, gated_variant(gate_options{.lambda = 0.0}));
    for (int l = 0; l < open.NL; ++l)
        for (auto& c : open.parameter(gated_variant::bias_name(l))) c = 50.0;
    same_as_dense(open);
    CHECK(open.variant().report().sparsity == 0.0);

    gated_model all_dense(2, 10, 7, gated_variant(gate_options{.n_dense = cfg.shape.heads, .lambda = 3.0}));
    perturb(all_dense, 31, 1.0, -3.0);  // gates that would close everything
    same_as_dense(all_dense);
    CHECK(all_dense.extra_loss() == 0.0);
}

TEST_CASE("gated model: FLOPs are the paper's plus 12·HD per gated head and token, by hand") {
    const loop_plan plan = looped_plan();
    const double paper = step_flops(cfg.shape, 2, 10, plan);
    // Gated first passes: layers 0, 1, 3 once and layer 2 twice (block_repeat 2) = 5 passes of 4 heads; with
    // n_dense = 1, 3 gated heads each. Per gated head and token: 2·2·HD forward, 3x that in all = 12·8 = 96.
    gated_model m(2, 10, 7, gated_variant(gate_options{.n_dense = 1}));
    CHECK(m.step_flops(2, 10, plan) == doctest::Approx(paper + 2 * 10 * (5 * 3 * 96.0)).epsilon(1e-15));
    gated_model some(2, 10, 7, gated_variant(gate_options{.layers = {2}}));
    CHECK(some.step_flops(2, 10, plan) == doctest::Approx(paper + 2 * 10 * (2 * 4 * 96.0)).epsilon(1e-15));
}

TEST_CASE("gate options: bad values are refused with messages saying what was expected") {
    const auto msg = [](gate_options o) { return test::error_of([&] { gated_model m(1, 4, 1, gated_variant(o)); }); };
    CHECK(msg({.threshold = 0.0}) == "gates: expected a threshold θ in (0, 1), found 0");
    CHECK(msg({.threshold = 1.5}) == "gates: expected a threshold θ in (0, 1), found 1.5");
    CHECK(msg({.lambda = -0.1}) == "gates: expected a sparsity weight λ ≥ 0, found -0.1");
    CHECK(msg({.n_dense = -1}) == "gates: expected n_dense ≥ 0 dense heads, found -1");
    CHECK(msg({.n_dense = 5}) == "gates: expected n_dense ≤ 4 (the head count), found 5");
    CHECK(msg({.layers = {4}}) == "gates: gated layer 4 does not exist, expected layers in [0, 4)");
    CHECK(msg({.layers = {2, 1}}) == "gates: expected the gated layers ascending and distinct, found 1 after 2");
    CHECK(msg({.layers = {-1}}) == "gates: expected gated layers ≥ 0, found -1");
    CHECK(msg({.threshold = 0.3, .n_dense = 4}).empty());
    // The same checks on options read back from a checkpoint's metadata (what to_json writes)
    auto j = gated_variant(gate_options{.threshold = 0.3, .layers = {1, 2}}).to_json();
    CHECK(gated_variant::options_from_json(j, "ck").layers == std::vector<int>{1, 2});
    j["threshold"] = 1.5;
    CHECK(test::error_of([&] { gated_variant::options_from_json(j, "ck"); }) ==
          "gates: expected a threshold θ in (0, 1), found 1.5");
    j["threshold"] = 0.3;
    j["layers"] = {2, 2};
    CHECK(test::error_of([&] { gated_variant::options_from_json(j, "ck"); }) ==
          "gates: expected the gated layers ascending and distinct, found 2 after 2");
}

TEST_CASE("gate allocation (GATES.md Sec. 3.2): S_l = the h heads with the highest mean gate score, in growth") {
    gated_model m(2, 10, 7, gated_variant(gate_options{.n_dense = 1, .layers = {1, 2, 3}}));
    // w = 0: each head's score is σ(c_i), whatever the input. Layer 3: heads 2 and 3 highest among the gated
    // ones; head 0 is dense (score 1).
    const std::vector<double> c3{9.0, -1.0, 0.5, 3.0};
    std::copy(c3.begin(), c3.end(), m.parameter(gated_variant::bias_name(3)).begin());
    const std::vector<double> c2{0.0, 2.0, -3.0, 1.0};
    std::copy(c2.begin(), c2.end(), m.parameter(gated_variant::bias_name(2)).begin());
    m.forward(test::random_batch(2, 10, m.V, 2), loop_plan::vanilla(m.NL));
    const auto rep = m.variant().report();
    CHECK(rep.score(3, 0) == 1.0);
    CHECK(rep.score(3, 3) == doctest::Approx(sigmoid(3.0)).epsilon(1e-12));
    const std::vector<double> flat(4, 1.0);  // entropies play no part
    gate_allocation a(&m.variant());
    CHECK(a.select_layer(3, flat, 2) == std::vector<int>{0, 3});
    CHECK(a.select_layer(3, flat, 3) == std::vector<int>{0, 2, 3});
    CHECK(a.select_layer(2, flat, 2) == std::vector<int>{0, 1});
    CHECK(test::error_of([&] { a.select_layer(0, flat, 2); }) ==
          "allocation gate: layer 0 has no gate scores (gated layers of the last forward: 1, 2, 3)");
    CHECK(test::error_of([&] { a.select_layer(3, flat, 5); }) ==
          "allocation gate: h must be in [1, 4] (the layer's head count), found 5");
    CHECK(test::error_of([&] { a.select(flat, 2); }) ==
          "allocation gate: needs the layer (growth_operator calls select_layer)");

    // In Algorithm 1: the first activated layer (deep to shallow: the deepest candidate) gets the gate's heads,
    // where entropy allocation (top_h) would pick by entropy.
    growth_options o{.t_start = 1, .dt = 1, .L = 1, .k_max = 1, .h = 2, .excluded = {0}};
    growth_operator<gate_allocation> g(m.shape, o, gate_allocation(&m.variant()));
    CHECK(g.name() == "sgt(gate)");
    entropy_report er(m.NL, m.NH);
    for (int l = 0; l < m.NL; ++l)
        for (int i = 0; i < m.NH; ++i) er.first_pass[std::size_t(l * m.NH + i)] = l == 3 ? 3.0 - i : 1.0;
    const auto events = g.end_step(1, er);
    REQUIRE_FALSE(events.empty());
    CHECK(events.front().layer == 3);
    CHECK(events.front().heads == std::vector<int>{0, 3});
    growth_operator<> entropy_op(m.shape, o);
    CHECK(entropy_op.end_step(1, er).front().heads == std::vector<int>{0, 1});
}

TEST_CASE("gated model: the gates are checkpointed by name and a run resumes bit for bit") {
    using test::tiny_bytes;
    using gated_bytes = model<double, tiny_bytes, cpu, gated_variant>;  // default options: θ = 0.3, all layers
    const growth_options o{.t_start = 2, .dt = 2, .L = 3, .k_max = 3, .h = 2};
    test::check_exact_resume([&] { return test::resumable_run<gated_bytes>(o, 4, 24, 10, 3); }, 10, "gates");

    test::resumable_run<gated_bytes> run(o, 4, 24, 6, 3);
    run.steps(6);
    const auto dir = test::fresh_dir("gates_load");
    const auto saved = save_checkpoint(dir, run.tr, nlohmann::json::object());
    CHECK(io::safetensors::from_file(saved / "model.safetensors").contains("model.layers.2.self_attn.gate.weight"));
    gated_bytes fresh(4, 24, 99);
    load_weights(dir, fresh);
    const auto a = run.m.parameter(gated_variant::weight_name(2));
    const auto b = fresh.parameter(gated_variant::weight_name(2));
    CHECK(std::equal(a.begin(), a.end(), b.begin()));
    CHECK(std::any_of(a.begin(), a.end(), [](double w) { return w != 0.0; }));  // the gates trained
    std::filesystem::remove_all(dir);
}

TEST_CASE("self-distillation (GATES.md Sec. 4): τ and BCE(s, τ) against plain loops, o left dense, gate gradients by FD") {
    constexpr int B = 2, T_ = 5, NH = 4, HD = 8, C = NH * HD;
    parameter_table table;
    gated_variant v(gate_options{.n_dense = 1});
    v.add_parameters(cfg, table);
    table.add(layer_param_name(0, "self_attn.o_proj.weight"), {C, C}, true, param_init::normal(0.02));
    rng r(31);
    std::vector<double> params(std::size_t(table.numel())), grads(params.size(), 0.0);
    for (auto& p : params) p = 0.5 * r.normal();
    const std::int64_t N = std::int64_t(B) * T_;
    std::vector<double> qkv(std::size_t(N * 3 * C)), o(std::size_t(N * C));
    for (auto& x : qkv) x = r.normal();
    for (auto& x : o) x = r.normal();
    const std::vector<int> heads{0, 1, 2, 3};
    cpu::buffer<double> saved;
    pass_context<double, cpu> c{.site = {0, 0, 0}, .heads = heads, .d = {.B = B, .T = T_, .C = C, .NH = NH, .HD = HD},
                                .qkv = qkv.data(), .saved = &saved, .table = &table, .params = params.data(),
                                .grads = grads.data()};
    v.set_distilling(true);
    auto bce_of = [&] {
        std::vector<double> x = o;
        const double l = v.transform_forward(cpu{}, c, x.data());
        CHECK(x == o);  // distilling, the pass stays dense
        return l;
    };
    const double bce = bce_of();

    // The reference: s by the gate's formula, τ from explicit products W_O^(i) o_i, BCE over heads 1..3.
    const double* w = c.weight(gated_variant::weight_name(0));
    const double* cb = c.weight(gated_variant::bias_name(0));
    const double* wo = c.weight(layer_param_name(0, "self_attn.o_proj.weight"));
    double ref = 0.0;
    for (int b = 0; b < B; ++b)
        for (int t = 0; t < T_; ++t) {
            const std::int64_t row = std::int64_t(b) * T_ + t;
            std::vector<double> norm(NH);
            for (int i = 0; i < NH; ++i) {
                double sq = 0.0;
                for (int out = 0; out < C; ++out) {
                    double y = 0.0;
                    for (int d = 0; d < HD; ++d) y += wo[out * C + i * HD + d] * o[std::size_t((row * NH + i) * HD + d)];
                    sq += y * y;
                }
                norm[std::size_t(i)] = std::sqrt(sq);
            }
            const double top = *std::max_element(norm.begin(), norm.end());
            for (int i = 1; i < NH; ++i) {
                const auto kbar = reference_gate::prefix_mean(c, b, t, i);
                double z = cb[i];
                for (int d = 0; d < HD; ++d)
                    z += w[i * 2 * HD + d] * qkv[std::size_t(row * 3 * C + i * HD + d)] + w[i * 2 * HD + HD + d] * kbar[std::size_t(d)];
                const double s = sigmoid(z), tau = norm[std::size_t(i)] / top;
                ref -= tau * std::log(s) + (1.0 - tau) * std::log(1.0 - s);
            }
        }
    ref /= double(N * (NH - 1));
    CHECK(bce == doctest::Approx(ref).epsilon(1e-12));

    // Backward: ∂L/∂o passes through unchanged, nothing is written for q and k, the gate gradients match finite
    // differences of the BCE; the dense head's row stays zero.
    v.transform_forward(cpu{}, c, std::vector<double>(o).data());
    std::vector<double> d_o(o.size()), dqkv(qkv.size());
    for (auto& x : d_o) x = r.normal();
    const auto d_o0 = d_o;
    CHECK_FALSE(v.transform_backward(cpu{}, c, d_o.data(), dqkv.data()));
    CHECK(d_o == d_o0);
    std::vector<std::size_t> idx;
    const auto& we = table.at(gated_variant::weight_name(0));
    const auto& be = table.at(gated_variant::bias_name(0));
    for (int k = 0; k < 2 * HD * NH; k += 3) idx.push_back(std::size_t(we.offset + k));
    for (int k = 0; k < NH; ++k) idx.push_back(std::size_t(be.offset + k));
    const auto err = test::compare_gradient(std::span<double>(params), grads, bce_of, idx);
    test::check_gradient(err, "distillation: gate weights and biases");
    for (int d = 0; d < 2 * HD; ++d) CHECK(grads[std::size_t(we.offset + d)] == 0.0);
    CHECK(grads[std::size_t(be.offset)] == 0.0);
}

TEST_CASE("self-distillation trains the gates alone: dense weights loaded and frozen, the dense LM loss, BCE falls") {
    const loop_plan plan = loop_plan::vanilla(cfg.shape.layers);
    const batch b = test::random_batch(2, 9, dense_model::V, 8);
    dense_model dense(2, 9, 7);
    perturb(dense, 12, 0.0, 0.0);
    static_schedule dense_sched(plan, cfg.shape.heads, "vanilla");
    trainer dense_tr(dense, dense_sched, cosine_schedule{.lr_max = 1e-3, .warmup = 1, .total = 10}, adamw_options{}, 2, 9);
    const auto dir = test::fresh_dir("distill_dense");
    save_checkpoint(dir, dense_tr, nlohmann::json::object());

    gated_model m(2, 9, 99, gated_variant(gate_options{.n_dense = 1}));
    load_weights_subset(dir, m, gated_variant::is_gate_parameter);
    for (const auto& e : dense.parameter_table()) {
        const auto a = dense.parameter(e.name), g = m.parameter(e.name);
        CHECK_MESSAGE(std::equal(a.begin(), a.end(), g.begin()), e.name);
    }
    CHECK(m.parameter(gated_variant::bias_name(2))[0] == 2.0);  // the gates keep their init
    m.variant().set_distilling(true);
    const double dense_loss = dense.forward(b, plan);
    m.forward(b, plan);
    CHECK(m.last_loss().mean() == dense_loss);  // the passes stay dense, bit for bit
    test::check_named_gradients(m, b, plan, {gated_variant::weight_name(0), gated_variant::bias_name(0),
                                             gated_variant::weight_name(3), gated_variant::bias_name(3)},
                                "distillation through the model: gate weights and biases", 30);

    static_schedule sched(plan, cfg.shape.heads, "vanilla");
    trainer tr(m, sched, cosine_schedule{.lr_max = 3e-2, .warmup = 1, .total = 40}, adamw_options{}, 2, 9);
    tr.optimizer().set_trainable(gated_variant::is_gate_parameter);
    const auto before = m.parameters_to_host();
    std::vector<double> bce;
    for (int t = 0; t < 40; ++t) {
        tr.step(b);
        bce.push_back(m.extra_loss());
    }
    INFO("BCE(s, tau): step 1 " << bce.front() << ", step 40 " << bce.back());
    CHECK(bce.back() < 0.8 * bce.front());
    const auto after = m.parameters_to_host();
    bool gates_moved = false;
    for (const auto& e : m.parameter_table())
        for (std::int64_t k = 0; k < e.numel(); ++k) {
            const auto i = std::size_t(e.offset + k);
            if (gated_variant::is_gate_parameter(e))
                gates_moved = gates_moved || after[i] != before[i];
            else if (after[i] != before[i])
                FAIL("a frozen tensor changed: " << e.name);
        }
    CHECK(gates_moved);

    // Refused: a checkpoint with tensors the model lacks, one of another shape, and nothing left to train.
    const auto gated_dir = test::fresh_dir("distill_gated");
    save_checkpoint(gated_dir, tr, nlohmann::json::object());
    dense_model plain(2, 9, 1);
    CHECK_THROWS_WITH_AS(load_weights_subset(gated_dir, plain, gated_variant::is_gate_parameter),
                         doctest::Contains("tensors that this model does not have"), sgt::error);
    model<double, presets::char_micro, cpu, gated_variant> other(2, 9, 1);
    CHECK_THROWS_WITH_AS(load_weights_subset(dir, other, gated_variant::is_gate_parameter),
                         doctest::Contains("differs from this model's"), sgt::error);
    CHECK_THROWS_WITH_AS(tr.optimizer().set_trainable([](const param_entry&) { return false; }),
                         doctest::Contains("left no tensor to train"), sgt::error);
    std::filesystem::remove_all(dir);
    std::filesystem::remove_all(gated_dir);
}
