// σReparam (sgt/sigma_reparam.hpp, GATES.md Sec. 5), CPU, double: the gradients of W and γ (and of every other
// tensor through them) by finite differences with u and v held fixed; Ŵ's invariance to the scale of W; with the
// option off the model is the plain one, and at initialisation (γ = σ(W₀)) the reparametrised model computes the
// plain one's loss bit for bit; after enough power-iteration steps σ is the spectral norm of W and Ŵ has spectral
// norm γ (against a host power iteration written here); one power-iteration step per training step, none in
// evaluation; an exact resume with u and v in the checkpoint; bad input refused with messages.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "gradcheck.hpp"
#include "resume.hpp"
#include "support.hpp"
#include "sgt/io/checkpoint.hpp"
#include "sgt/sgt.hpp"

using namespace sgt;

namespace {

constexpr model_config cfg = presets::tiny;  // 4 layers, 4 heads, HD = 8, F = 64, V = 64
constexpr sigma_reparam_options on{.enabled = true};
using plain_model = model<double, cfg>;

// A model type whose constructor (batch, seq, seed) turns σReparam on, for the resume helpers.
template <model_config Cfg>
struct sigma_model : model<double, Cfg> {
    sigma_model(int batch, int seq, std::uint64_t seed) : model<double, Cfg>(batch, seq, seed, paper_variant{}, on) {}
};

loop_plan looped_plan() {
    loop_plan p = loop_plan::vanilla(cfg.shape.layers);
    p.layers[1] = layer_loop{.k = 2, .heads = {1, 3}, .fade = 0.4};
    p.layers[3] = layer_loop{.k = 1, .heads = {0, 2}, .block_repeat = 2};
    return p;
}

// The spectral norm of a (rows, cols) matrix, independently: power iteration on WᵀW from the all-ones vector.
double host_spectral_norm(const std::vector<double>& w, std::int64_t rows, std::int64_t cols) {
    std::vector<double> x(std::size_t(cols), 1.0);
    std::vector<double> y(static_cast<std::size_t>(rows));
    double norm = 0.0;
    for (int it = 0; it < 5000; ++it) {
        for (std::int64_t i = 0; i < rows; ++i) {
            double s = 0.0;
            for (std::int64_t j = 0; j < cols; ++j) s += w[std::size_t(i * cols + j)] * x[std::size_t(j)];
            y[std::size_t(i)] = s;
        }
        std::fill(x.begin(), x.end(), 0.0);
        for (std::int64_t i = 0; i < rows; ++i)
            for (std::int64_t j = 0; j < cols; ++j) x[std::size_t(j)] += w[std::size_t(i * cols + j)] * y[std::size_t(i)];
        double xx = 0.0, yy = 0.0;
        for (double v : x) xx += v * v;
        for (double v : y) yy += v * v;
        norm = std::sqrt(yy);  // ‖W x‖ with ‖x‖ = 1
        for (double& v : x) v /= std::sqrt(xx);
    }
    return norm;
}

std::vector<double> host_matrix(std::span<const double> p) { return {p.begin(), p.end()}; }

}  // namespace

TEST_CASE("σReparam: γ per linear layer in the table (not decayed, = σ(W₀)), u and v as state; none when off") {
    plain_model plain(2, 9, 7);
    model<double, cfg> off(2, 9, 7, paper_variant{}, sigma_reparam_options{});
    model<double, cfg> m(2, 9, 7, paper_variant{}, on);
    CHECK(plain.sigma_reparam_state() == nullptr);
    CHECK(off.sigma_reparam_state() == nullptr);
    CHECK(off.state_table().size() == 0);
    CHECK(off.state_to_host().empty());
    CHECK(off.parameter_table().size() == plain.parameter_table().size());

    const auto linear = sigma_reparam_weights(cfg.shape);
    CHECK(linear.size() == std::size_t(7 * cfg.shape.layers + 1));
    CHECK(m.parameter_table().size() == plain.parameter_table().size() + linear.size());
    CHECK(m.state_table().size() == 2 * linear.size());
    CHECK_FALSE(m.parameter_table().contains(sigma_gamma_name("model.embed_tokens.weight")));
    CHECK_FALSE(m.parameter_table().contains(sigma_gamma_name("model.norm.weight")));
    const auto& s = *m.sigma_reparam_state();
    for (const auto& w : linear) {
        const auto& g = m.entry(sigma_gamma_name(w));
        CHECK(g.shape == std::vector<std::int64_t>{1});
        CHECK_FALSE(g.decay);
        CHECK(m.parameter(g.name)[0] == s.sigma(w));  // γ = σ(W₀), the estimate after the initial iterations
        CHECK(m.state_table().at(sigma_u_name(w)).shape == std::vector<std::int64_t>{m.entry(w).shape[0]});
        CHECK(m.state_table().at(sigma_v_name(w)).shape == std::vector<std::int64_t>{m.entry(w).shape[1]});
    }
    // The decoder's tensors are drawn as the plain model's (γ comes last and draws nothing).
    for (const auto& e : plain.parameter_table()) {
        const auto a = plain.parameter(e.name), b = m.parameter(e.name);
        CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0);
    }
}

