// The pass hook (variant.hpp) and the example variant written outside the library (examples/variants/
// loop_gain.hpp): the default variant is the paper's model; the learned loop gain's gradients by finite
// differences, its FLOPs by hand, its parameters through a checkpoint and an exact resume; a variant with a
// per-position gate on q, a loss term and its own ∂L/∂qkv, checked by finite differences; its parameters named,
// decayed or not, updated by AdamW.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>

#include "../examples/variants/loop_gain.hpp"
#include "gradcheck.hpp"
#include "resume.hpp"
#include "support.hpp"
#include "sgt/io/checkpoint.hpp"
#include "sgt/sgt.hpp"

using namespace sgt;
using loop_gain_example::loop_gain_variant;

namespace {

loop_plan looped_plan() {
    loop_plan p = loop_plan::vanilla(presets::tiny.shape.layers);
    p.layers[1] = layer_loop{.k = 2, .heads = {1, 3}, .fade = 0.4};  // a fade step, then S only
    p.layers[3] = layer_loop{.k = 3, .heads = {0, 2}};
    p.layers[2] = layer_loop{.k = 1, .heads = {2}, .block_repeat = 2};
    return p;
}

// Larger weights than the init, so that attention is far from uniform and every path matters.
template <class Model>
void sharpen(Model& m, std::uint64_t seed) {
    rng r(seed);
    for (const auto& e : m.parameter_table())
        for (auto& w : m.parameter(e.name)) w = e.decay ? 10.0 * w : w + 0.2 * r.normal();
}

}  // namespace

TEST_CASE("the loop-gain variant at its initial gains (1) is the paper's model, bit for bit") {
    model<double, presets::tiny> paper(2, 12, 7);
    model<double, presets::tiny, cpu, loop_gain_variant> gained(2, 12, 7);
    // A variant that transforms head outputs runs its loop steps one by one (model::set_loop_subspace): so does
    // the paper's model here, for the comparison bit for bit.
    paper.set_loop_subspace(false);
    // The decoder's tensors come first, in the same order, with the same initial values; the gains follow.
    const auto& tp = paper.parameter_table();
    const auto& tg = gained.parameter_table();
    REQUIRE(tg.size() == tp.size() + std::size_t(presets::tiny.shape.layers));
    for (const auto& e : tp) CHECK(tg.at(e.name).offset == e.offset);
    const auto& g3 = tg.at("model.layers.3.self_attn.loop_gain");
    CHECK(g3.shape == std::vector<std::int64_t>{presets::tiny.loops.k_max, presets::tiny.shape.heads});
    CHECK_FALSE(g3.decay);
    for (double g : gained.parameter(g3.name)) CHECK(g == 1.0);
    std::vector<double> shared(paper.parameters().begin(), paper.parameters().end());
    std::copy(shared.begin(), shared.end(), gained.parameters().begin());

    const batch b = test::random_batch(2, 12, presets::tiny.shape.vocab, 3);
    const loop_plan plan = looped_plan();
    CHECK(paper.forward(b, plan) == gained.forward(b, plan));
    paper.backward();
    gained.backward();
    for (const auto& e : tp) {
        CAPTURE(e.name);
        const auto a = paper.gradient(e.name), c = gained.gradient(e.name);
        CHECK(std::equal(a.begin(), a.end(), c.begin()));
    }
}

TEST_CASE("loop-gain variant: gradients of its gains and of the decoder by finite differences (double)") {
    model<double, presets::tiny, cpu, loop_gain_variant> m(2, 10, 7);
    sharpen(m, 13);
    rng r(17);
    for (int l = 0; l < m.NL; ++l)
        for (auto& g : m.parameter(loop_gain_variant::gain_name(l))) g = 1.0 + 0.5 * r.normal();  // away from 1
    const batch b = test::random_batch(2, 10, m.V, 4);
    const loop_plan plan = looped_plan();
    test::check_named_gradients(m, b, plan,
        {loop_gain_variant::gain_name(1), loop_gain_variant::gain_name(2), loop_gain_variant::gain_name(3)},
        "loop gains", 100);
    test::check_named_gradients(m, b, plan,
        {"model.layers.1.self_attn.q_proj.weight", "model.layers.3.self_attn.o_proj.weight",
         "model.layers.2.self_attn.v_proj.weight", "model.embed_tokens.weight"},
        "decoder tensors under the gains", 25);
    // Gains of heads and steps no pass uses receive no gradient.
    const auto& e = m.entry(loop_gain_variant::gain_name(3));
    const auto grads = m.gradient(e.name);
    const int NH = m.NH;
    CHECK(grads[std::size_t(0 * NH + 1)] == 0.0);  // step 1, head 1 is not in S = {0, 2}
    CHECK(grads[std::size_t(0 * NH + 0)] != 0.0);
    CHECK(m.gradient(loop_gain_variant::gain_name(0))[0] == 0.0);  // layer 0 does not loop
}

