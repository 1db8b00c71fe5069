// Thread-count independence: 20 training steps of char_mini (SGT growth with loops and a fade window, dropout
// on) give bit-identical losses, gradient norms and weights on 1, 2 and 4 threads; every CPU op that splits its
// work (matrix products, cross-entropy, the gradient norm, AdamW, attention, RMSNorm, RoPE, SwiGLU) runs on more
// than one block here. And the default thread count stays within the cores the process may use.
#include <doctest/doctest.h>

#include <cstring>
#include <vector>

#include "sgt/sgt.hpp"
#include "support.hpp"

using namespace sgt;

namespace {

struct run_bits {
    std::vector<double> losses, grad_norms;
    std::vector<float> weights;
    nlohmann::json schedule;
};

run_bits run_on(int threads) {
    set_threads(threads);
    using model_t = model<float, presets::char_mini>;
    constexpr int B = 4, T = 32, steps = 20;
    model_t m(B, T, 5);
    m.set_dropout(0.1);
    growth_options o = growth_options::from_budget(presets::char_mini.loops);
    o.t_start = 3;
    o.dt = 4;  // decisions at 3, 7, 11, 15, 19: loops of K up to 3 with fade windows inside the 20 steps
    o.excluded = {};
    growth_operator<> g(model_t::shape, o);
    trainer tr(m, g, cosine_schedule{.lr_max = 3e-3, .warmup = 4, .total = steps}, adamw_options{}, B, T);
    k_hop_dataset data(k_hop_options{.symbols = 6, .min_hops = 1, .max_hops = 2});
    rng r(9);
    run_bits out;
    for (int t = 0; t < steps; ++t) {
        const step_stats s = tr.step(data.train_batch(r, B, T));
        out.losses.push_back(s.loss);
        out.grad_norms.push_back(s.grad_norm);
    }
    out.weights = m.parameters_to_host();
    out.schedule = g.to_json();
    set_threads(0);
    return out;
}

}  // namespace

TEST_CASE("1, 2 and 4 threads: bit-identical losses, gradient norms and weights over 20 steps of char_mini") {
    const run_bits one = run_on(1);
    CHECK(one.schedule.at("state").at("active").size() >= 2);  // loops were grown, so looped passes ran
    for (int n : {2, 4}) {
        CAPTURE(n);
        const run_bits other = run_on(n);
        CHECK(other.losses == one.losses);  // exact equality of doubles, not a tolerance
        CHECK(other.grad_norms == one.grad_norms);
        REQUIRE(other.weights.size() == one.weights.size());
        CHECK(std::memcmp(other.weights.data(), one.weights.data(), one.weights.size() * sizeof(float)) == 0);
        CHECK(other.schedule == one.schedule);
    }
}

TEST_CASE("each parallel op splits char_mini's work into several blocks (so the test above runs them threaded)") {
    // The block sizes of backend/cpu at B x T = 4 x 32 tokens of char_mini (C = 128, F = 384, V = 256).
    constexpr std::int64_t N = 4 * 32;
    CHECK(N / detail::matmul_grain(N) >= 4);
    CHECK(std::int64_t(128) / detail::matmul_grain(128) >= 4);  // the weight-gradient products, by output rows
    const std::int64_t params = presets::char_mini.shape.total_params();
    CHECK(params / detail::grain_for(params, 1 << 14) >= 4);  // the gradient norm
    CHECK(params / detail::grain_for(params, 65536) >= 4);    // AdamW
    CHECK(N / detail::grain_for(N, 16384 / 256) >= 2);        // cross-entropy over V = 256
}

TEST_CASE("a product of a few rows (a decode step's), split by output columns, has the same bits on any thread count") {
    const int N = 3, I = 256, O = 4096;  // 16 blocks of 256 columns
    REQUIRE(O / detail::matmul_grain(O) >= 4);
    std::vector<float> x(std::size_t(N) * I), w(std::size_t(O) * I), add(std::size_t(N) * O);
    rng r(4);
    for (auto* v : {&x, &w, &add})
        for (auto& e : *v) e = float(r.normal());
    auto product = [&](int threads) {
        set_threads(threads);
        std::vector<float> y(std::size_t(N) * O);
        matmul_forward(cpu{}, y.data(), x.data(), w.data(), N, I, O, false, add.data());
        set_threads(0);
        return y;
    };
    const std::vector<float> one = product(1);
    for (int n : {2, 3, 4}) CHECK(product(n) == one);
}

TEST_CASE("parallel_sum adds its blocks in order whatever the thread count") {
    // Values whose float sum depends on the order: a large value, then many small ones that vanish next to it.
    std::vector<double> x(100000);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = i % 1000 == 0 ? 1e16 : 1.0 + double(i % 7) / 3.0;
    auto sum_with = [&](int threads) {
        set_threads(threads);
        const double s = parallel_sum<double>(std::int64_t(x.size()), 100, [&](std::int64_t b, std::int64_t e) {
            double part = 0.0;
            for (std::int64_t i = b; i < e; ++i) part += x[std::size_t(i)];
            return part;
        });
        set_threads(0);
        return s;
    };
    const double one = sum_with(1);
    for (int n : {2, 3, 4, 7}) CHECK(sum_with(n) == one);
    // The block bounds are the same for any thread count: recompute them by hand, in order.
    const std::int64_t grain = detail::grain_for(std::int64_t(x.size()), 100);
    double by_hand = 0.0;
    for (std::int64_t b = 0; b < std::int64_t(x.size()); b += grain) {
        double part = 0.0;
        for (std::int64_t i = b; i < std::min<std::int64_t>(b + grain, std::int64_t(x.size())); ++i)
            part += x[std::size_t(i)];
        by_hand += part;
    }
    CHECK(one == by_hand);
}

TEST_CASE("the default thread count stays within the cores the process may use") {
    CHECK(available_cores() >= 1);
    CHECK(default_threads() >= 1);
    CHECK(default_threads() <= available_cores());
    set_threads(3);
    CHECK(threads() == 3);
    set_threads(0);
    CHECK(threads() == default_threads());
    CHECK(test::error_of([] { set_threads(-1); }) ==
          "threads: expected a thread count >= 1 (or 0 for the default), found -1");
    // cgroup v2 cpu.max: "quota period", or "max period" for none.
    CHECK(detail::cgroup_cpu_quota("max 100000") == 0);
    CHECK(detail::cgroup_cpu_quota("200000 100000") == 2);
    CHECK(detail::cgroup_cpu_quota("150000 100000") == 2);
    CHECK(detail::cgroup_cpu_quota("50000 100000") == 1);
    CHECK(detail::cgroup_cpu_quota("") == 0);
}