TEST_CASE("σReparam off is the plain model; on, at initialisation (γ = σ(W₀)), Ŵ = W and the loss is the plain one's") {
    const batch b = test::random_batch(2, 9, cfg.shape.vocab, 4);
    const loop_plan plan = looped_plan();
    plain_model plain(2, 9, 7);
    model<double, cfg> off(2, 9, 7, paper_variant{}, sigma_reparam_options{});
    const double lp = plain.forward(b, plan), lo = off.forward(b, plan);
    const std::vector<double> logits(plain.logits().begin(), plain.logits().end());
    plain.backward();
    off.backward();
    CHECK(std::memcmp(&lp, &lo, sizeof(double)) == 0);
    const auto gp = plain.gradients_to_host(), go = off.gradients_to_host();
    CHECK(std::memcmp(gp.data(), go.data(), gp.size() * sizeof(double)) == 0);

    model<double, cfg> m(2, 9, 7, paper_variant{}, on);
    m.set_training(false);  // evaluation: no power-iteration step, so σ is the one γ was set to
    const double ls = m.forward(b, plan);
    CHECK(std::memcmp(&lp, &ls, sizeof(double)) == 0);
    const auto lg = m.logits();
    CHECK(std::equal(logits.begin(), logits.end(), lg.begin()));
    for (const auto& w : sigma_reparam_weights(cfg.shape)) {
        const auto what = m.sigma_reparam_state()->weight_to_host(w);
        const auto raw = m.parameter(w);
        CHECK(std::memcmp(what.data(), raw.data(), what.size() * sizeof(double)) == 0);
    }
}

TEST_CASE("σReparam: gradients of W, γ and every other tensor by finite differences, u and v held fixed") {
    model<double, cfg> m(2, 9, 7, paper_variant{}, on);
    // Sharper weights than the init, and γ away from σ(W₀), so that Ŵ ≠ W and attention is far from uniform.
    rng r(13);
    for (const auto& e : m.parameter_table())
        for (auto& w : m.parameter(e.name)) w = is_sigma_gamma(e) ? w * (3.0 + r.normal()) : e.decay ? 4.0 * w : w;
    const batch b = test::random_batch(2, 9, m.V, 6);
    const loop_plan plan = looped_plan();
    // check_named_gradients: zero_grad, then the training forward (its power-iteration step) and backward; the
    // finite differences' forwards follow without zero_grad, so they keep that step's u and v.
    std::vector<std::string> gammas;
    for (const auto& w : sigma_reparam_weights(cfg.shape)) gammas.push_back(sigma_gamma_name(w));
    test::check_named_gradients(m, b, plan, gammas, "every γ", 1);
    test::check_named_gradients(m, b, plan,
        {"model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.k_proj.weight",
         "model.layers.1.self_attn.v_proj.weight", "model.layers.3.self_attn.o_proj.weight",
         "model.layers.0.mlp.gate_proj.weight", "model.layers.2.mlp.up_proj.weight",
         "model.layers.3.mlp.down_proj.weight", "lm_head.weight"},
        "W of the linear layers through Ŵ = (γ/σ(W)) W", 16);
    test::check_named_gradients(m, b, plan,
        {"model.embed_tokens.weight", "model.layers.1.input_layernorm.weight", "model.norm.weight"},
        "the embedding and RMSNorm weights", 16);

    // Ŵ does not change when W is scaled, so ⟨∂L/∂W, W⟩ = 0: the u vᵀ term cancels (γ/σ)⟨G, W⟩ exactly.
    m.zero_grad();
    m.forward(b, plan);
    m.backward();
    for (const auto& w : sigma_reparam_weights(cfg.shape)) {
        const auto g = m.gradient(w), x = m.parameter(w);
        double dot = 0.0, gg = 0.0, xx = 0.0;
        for (std::size_t i = 0; i < g.size(); ++i) {
            dot += g[i] * x[i];
            gg += g[i] * g[i];
            xx += x[i] * x[i];
        }
        CAPTURE(w);
        CHECK(std::abs(dot) <= 1e-12 * std::sqrt(gg * xx));
    }
}