TEST_CASE("loop-gain variant: FLOPs are the paper's plus 3 per looped head value, by hand") {
    model<double, presets::tiny, cpu, loop_gain_variant> m(2, 10, 7);
    const loop_plan plan = looped_plan();
    // Loop-step passes and their heads: layer 1: step 1 (fade: all 4 heads), step 2 (2 heads); layer 2 (two
    // block applications): step 1 (1 head) twice; layer 3: steps 1..3 (2 heads each). 4+2+1+1+6 = 14 head passes.
    const double extra_per_token = 3.0 * 14 * presets::tiny.shape.head_dim;
    const double paper = step_flops(presets::tiny.shape, 2, 10, plan);
    CHECK(m.step_flops(2, 10, plan) == doctest::Approx(paper + 2 * 10 * extra_per_token).epsilon(1e-15));
    model<double, presets::tiny> plain(2, 10, 7);
    CHECK(plain.step_flops(2, 10, plan) == paper);
}

// The k-hop task's tokens are bytes: a tiny model with a byte vocabulary (test::tiny_bytes).
using test::tiny_bytes;

TEST_CASE("loop-gain variant: trained gains are checkpointed, loaded by name, and a run resumes bit for bit") {
    using gained_model = model<double, tiny_bytes, cpu, loop_gain_variant>;
    test::check_exact_resume(
        [] {
            return test::resumable_run<gained_model>(
                growth_options{.t_start = 2, .dt = 2, .L = 3, .k_max = 3, .h = 2}, 4, 24, 10, 3);
        },
        10, "loop_gain");

    // The gains moved in training, are in the checkpoint under their names, and load into a fresh model.
    test::resumable_run<gained_model> run(growth_options{.t_start = 2, .dt = 2, .L = 3, .k_max = 3, .h = 2}, 4, 24, 8,
                                          3);
    run.steps(8);
    const auto dir = test::fresh_dir("loop_gain_load");
    const auto saved = save_checkpoint(dir, run.tr, nlohmann::json::object());
    const auto f = io::safetensors::from_file(saved / "model.safetensors");
    CHECK(f.contains("model.layers.3.self_attn.loop_gain"));
    gained_model fresh(4, 24, 99);
    load_weights(dir, fresh);
    const auto a = run.m.parameter(loop_gain_variant::gain_name(3));
    const auto c = fresh.parameter(loop_gain_variant::gain_name(3));
    CHECK(std::equal(a.begin(), a.end(), c.begin()));
    CHECK(std::any_of(a.begin(), a.end(), [](double g) { return g != 1.0; }));
    // A paper model cannot load it (a tensor it does not have), and the message names it.
    model<double, tiny_bytes> plain(4, 24, 1);
    CHECK_THROWS_WITH_AS(load_weights(dir, plain), doctest::Contains("expected the model's"), sgt::error);
    std::filesystem::remove_all(dir);
}

namespace {

// A per-position gate on the heads' queries, with a loss term: s_{r,i} = σ(w_i · q_{r,i} + c_i), o_{r,i} ← s·o,
// loss += λ · mean(s). Exercises every hook: its own parameters (one decayed, one not), a per-position gain,
// a gradient into q (∂L/∂qkv of its own) and a loss term. CPU only (it reads host memory directly).
struct query_gate_variant : paper_variant {
    double lambda = 0.3;
    static std::string w_name(int l) { return layer_param_name(l, "self_attn.qgate.weight"); }
    static std::string c_name(int l) { return layer_param_name(l, "self_attn.qgate.bias"); }
    void add_parameters(const model_config& c, parameter_table& t) const {
        for (int l = 0; l < c.shape.layers; ++l) {
            t.add(w_name(l), {c.shape.heads, c.shape.head_dim}, true, param_init::normal(0.3));
            t.add(c_name(l), {c.shape.heads}, false, param_init::constant(0.5));
        }
    }
    bool transforms(const pass_site& site, const layer_loop&) const { return site.step == 0; }

