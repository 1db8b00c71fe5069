// The learned head gates (sgt/gates.hpp, GATES.md Sec. 1-2) on the GPU: the gate ops against the CPU backend in
// double at odd sizes (fp32 ≤ 1e-5, bf16 ≤ 2e-2), and the gated tiny model in fp32 against the CPU (loss ≤ 1e-5,
// every gradient ≤ 1e-4, the same sparsity), straight-through and soft, with dense heads and a looped plan; and
// self-distillation (τ, the BCE term, every gradient) likewise.
#include <cmath>
#include <cstdio>

#include "sgt/gates.hpp"
#include "../support.hpp"
#include "support.hpp"

using namespace sgt;
using test::bf16;

namespace {
const cpu host{};
const cuda dev{};
}  // namespace

TEST_CASE_TEMPLATE("gate forward and backward match the CPU at odd sizes", T, float, bf16) {
    sgt::rng r(41);
    struct size {
        int B, T_, n, HD, i0;
    };
    for (const auto [B, T_, n, HD, i0] : {size{1, 1, 1, 2, 0}, size{3, 29, 5, 8, 2}, size{2, 300, 4, 32, 1},
                                          size{5, 17, 3, 6, 3}, size{1, 1100, 2, 16, 0}}) {
        const int ng = n - i0;
        const std::string name = fmt::format(" B={} T={} n={} HD={} i0={}", B, T_, n, HD, i0);
        const std::size_t rows = std::size_t(B) * T_;
        const auto qkv = test::rounded<T>(test::random_vector(r, rows * 3 * n * HD));
        const auto w = test::rounded<T>(test::random_vector(r, std::size_t(ng) * 2 * HD + 1, 0.3));
        const auto c = test::rounded<T>(test::random_vector(r, std::size_t(ng) + 1));
        const auto ds = test::rounded<T>(test::random_vector(r, rows * n));
        const auto dw0 = test::rounded<T>(test::random_vector(r, std::size_t(ng) * 2 * HD + 1));
        const auto dc0 = test::rounded<T>(test::random_vector(r, std::size_t(ng) + 1));
        auto gqkv = test::to_device<T>(qkv), gw = test::to_device<T>(w), gc = test::to_device<T>(c);
        for (const bool hard : {false, true}) {
            std::vector<double> s(rows * n), g(rows * n);
            gate_forward(host, s.data(), g.data(), qkv.data(), w.data(), c.data(), B, T_, n, HD, i0, 0.5, hard);
            auto gs = test::poisoned<T>(s.size()), gg = test::poisoned<T>(g.size());
            gate_forward(dev, gs.data(), gg.data(), gqkv.data(), gw.data(), gc.data(), B, T_, n, HD, i0, 0.5, hard);
            const auto s_dev = test::to_host(gs);
            test::check_error<T>("gate_forward s" + name, test::rel_error(s_dev, s));
            // g from the device's own scores. The device thresholds its score before rounding it to T, so a score
            // within one rounding step of θ (bf16: 2^-8 at 0.5) may fall either side: there g must be 0 or s.
            const auto g_dev = test::to_host(gg);
            std::vector<double> g_ref(g.size());
            for (std::size_t o = 0; o < g.size(); ++o) {
                g_ref[o] = int(o % n) < i0 ? 1.0 : (hard && s_dev[o] < 0.5 ? 0.0 : s_dev[o]);
                const bool at_threshold = hard && int(o % n) >= i0 && std::abs(s_dev[o] - 0.5) <= 0.004;
                if (at_threshold && (g_dev[o] == 0.0 || g_dev[o] == s_dev[o])) g_ref[o] = g_dev[o];
            }
            test::check_error<T>(std::string(hard ? "gate_forward g hard" : "gate_forward g soft") + name,
                                 test::rel_error(g_dev, g_ref));
        }
        // The backward from the device's scores, as the model runs it.
        std::vector<double> s(rows * n), g(rows * n);
        auto gs = test::poisoned<T>(s.size()), gg = test::poisoned<T>(g.size());
        gate_forward(dev, gs.data(), gg.data(), gqkv.data(), gw.data(), gc.data(), B, T_, n, HD, i0, 0.5, false);
        const auto s_dev = test::to_host(gs);
        std::vector<double> dqkv(qkv.size()), dw = dw0, dc = dc0;
        gate_backward(host, dqkv.data(), dw.data(), dc.data(), ds.data(), s_dev.data(), qkv.data(), w.data(), B, T_,
                      n, HD, i0, 0.125);
        auto gdqkv = test::poisoned<T>(dqkv.size());
        auto gdw = test::to_device<T>(dw0), gdc = test::to_device<T>(dc0), gds = test::to_device<T>(ds);
        gate_backward(dev, gdqkv.data(), gdw.data(), gdc.data(), gds.data(), gs.data(), gqkv.data(), gw.data(), B, T_,
                      n, HD, i0, 0.125);
        test::check_error<T>("gate_backward dqkv" + name, test::rel_error(test::to_host(gdqkv), dqkv));
        test::check_error<T>("gate_backward dw" + name, test::rel_error(test::to_host(gdw), dw));
        test::check_error<T>("gate_backward dc" + name, test::rel_error(test::to_host(gdc), dc));
    }
}