TEST_CASE("σReparam: σ converges to the spectral norm of W and Ŵ has spectral norm γ (host power iteration)") {
    model<double, cfg> m(2, 9, 3, paper_variant{}, on);
    const batch b = test::random_batch(2, 9, cfg.shape.vocab, 2);
    const std::vector<std::string> names{"model.layers.0.self_attn.q_proj.weight", "model.layers.2.mlp.gate_proj.weight",
                                         "model.layers.3.mlp.down_proj.weight", "lm_head.weight"};
    m.parameter(sigma_gamma_name(names[0]))[0] = 0.7;  // γ of its own, not σ(W₀)
    for (int step = 0; step < 400; ++step) {  // training steps without updates: one power-iteration step each
        m.zero_grad();
        m.forward(b, loop_plan::vanilla(cfg.shape.layers));
    }
    const auto& s = *m.sigma_reparam_state();
    for (const auto& w : names) {
        CAPTURE(w);
        const auto& e = m.entry(w);
        const double exact = host_spectral_norm(host_matrix(m.parameter(w)), e.shape[0], e.shape[1]);
        CHECK(s.sigma(w) == doctest::Approx(exact).epsilon(1e-8));
        const double gamma = m.parameter(sigma_gamma_name(w))[0];
        CHECK(host_spectral_norm(s.weight_to_host(w), e.shape[0], e.shape[1]) == doctest::Approx(gamma).epsilon(1e-8));
    }
}

TEST_CASE("σReparam: one power-iteration step per training step (gradient accumulation too), none in evaluation") {
    using test::tiny_bytes;
    sigma_model<tiny_bytes> m(2, 12, 5);
    const batch b = test::random_batch(2, 12, tiny_bytes.shape.vocab, 1);
    const loop_plan plan = loop_plan::vanilla(4);
    const auto u0 = m.state_to_host();
    m.forward(b, plan);  // the constructor's initial iterations were this step's
    CHECK(m.state_to_host() == u0);
    m.zero_grad();
    m.forward(b, plan);
    const auto u1 = m.state_to_host();
    CHECK(u1 != u0);
    m.forward(b, plan);  // a second micro-batch of the same step
    CHECK(m.state_to_host() == u1);
    m.zero_grad();
    m.set_training(false);
    m.forward(b, plan);  // evaluation
    CHECK(m.state_to_host() == u1);

    // The trainer: one step of two micro-batches = one power-iteration step, as a hand-driven zero_grad + forward.
    sigma_model<tiny_bytes> a(2, 12, 5), h(2, 12, 5);
    vanilla_schedule sched(4);
    trainer tr(a, sched, cosine_schedule{.lr_max = 1e-3, .warmup = 1, .total = 10}, adamw_options{}, 4, 12);
    const std::vector<batch> micro{b, test::random_batch(2, 12, tiny_bytes.shape.vocab, 2)};
    tr.step(std::span<const batch>(micro));
    h.zero_grad();
    h.forward(b, plan);
    CHECK(a.state_to_host() == h.state_to_host());
    // reserve() leaves the state as it was.
    sigma_model<tiny_bytes> c(2, 12, 5);
    c.reserve(plan);
    CHECK(c.state_to_host() == u0);
}