    // saved: o before the gate (N n HD), then s (N n).
    double transform_forward(cpu be, pass_context<double, cpu>& c, double* o) {
        const std::int64_t N = c.d.tokens(), n = c.n(), HD = c.d.HD, values = N * n * HD;
        c.saved->resize(std::size_t(values + N * n));
        double* o_in = c.saved->data();
        double* s = o_in + values;
        std::copy(o, o + values, o_in);
        const double* w = c.weight(w_name(c.site.layer));
        const double* b = c.weight(c_name(c.site.layer));
        double sum = 0.0;
        for (std::int64_t r = 0; r < N; ++r)
            for (int i = 0; i < n; ++i) {
                const int h = c.heads[std::size_t(i)];
                const double* q = c.qkv + r * 3 * n * HD + i * HD;
                double z = b[h];
                for (int d = 0; d < HD; ++d) z += w[h * HD + d] * q[d];
                s[r * n + i] = 1.0 / (1.0 + std::exp(-z));
                sum += s[r * n + i];
            }
        head_gain_forward(be, o, s, N, int(n), int(HD), true);
        return lambda * sum / double(N * n);
    }
    bool transform_backward(cpu be, pass_context<double, cpu>& c, double* d_o, double* dqkv) {
        const std::int64_t N = c.d.tokens(), n = c.n(), HD = c.d.HD, values = N * n * HD;
        const double* o_in = c.saved->data();
        const double* s = o_in + values;
        std::vector<double> ds(std::size_t(N * n), 0.0);
        head_gain_backward(be, ds.data(), d_o, o_in, s, N, int(n), int(HD), true);
        const double* w = c.weight(w_name(c.site.layer));
        double* dw = c.grad(w_name(c.site.layer));
        double* db = c.grad(c_name(c.site.layer));
        std::fill(dqkv, dqkv + N * 3 * n * HD, 0.0);
        for (std::int64_t r = 0; r < N; ++r)
            for (int i = 0; i < n; ++i) {
                const int h = c.heads[std::size_t(i)];
                const double g = ds[std::size_t(r * n + i)] + lambda / double(N * n);  // ∂L/∂s
                const double dz = g * s[r * n + i] * (1.0 - s[r * n + i]);
                const double* q = c.qkv + r * 3 * n * HD + i * HD;
                double* dq = dqkv + r * 3 * n * HD + i * HD;
                db[h] += dz;
                for (int d = 0; d < HD; ++d) {
                    dw[h * HD + d] += dz * q[d];
                    dq[d] = dz * w[h * HD + d];
                }
            }
        return true;
    }
};

}  // namespace

TEST_CASE("a gate variant with a loss term and its own ∂L/∂q: finite differences through every hook") {
    model<double, presets::tiny, cpu, query_gate_variant> m(2, 9, 7);
    sharpen(m, 21);
    const batch b = test::random_batch(2, 9, m.V, 6);
    const loop_plan plan = looped_plan();
    const double loss = m.forward(b, plan);
    CHECK(m.extra_loss() > 0.0);
    CHECK(loss == doctest::Approx(m.last_loss().mean() + m.extra_loss()).epsilon(1e-15));
    test::check_named_gradients(m, b, plan,
        {query_gate_variant::w_name(0), query_gate_variant::c_name(0), query_gate_variant::w_name(2),
         query_gate_variant::c_name(3)},
        "gate parameters", 25);
    test::check_named_gradients(m, b, plan,
        {"model.layers.0.self_attn.q_proj.weight", "model.layers.2.self_attn.q_proj.weight",
         "model.layers.1.input_layernorm.weight", "model.embed_tokens.weight"},
        "through the gate into q, the norm and the embeddings", 25);
}

TEST_CASE("a variant's tensors are updated by AdamW, decayed as its table says") {
    model<double, presets::tiny, cpu, query_gate_variant> m(1, 4, 7);
    adamw<double> opt(m.parameter_table(), std::int64_t(m.parameters().size()),
                      adamw_options{.weight_decay = 0.5, .clip = 0.0});
    m.zero_grad();  // zero gradients: only the weight decay moves a tensor
    const auto w0 = std::vector<double>(m.parameter(query_gate_variant::w_name(1)).begin(),
                                        m.parameter(query_gate_variant::w_name(1)).end());
    opt.step(m.parameters(), m.gradients(), 0.1);
    const auto w1 = m.parameter(query_gate_variant::w_name(1));
    for (std::size_t i = 0; i < w0.size(); ++i) CHECK(w1[i] == doctest::Approx(w0[i] * (1.0 - 0.1 * 0.5)));
    for (double c : m.parameter(query_gate_variant::c_name(1))) CHECK(c == 0.5);  // not decayed
}

TEST_CASE("parameter table: names are unique, shapes positive, lookups by name say what is missing") {
    auto t = parameter_table::llama(presets::tiny.shape);
    CHECK_THROWS_WITH_AS(t.add("lm_head.weight", {2}, true, param_init::normal(0.02)),
                         "parameter table: a tensor named 'lm_head.weight' exists already", sgt::error);
    CHECK_THROWS_WITH_AS(t.add("x", {2, 0}, true, param_init::normal(0.02)),
                         "parameter table: tensor 'x' has a dimension 0, expected > 0", sgt::error);
    CHECK_THROWS_WITH_AS(t.at("model.layers.9.mlp.up_proj.weight"),
                         "parameter table: no tensor named 'model.layers.9.mlp.up_proj.weight'", sgt::error);
    const auto L = t.layer(2);
    CHECK(L.q->name == "model.layers.2.self_attn.q_proj.weight");
    CHECK(L.down->shape == std::vector<std::int64_t>{presets::tiny.shape.width(), presets::tiny.shape.d_ff});
    CHECK(t.numel() == presets::tiny.shape.total_params());
}