namespace {
using test::tiny_bytes;
constexpr int B = 3, T_ = 29;

batch random_batch(std::uint64_t seed) { return test::random_batch_some_ignored(B, T_, tiny_bytes.shape.vocab, seed); }
}  // namespace

TEST_CASE("the gated model on the GPU matches the CPU in fp32: loss, every gradient, sparsity") {
    loop_plan plan = loop_plan::vanilla(4);
    plan.layers[1] = layer_loop{.k = 2, .heads = {1, 3}, .fade = 0.4};
    plan.layers[2] = layer_loop{.k = 1, .heads = {2}, .block_repeat = 2};
    const batch b = random_batch(5);
    for (const bool st : {true, false}) {
        CAPTURE(st);
        const gate_options o{.threshold = 0.45, .straight_through = st, .n_dense = 1, .lambda = 0.1};
        model<float, tiny_bytes, cpu, gated_variant> mc(B, T_, 7, gated_variant(o));
        model<float, tiny_bytes, cuda, gated_variant> mg(B, T_, 7, gated_variant(o));
        // Gates away from their init (some pairs closed), the same on both.
        auto params = mc.parameters_to_host();
        rng r(3);
        for (const auto& e : mc.parameter_table()) {
            if (e.name.find(".gate.") == std::string::npos) continue;
            const bool bias = e.name.ends_with("bias");
            for (std::int64_t i = 0; i < e.numel(); ++i)
                params[std::size_t(e.offset + i)] = float(bias ? r.normal() : 2.0 * r.normal());
        }
        mc.parameters_from_host(params);
        mg.parameters_from_host(params);
        const double lc = mc.forward(b, plan), lg = mg.forward(b, plan);
        mc.backward();
        mg.backward();
        const double sc = mc.variant().report().sparsity, sg = mg.variant().report().sparsity;
        std::printf("  gated %s: loss cpu %.8f gpu %.8f, sparsity cpu %.4f gpu %.4f\n", st ? "straight-through" : "soft",
                    lc, lg, sc, sg);
        CHECK(sc > 0.0);
        CHECK(std::abs(sc - sg) <= 2.0 / (B * T_ * 3 * 5));  // at most one pair on the other side of θ
        CHECK(std::abs(lg - lc) / std::abs(lc) <= 1e-5);
        test::check_gradients(mc, mg, [](const std::string&) { return 1e-4; });
        CHECK(mg.step_flops(B, T_, plan) == mc.step_flops(B, T_, plan));
    }
}

TEST_CASE("self-distillation on the GPU matches the CPU in fp32: τ, BCE(s, τ), every gradient (GATES.md Sec. 4)") {
    loop_plan plan = loop_plan::vanilla(4);
    plan.layers[1] = layer_loop{.k = 2, .heads = {1, 3}};
    const batch b = random_batch(6);
    const gate_options o{.threshold = 0.3, .n_dense = 1};
    model<float, tiny_bytes, cpu, gated_variant> mc(B, T_, 9, gated_variant(o));
    model<float, tiny_bytes, cuda, gated_variant> mg(B, T_, 9, gated_variant(o));
    auto params = mc.parameters_to_host();
    rng r(5);
    for (const auto& e : mc.parameter_table()) {  // gates and W_O away from their init, the same on both
        const bool gate = e.name.find(".gate.") != std::string::npos, wo = e.name.ends_with("o_proj.weight");
        if (!gate && !wo) continue;
        for (std::int64_t i = 0; i < e.numel(); ++i)
            params[std::size_t(e.offset + i)] = float(gate ? 1.5 * r.normal() : 0.2 * r.normal());
    }
    mc.parameters_from_host(params);
    mg.parameters_from_host(params);
    mc.variant().set_distilling(true);
    mg.variant().set_distilling(true);
    const double lc = mc.forward(b, plan), lg = mg.forward(b, plan);
    const double bc = mc.extra_loss(), bg = mg.extra_loss();
    std::printf("  distilling: loss cpu %.8f gpu %.8f, BCE cpu %.8f gpu %.8f\n", lc, lg, bc, bg);
    CHECK(bc > 0.0);
    CHECK(std::abs(bg - bc) / bc <= 1e-5);
    CHECK(std::abs(lg - lc) / std::abs(lc) <= 1e-5);
    mc.backward();
    mg.backward();
    test::check_gradients(mc, mg, [](const std::string&) { return 1e-4; });
}