TEST_CASE("σReparam: u, v and γ are checkpointed by name and a run resumes bit for bit") {
    using test::tiny_bytes;
    using sigma_bytes = sigma_model<tiny_bytes>;
    const growth_options o{.t_start = 2, .dt = 2, .L = 3, .k_max = 3, .h = 2};
    test::check_exact_resume([&] { return test::resumable_run<sigma_bytes>(o, 4, 24, 10, 3); }, 10, "sigma_reparam");

    test::resumable_run<sigma_bytes> run(o, 4, 24, 6, 3);
    run.steps(6);
    const auto dir = test::fresh_dir("sigma_load");
    const auto saved = save_checkpoint(dir, run.tr, nlohmann::json::object());
    const auto file = io::safetensors::from_file(saved / "model.safetensors");
    CHECK(file.contains("lm_head.weight.sigma_gamma"));
    CHECK(file.contains("model.layers.2.mlp.up_proj.weight.sigma_u"));
    CHECK(file.contains("model.layers.2.mlp.up_proj.weight.sigma_v"));
    {  // the whole checkpoint into fresh objects: the state is the run's
        test::resumable_run<sigma_bytes> fresh(o, 4, 24, 6, 3);
        CHECK(fresh.m.state_to_host() != run.m.state_to_host());
        load_checkpoint(dir, fresh.tr);
        CHECK(fresh.m.state_to_host() == run.m.state_to_host());
        CHECK(fresh.m.parameters_to_host() == run.m.parameters_to_host());
    }
    sigma_bytes fresh(4, 24, 99);  // weights only
    load_weights(dir, fresh);
    CHECK(fresh.state_to_host() == run.m.state_to_host());
    CHECK(fresh.parameters_to_host() == run.m.parameters_to_host());
    const double gamma = fresh.parameter("lm_head.weight.sigma_gamma")[0];
    CHECK(gamma != sigma_bytes(4, 24, 3).parameter("lm_head.weight.sigma_gamma")[0]);  // γ trained

    // A checkpoint with σReparam into a model without it, and the other way round: refused, saying why.
    model<double, tiny_bytes> plain(4, 24, 3);
    CHECK_THROWS_WITH_AS(load_weights(dir, plain), doctest::Contains("written with σReparam on"), sgt::error);
    test::resumable_run<model<double, tiny_bytes>> plain_run(o, 4, 24, 6, 3);
    plain_run.steps(1);
    const auto plain_dir = test::fresh_dir("sigma_plain");
    save_checkpoint(plain_dir, plain_run.tr, nlohmann::json::object());
    const auto before = fresh.parameters_to_host();
    CHECK_THROWS_WITH_AS(load_weights(plain_dir, fresh), doctest::Contains("has σReparam on"), sgt::error);
    CHECK(fresh.parameters_to_host() == before);
    std::filesystem::remove_all(dir);
    std::filesystem::remove_all(plain_dir);
}

TEST_CASE("σReparam: bad input is refused with messages saying what was expected") {
    CHECK_THROWS_WITH_AS((model<double, cfg>(2, 9, 1, paper_variant{}, {.enabled = true, .init_iterations = 0})),
                         doctest::Contains("expected at least 1 initial power-iteration step, found 0"), sgt::error);
    model<double, cfg> m(2, 9, 1, paper_variant{}, on);
    const batch b = test::random_batch(2, 9, cfg.shape.vocab, 1);
    const std::string q = "model.layers.0.self_attn.q_proj.weight";
    for (auto& w : m.parameter(q)) w = 0.0;
    m.set_training(false);
    CHECK_THROWS_WITH_AS(m.forward(b, loop_plan::vanilla(4)),
                         doctest::Contains(("σ = uᵀWv of '" + q + "' is 0, expected a positive finite").c_str()), sgt::error);
    m.set_training(true);
    m.zero_grad();
    CHECK_THROWS_WITH_AS(m.forward(b, loop_plan::vanilla(4)),
                         doctest::Contains(("power iteration on '" + q + "' found a vector of squared norm 0").c_str()),
                         sgt::error);
    const auto& s = *m.sigma_reparam_state();
    CHECK_THROWS_WITH_AS(s.sigma("model.norm.weight"), doctest::Contains("is not one of the linear layers"),
                         sgt::error);
    const std::vector<double> few(3);
    CHECK_THROWS_WITH_AS(m.state_from_host(few), doctest::Contains("state values (u, v), found 3"), sgt::error);
    plain_model plain(2, 9, 1);
    CHECK_THROWS_WITH_AS(plain.state_from_host(few), doctest::Contains("the model has no σReparam"), sgt::error);
    CHECK_NOTHROW(plain.state_from_host({}));
}

TEST_CASE("σReparam: its products are in the FLOPs counter, by hand") {
    // tiny: C = 32, F = 64, V = 64, 4 layers. Linear layers per layer: q, k, v, o (32 x 32), gate, up (64 x 32),
    // down (32 x 64): 4·1,024 + 3·2,048 = 10,240 elements and 4·32 + 2·64 + 32 = 288 rows; the LM head 64 x 32:
    // 2,048 elements, 64 rows. In all 4·10,240 + 2,048 = 43,008 elements and 4·288 + 64 = 1,216 rows, and
    // 10 FLOPs per element (power step 4, σ 2, backward 4) plus 2 per row (uᵀ(Wv)): 432,512 per step.
    plain_model plain(2, 8);
    model<double, cfg> sigma(2, 8, 0, paper_variant{}, on);
    const loop_plan plan = loop_plan::vanilla(cfg.shape.layers);
    CHECK(sigma.step_flops(2, 8, plan) - plain.step_flops(2, 8, plan) == doctest::Approx(432'512.0).epsilon(1e-12));
    CHECK(sigma.sigma_reparam_state()->step_flops() == 432'512.0);
}
