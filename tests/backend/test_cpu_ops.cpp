// Tests of the CPU backend's leaf ops (include/sgt/backend/cpu/*.hpp), in double.
//
// Every forward is compared with a naive loop implementation written here; every backward with fourth-order
// central differences of L = Σ w ⊙ forward(...) for a fixed random w (tests/gradcheck.hpp), on odd sizes.
// Backwards documented to accumulate are run on a buffer pre-filled with a known value, which must come back
// raised by exactly the gradient; those documented to overwrite are run on a buffer full of garbage.
// A float instantiation of each op is compared with the double one at the end.
// Set SGT_TEST_VERBOSE=1 to print the largest error found per check.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <numbers>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "../gradcheck.hpp"
#include "sgt/backend/cpu.hpp"

namespace {

using dvec = std::vector<double>;
using sgt::test::compare_gradient;
using sgt::test::random_vector;

constexpr sgt::cpu cpu{};
constexpr double kPrefill = 0.375;  // exactly representable: pre-filled gradient buffers hold it

void note(const std::string& what, double err) {
    if (std::getenv("SGT_TEST_VERBOSE")) std::printf("  %-52s max err %.3e\n", what.c_str(), err);
}

dvec randn(std::size_t n, std::uint64_t seed, double scale = 1.0) {
    sgt::rng r(seed);
    return random_vector(n, r, scale);
}

double dot(const dvec& a, const dvec& b) {
    double s = 0.0;
    for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
    return s;
}

double max_abs(const dvec& a) {
    double m = 0.0;
    for (double v : a) m = std::max(m, std::abs(v));
    return m;
}

template <class A>
double max_abs_diff(const std::vector<A>& a, const dvec& b) {
    REQUIRE(a.size() == b.size());
    double m = 0.0;
    for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(double(a[i]) - b[i]));
    return m;
}

// max |a − b| / max |b|: the error relative to the size of the reference.
template <class A>
double rel_err(const std::vector<A>& a, const dvec& b) {
    return max_abs_diff(a, b) / std::max(max_abs(b), 1e-300);
}

std::vector<float> to_float(const dvec& a) { return {a.begin(), a.end()}; }

// Gradient check of `analytic` against central differences of f in x (all entries, or those of idx).
void check_fd(dvec& x, const dvec& analytic, const std::function<double()>& f, const std::string& what,
              std::vector<std::size_t> idx = {}) {
    REQUIRE(x.size() == analytic.size());
    const auto e = compare_gradient(x, analytic, f, std::move(idx));
    note("FD " + what, std::max(e.max_rel, e.max_abs));
    sgt::test::check_gradient(e, what);
}

// The += contract: runs backward(g) on a zeroed buffer and on one pre-filled with kPrefill; the second must
// come back as the first plus kPrefill. Returns the gradient (the zeroed run).
dvec accumulated(std::size_t n, const std::function<void(double*)>& backward, const std::string& what) {
    dvec g(n, 0.0), pre(n, kPrefill);
    backward(g.data());
    backward(pre.data());
    double worst = 0.0;
    for (std::size_t i = 0; i < n; ++i) worst = std::max(worst, std::abs(pre[i] - kPrefill - g[i]) / (1.0 + std::abs(g[i])));
    INFO(what << ": pre-filled buffer minus " << kPrefill << " vs zeroed buffer, max diff " << worst);
    CHECK(worst <= 1e-13);
    CHECK(max_abs(g) > 0.0);
    return g;
}

// The overwrite contract: backward(g) on a buffer full of garbage gives the same as on a zeroed one. Both runs
// write the same buffer: a product's last bits may depend on where its output starts (Eigen peels unaligned
// leading elements off its vector loops), which is not what this checks.
dvec overwritten(std::size_t n, const std::function<void(double*)>& backward, const std::string& what) {
    dvec g(n, 0.0);
    backward(g.data());
    const dvec zeroed = g;
    std::fill(g.begin(), g.end(), -123.5);
    backward(g.data());
    INFO(what << ": garbage-filled buffer vs zeroed buffer");
    CHECK(max_abs_diff(g, zeroed) == 0.0);
    return g;
}

// ---------------------------------------------------------------------------------------------------------
// Naive references: plain loops from the formulas, sharing no code with the ops.

dvec naive_matmul(const dvec& x, const dvec& W, int N, int I, int O) {
    dvec y(std::size_t(N) * O, 0.0);
    for (int n = 0; n < N; ++n)
        for (int o = 0; o < O; ++o)
            for (int i = 0; i < I; ++i) y[n * O + o] += x[n * I + i] * W[o * I + i];
    return y;
}

dvec naive_rmsnorm(const dvec& x, const dvec& w, int N, int C, double eps, dvec* rstd = nullptr) {
    dvec y(x.size());
    if (rstd) rstd->assign(N, 0.0);
    for (int n = 0; n < N; ++n) {
        double ms = 0.0;
        for (int c = 0; c < C; ++c) ms += x[n * C + c] * x[n * C + c] / C;
        const double rms = std::sqrt(ms + eps);
        if (rstd) (*rstd)[n] = 1.0 / rms;
        for (int c = 0; c < C; ++c) y[n * C + c] = x[n * C + c] / rms * w[c];
    }
    return y;
}

// silu through tanh: σ(g) = (1 + tanh(g/2)) / 2, a different formula from the op's 1 / (1 + e^−g).
double naive_silu(double g) { return g * 0.5 * (1.0 + std::tanh(0.5 * g)); }

// Per row: log Σ exp(z) − z[target], the log-sum-exp without the max shift (the test's logits are small).
double naive_cross_entropy(const dvec& z, const std::vector<std::int32_t>& tgt, int N, int V, int* count) {
    double s = 0.0;
    *count = 0;
    for (int n = 0; n < N; ++n) {
        if (tgt[n] < 0) continue;
        double e = 0.0;
        for (int v = 0; v < V; ++v) e += std::exp(z[n * V + v]);
        s += std::log(e) - z[n * V + tgt[n]];
        ++*count;
    }
    return s;
}

// Position of q/k/v (c = 0/1/2) of head i, dim d, at (b, t) in the packed (B, T, 3, n, HD) layout.
std::size_t qkv_at(int b, int t, int c, int i, int d, int T, int n, int HD) {
    return ((std::size_t(b) * T + t) * 3 + c) * std::size_t(n) * HD + std::size_t(i) * HD + d;
}

struct naive_attn {
    dvec out;      // (B, T, n, HD)
    dvec probs;    // (B, n, T, T)
    dvec entropy;  // (B, n)
};

// softmax_j≤t(q_t·k_j / √HD), out_t = Σ_j p_tj v_j, per head; entropy −(1/log T) Σ p log p of the last row.
naive_attn naive_attention(const dvec& qkv, int B, int T, int n, int HD) {
    naive_attn a{dvec(std::size_t(B) * T * n * HD, 0.0), dvec(std::size_t(B) * n * T * T, 0.0),
                 dvec(std::size_t(B) * n, 0.0)};
    for (int b = 0; b < B; ++b)
        for (int i = 0; i < n; ++i)
            for (int t = 0; t < T; ++t) {
                dvec e(t + 1);
                double z = 0.0;
                for (int j = 0; j <= t; ++j) {
                    double s = 0.0;
                    for (int d = 0; d < HD; ++d)
                        s += qkv[qkv_at(b, t, 0, i, d, T, n, HD)] * qkv[qkv_at(b, j, 1, i, d, T, n, HD)];
                    e[j] = std::exp(s / std::sqrt(double(HD)));
                    z += e[j];
                }
                for (int j = 0; j <= t; ++j) {
                    const double p = e[j] / z;
                    a.probs[((std::size_t(b) * n + i) * T + t) * T + j] = p;
                    for (int d = 0; d < HD; ++d)
                        a.out[((std::size_t(b) * T + t) * n + i) * HD + d] += p * qkv[qkv_at(b, j, 2, i, d, T, n, HD)];
                    if (t == T - 1) a.entropy[b * n + i] -= p * std::log(p) / std::log(double(T));
                }
            }
    return a;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
TEST_CASE("matmul_forward: y = x Wᵀ against naive loops, and the accumulate flag") {
    // Up to 16 rows and from 2^20 weights the product is split into blocks of output columns (here 18 of about
    // 230), else into blocks of rows.
    for (const auto shape : {std::array{5, 7, 3}, std::array{40, 7, 3}, std::array{1, 256, 4156},
                             std::array{16, 256, 4156}, std::array{17, 256, 4156}, std::array{3, 255, 4111}}) {
        const int N = shape[0], I = shape[1], O = shape[2];  // not a structured binding: CAPTURE's lambda reads them
        CAPTURE(N);
        CAPTURE(O);
        const double tol = 1e-14 * I;  // rounding of I-term sums, added in another order than the naive loop's
        const dvec x = randn(N * I, 1), W = randn(O * I, 2);
        const dvec ref = naive_matmul(x, W, N, I, O);
        dvec y(N * O, 99.0);
        sgt::matmul_forward(cpu, y.data(), x.data(), W.data(), N, I, O);
        note("matmul_forward", max_abs_diff(y, ref));
        CHECK(max_abs_diff(y, ref) <= tol);

        const dvec base = randn(N * O, 3);
        dvec y2 = base;
        sgt::matmul_forward(cpu, y2.data(), x.data(), W.data(), N, I, O, true);
        dvec expect(N * O);
        for (int k = 0; k < N * O; ++k) expect[k] = base[k] + ref[k];
        CHECK(max_abs_diff(y2, expect) <= tol);

        // A residual `add`: out = add + x Wᵀ, into another buffer or over add itself.
        dvec y3(N * O, 99.0);
        sgt::matmul_forward(cpu, y3.data(), x.data(), W.data(), N, I, O, false, base.data());
        CHECK(max_abs_diff(y3, expect) <= tol);
        dvec y4 = base;
        sgt::matmul_forward(cpu, y4.data(), x.data(), W.data(), N, I, O, false, y4.data());
        CHECK(max_abs_diff(y4, expect) <= tol);
    }
}

TEST_CASE("matmul_backward: finite differences in x and W, += contract, null outputs skipped") {
    const int N = 5, I = 7, O = 3;
    dvec x = randn(N * I, 4), W = randn(O * I, 5);
    const dvec w = randn(N * O, 6);
    dvec y(N * O);
    auto loss = [&] {
        sgt::matmul_forward(cpu, y.data(), x.data(), W.data(), N, I, O);
        return dot(w, y);
    };
    const dvec dx = accumulated(x.size(), [&](double* g) {
        sgt::matmul_backward(cpu, g, static_cast<double*>(nullptr), w.data(), x.data(), W.data(), N, I, O);
    }, "matmul dx");
    const dvec dW = accumulated(W.size(), [&](double* g) {
        sgt::matmul_backward(cpu, static_cast<double*>(nullptr), g, w.data(), x.data(), W.data(), N, I, O);
    }, "matmul dW");
    check_fd(x, dx, loss, "matmul dx");
    check_fd(W, dW, loss, "matmul dW");

    // Both at once give the same as one at a time.
    dvec dx2(x.size(), 0.0), dW2(W.size(), 0.0);
    sgt::matmul_backward(cpu, dx2.data(), dW2.data(), w.data(), x.data(), W.data(), N, I, O);
    CHECK(max_abs_diff(dx2, dx) <= 1e-15);
    CHECK(max_abs_diff(dW2, dW) <= 1e-15);

    // overwrite: each output chosen is written, not added to; the other still accumulates.
    overwritten(x.size(), [&](double* g) {
        dvec dw_acc(W.size(), 0.0);
        sgt::matmul_backward(cpu, g, dw_acc.data(), w.data(), x.data(), W.data(), N, I, O, sgt::overwrite{.din = true});
        CHECK(max_abs_diff(dw_acc, dW) <= 1e-15);
    }, "matmul dx, overwrite din");
    overwritten(W.size(), [&](double* g) {
        sgt::matmul_backward(cpu, static_cast<double*>(nullptr), g, w.data(), x.data(), W.data(), N, I, O,
                             sgt::overwrite{.dw = true});
    }, "matmul dW, overwrite dw");
    dvec dx3(x.size(), kPrefill);
    sgt::matmul_backward(cpu, dx3.data(), static_cast<double*>(nullptr), w.data(), x.data(), W.data(), N, I, O,
                         sgt::overwrite{.din = true});
    CHECK(max_abs_diff(dx3, dx) <= 1e-15);
}

// ---------------------------------------------------------------------------------------------------------
TEST_CASE("embedding: forward copies rows; backward scatters, repeated tokens add, += contract") {
    const int V = 11, C = 7, N = 5;
    const std::vector<std::int32_t> tok{3, 7, 3, 0, 10};  // token 3 twice
    dvec table = randn(V * C, 7);
    dvec out(N * C, -1.0);
    sgt::embedding_forward(cpu, out.data(), tok.data(), table.data(), N, C);
    for (int n = 0; n < N; ++n)
        for (int c = 0; c < C; ++c) CHECK(out[n * C + c] == table[tok[n] * C + c]);

    const dvec w = randn(N * C, 8);
    const dvec dtable = accumulated(table.size(), [&](double* g) {
        sgt::embedding_backward(cpu, g, w.data(), tok.data(), N, C);
    }, "embedding dtable");
    for (int c = 0; c < C; ++c) {
        CHECK(dtable[3 * C + c] == doctest::Approx(w[0 * C + c] + w[2 * C + c]).epsilon(1e-15));
        CHECK(dtable[7 * C + c] == w[1 * C + c]);
        CHECK(dtable[5 * C + c] == 0.0);  // token 5 never appears
    }
    check_fd(table, dtable, [&] {
        sgt::embedding_forward(cpu, out.data(), tok.data(), table.data(), N, C);
        return dot(w, out);
    }, "embedding dtable");
}

// ---------------------------------------------------------------------------------------------------------
TEST_CASE("rmsnorm_forward: against naive loops, rstd saved") {
    const int N = 5, C = 7;
    const double eps = 1e-5;
    dvec x = randn(N * C, 9), w = randn(C, 10);
    x[3 * C + 0] = x[3 * C + 1] = 0.0;
    for (int c = 0; c < C; ++c) x[4 * C + c] *= 1e-3;  // a small row, where eps matters
    dvec rstd_ref;
    const dvec ref = naive_rmsnorm(x, w, N, C, eps, &rstd_ref);
    dvec y(N * C), rstd(N);
    sgt::rmsnorm_forward(cpu, y.data(), rstd.data(), x.data(), w.data(), N, C, eps);
    note("rmsnorm_forward", std::max(rel_err(y, ref), rel_err(rstd, rstd_ref)));
    CHECK(rel_err(y, ref) <= 1e-14);
    CHECK(rel_err(rstd, rstd_ref) <= 1e-14);
    // The small row: mean(x²) ~ 1e-6 is comparable to eps, so leaving eps out would be a visible error.
    double ms = 0.0;
    for (int c = 0; c < C; ++c) ms += x[4 * C + c] * x[4 * C + c] / C;
    CHECK(std::abs(rstd[4] - 1.0 / std::sqrt(ms)) > 1e-2 * rstd[4]);
}

TEST_CASE("rmsnorm_backward: finite differences in x and w, += contract") {
    const int N = 5, C = 7;
    const double eps = 1e-5;
    dvec x = randn(N * C, 11), wt = randn(C, 12);
    const dvec w = randn(N * C, 13);
    dvec y(N * C), rstd(N);
    auto loss = [&] {
        sgt::rmsnorm_forward(cpu, y.data(), rstd.data(), x.data(), wt.data(), N, C, eps);
        return dot(w, y);
    };
    loss();
    const dvec saved_rstd = rstd;
    dvec scratch_x(x.size()), scratch_w(wt.size());
    const dvec dx = accumulated(x.size(), [&](double* g) {
        sgt::rmsnorm_backward(cpu, g, scratch_w.data(), w.data(), x.data(), wt.data(), saved_rstd.data(), N, C);
    }, "rmsnorm dx");
    const dvec dwt = accumulated(wt.size(), [&](double* g) {
        sgt::rmsnorm_backward(cpu, scratch_x.data(), g, w.data(), x.data(), wt.data(), saved_rstd.data(), N, C);
    }, "rmsnorm dw");
    check_fd(x, dx, loss, "rmsnorm dx");
    check_fd(wt, dwt, loss, "rmsnorm dw");
}

// ---------------------------------------------------------------------------------------------------------
TEST_CASE("rope: tables, rotate-half forward in a packed qkv layout, backward = transpose") {
    const int B = 2, T = 5, n = 3, HD = 6, half = HD / 2;
    const std::int64_t row = 3 * n * HD;  // q, k, v of n heads per token; RoPE touches q and k only
    dvec cosv(T * half), sinv(T * half);
    sgt::rope_tables(cpu, cosv.data(), sinv.data(), T, HD, 10000.0);
    for (int t = 0; t < T; ++t)
        for (int j = 0; j < half; ++j) {
            const double inv_freq = 1.0 / std::pow(10000.0, double(2 * j) / HD);
            CHECK(cosv[t * half + j] == doctest::Approx(std::cos(t * inv_freq)).epsilon(1e-14));
            CHECK(sinv[t * half + j] == doctest::Approx(std::sin(t * inv_freq)).scale(1.0).epsilon(1e-14));
        }

    const dvec x0 = randn(B * T * row, 14);
    // Naive rotate-half: out = x ⊙ cos + (−x2, x1) ⊙ sin, on q (c = 0) and k (c = 1), v untouched.
    dvec ref = x0;
    for (int b = 0; b < B; ++b)
        for (int t = 0; t < T; ++t)
            for (int c = 0; c < 2; ++c)
                for (int i = 0; i < n; ++i)
                    for (int d = 0; d < HD; ++d) {
                        const double ang = t * std::pow(10000.0, -2.0 * (d % half) / HD);
                        const double xd = x0[qkv_at(b, t, c, i, d, T, n, HD)];
                        const double rot = d < half ? -x0[qkv_at(b, t, c, i, d + half, T, n, HD)]
                                                    : x0[qkv_at(b, t, c, i, d - half, T, n, HD)];
                        ref[qkv_at(b, t, c, i, d, T, n, HD)] = xd * std::cos(ang) + rot * std::sin(ang);
                    }
    auto rope_qk = [&](dvec& x, bool backward) {
        for (int c = 0; c < 2; ++c) {
            double* p = x.data() + std::int64_t(c) * n * HD;
            if (backward)
                sgt::rope_backward(cpu, p, cosv.data(), sinv.data(), B, T, n, HD, row);
            else
                sgt::rope_forward(cpu, p, cosv.data(), sinv.data(), B, T, n, HD, row);
        }
    };
    dvec x = x0;
    rope_qk(x, false);
    note("rope_forward", max_abs_diff(x, ref));
    CHECK(max_abs_diff(x, ref) <= 1e-14);
    for (int b = 0; b < B; ++b)  // position 0 is the identity; v is never touched
        for (int i = 0; i < n; ++i)
            for (int d = 0; d < HD; ++d) {
                CHECK(x[qkv_at(b, 0, 0, i, d, T, n, HD)] == x0[qkv_at(b, 0, 0, i, d, T, n, HD)]);
                for (int t = 0; t < T; ++t) CHECK(x[qkv_at(b, t, 2, i, d, T, n, HD)] == x0[qkv_at(b, t, 2, i, d, T, n, HD)]);
            }

    // Orthogonal: the backward undoes the forward.
    rope_qk(x, true);
    CHECK(max_abs_diff(x, x0) <= 1e-14);

    // backward is the transpose: ∂/∂x Σ w ⊙ rope(x) = rope_backward(w), checked by finite differences.
    const dvec w = randn(B * T * row, 15);
    dvec g = w;
    rope_qk(g, true);
    dvec xv = x0, y;
    check_fd(xv, g, [&] {
        y = xv;
        rope_qk(y, false);
        return dot(w, y);
    }, "rope backward (transpose)");
}

// ---------------------------------------------------------------------------------------------------------
TEST_CASE("swiglu: forward against silu(g)·u, finite differences in gate and up, rows of a strided (N, 2F)") {
    const int rows = 5, F = 7;
    const std::int64_t n = rows * F;
    dvec gate = randn(n, 16, 2.0), up = randn(n, 17);
    gate[0] = 12.0;  // the tails of the sigmoid
    gate[1] = -12.0;
    gate[2] = 0.0;
    dvec out(n);
    sgt::swiglu_forward(cpu, out.data(), gate.data(), up.data(), rows, F, F);
    dvec ref(n);
    for (int i = 0; i < n; ++i) ref[i] = naive_silu(gate[i]) * up[i];
    note("swiglu_forward", rel_err(out, ref));
    CHECK(rel_err(out, ref) <= 1e-14);
    CHECK(out[2] == 0.0);

    const dvec w = randn(n, 18);
    auto loss = [&] {
        sgt::swiglu_forward(cpu, out.data(), gate.data(), up.data(), rows, F, F);
        return dot(w, out);
    };
    dvec scratch(n);
    const dvec dgate = overwritten(n, [&](double* g) {
        sgt::swiglu_backward(cpu, g, scratch.data(), w.data(), gate.data(), up.data(), rows, F, F);
    }, "swiglu dgate");
    const dvec dup = overwritten(n, [&](double* g) {
        sgt::swiglu_backward(cpu, scratch.data(), g, w.data(), gate.data(), up.data(), rows, F, F);
    }, "swiglu dup");
    check_fd(gate, dgate, loss, "swiglu dgate");
    check_fd(up, dup, loss, "swiglu dup");

    // dgate written over dout, as the FFN's backward runs it.
    dvec in_place = w, dup2(n);
    sgt::swiglu_backward(cpu, in_place.data(), dup2.data(), in_place.data(), gate.data(), up.data(), rows, F, F);
    CHECK(max_abs_diff(in_place, dgate) == 0.0);
    CHECK(max_abs_diff(dup2, dup) == 0.0);

    // The FFN's layout: gate and up as the two halves of each row of one (rows, 2F) product (ld = 2F), and their
    // gradients written into the halves of another; the same numbers as the separate arrays, element for element.
    dvec gu(std::size_t(2 * n)), dgu(std::size_t(2 * n), 99.0), out2(n);
    for (int r = 0; r < rows; ++r)
        for (int j = 0; j < F; ++j) {
            gu[std::size_t(r * 2 * F + j)] = gate[std::size_t(r * F + j)];
            gu[std::size_t(r * 2 * F + F + j)] = up[std::size_t(r * F + j)];
        }
    sgt::swiglu_forward(cpu, out2.data(), gu.data(), gu.data() + F, rows, F, 2 * F);
    sgt::swiglu_backward(cpu, dgu.data(), dgu.data() + F, w.data(), gu.data(), gu.data() + F, rows, F, 2 * F);
    sgt::swiglu_forward(cpu, out.data(), gate.data(), up.data(), rows, F, F);
    CHECK(max_abs_diff(out2, out) == 0.0);
    for (int r = 0; r < rows; ++r)
        for (int j = 0; j < F; ++j) {
            CHECK(dgu[std::size_t(r * 2 * F + j)] == dgate[std::size_t(r * F + j)]);
            CHECK(dgu[std::size_t(r * 2 * F + F + j)] == dup[std::size_t(r * F + j)]);
        }
}

// ---------------------------------------------------------------------------------------------------------
TEST_CASE("cross_entropy_forward: against a naive log-sum-exp, ignored targets, shift invariance") {
    const int N = 5, V = 11;
    const dvec z = randn(N * V, 19, 2.0);
    const std::vector<std::int32_t> tgt{4, 10, -1, 0, 4};
    int count = 0;
    const double ref = naive_cross_entropy(z, tgt, N, V, &count);
    const sgt::loss_sum l = sgt::cross_entropy_forward(cpu, z.data(), tgt.data(), N, V);
    note("cross_entropy_forward", std::abs(l.sum - ref) / ref);
    CHECK(count == 4);
    CHECK(l.count == 4);
    CHECK(l.sum == doctest::Approx(ref).epsilon(1e-14));
    CHECK(l.mean() == doctest::Approx(ref / 4).epsilon(1e-14));

    // Adding 1000 to a row changes nothing (a naive exp would overflow): the max shift is there.
    dvec big = z;
    for (int v = 0; v < V; ++v) big[1 * V + v] += 1000.0;
    const sgt::loss_sum lb = sgt::cross_entropy_forward(cpu, big.data(), tgt.data(), N, V);
    CHECK(std::isfinite(lb.sum));
    CHECK(lb.sum == doctest::Approx(ref).epsilon(1e-12));

    // Uniform logits: −log(1/V) per counted row.
    const dvec flat(N * V, 0.25);
    CHECK(sgt::cross_entropy_forward(cpu, flat.data(), tgt.data(), N, V).sum ==
          doctest::Approx(4 * std::log(double(V))).epsilon(1e-14));

    const std::vector<std::int32_t> none(N, -1);
    const sgt::loss_sum l0 = sgt::cross_entropy_forward(cpu, z.data(), none.data(), N, V);
    CHECK(l0.count == 0);
    CHECK(l0.sum == 0.0);
    CHECK(l0.mean() == 0.0);
}

TEST_CASE("cross_entropy_backward: finite differences in logits, ignored row zero, overwrites") {
    const int N = 5, V = 11;
    dvec z = randn(N * V, 20, 2.0);
    const std::vector<std::int32_t> tgt{4, 10, -1, 0, 4};
    const double scale = 0.7;
    const dvec dz = overwritten(z.size(), [&](double* g) {
        sgt::cross_entropy_backward(cpu, g, z.data(), tgt.data(), N, V, scale);
    }, "cross_entropy dlogits");
    for (int v = 0; v < V; ++v) CHECK(dz[2 * V + v] == 0.0);
    for (int n : {0, 1, 3, 4}) {  // each counted row sums to scale · (1 − 1) = 0
        double s = 0.0;
        for (int v = 0; v < V; ++v) s += dz[n * V + v];
        CHECK(std::abs(s) <= 1e-15);
    }
    check_fd(z, dz, [&] { return scale * sgt::cross_entropy_forward(cpu, z.data(), tgt.data(), N, V).sum; },
             "cross_entropy dlogits");

    // The forward's log-sum-exps (each checked against a naive one) give the same gradient, also written over
    // the logits themselves.
    dvec lse(N, -7.0);
    sgt::cross_entropy_forward(cpu, z.data(), tgt.data(), N, V, lse.data());
    for (int n : {0, 1, 3, 4}) {
        double m = -1e300, s = 0.0;
        for (int v = 0; v < V; ++v) m = std::max(m, z[n * V + v]);
        for (int v = 0; v < V; ++v) s += std::exp(z[n * V + v] - m);
        CHECK(lse[n] == doctest::Approx(m + std::log(s)).epsilon(1e-14));
    }
    CHECK(lse[2] == -7.0);  // an ignored row is not written
    dvec dz2(z.size(), 5.0);
    sgt::cross_entropy_backward(cpu, dz2.data(), z.data(), tgt.data(), N, V, scale, lse.data());
    CHECK(max_abs_diff(dz2, dz) <= 1e-15);
    dvec in_place = z;
    sgt::cross_entropy_backward(cpu, in_place.data(), in_place.data(), tgt.data(), N, V, scale, lse.data());
    CHECK(max_abs_diff(in_place, dz) <= 1e-15);
}

// ---------------------------------------------------------------------------------------------------------
TEST_CASE("attention_forward: against naive causal attention, probs causal and normalised, entropy") {
    const int B = 2, T = 5, n = 3, HD = 6;
    const dvec qkv = randn(std::size_t(B) * T * 3 * n * HD, 21);
    const naive_attn ref = naive_attention(qkv, B, T, n, HD);
    dvec out(B * T * n * HD), probs(B * n * T * T, 77.0), ent(B * n);
    sgt::attention_forward(cpu, out.data(), probs.data(), ent.data(), qkv.data(), B, T, n, HD);
    note("attention_forward out", max_abs_diff(out, ref.out));
    note("attention_forward probs", max_abs_diff(probs, ref.probs));
    note("attention_forward entropy", max_abs_diff(ent, ref.entropy));
    CHECK(max_abs_diff(out, ref.out) <= 1e-14);
    CHECK(max_abs_diff(probs, ref.probs) <= 1e-15);
    CHECK(max_abs_diff(ent, ref.entropy) <= 1e-14);
    for (int bh = 0; bh < B * n; ++bh) {
        CHECK(ent[bh] > 0.0);
        CHECK(ent[bh] < 1.0);
        for (int t = 0; t < T; ++t) {
            double s = 0.0;
            for (int j = 0; j < T; ++j) {
                const double p = probs[(std::size_t(bh) * T + t) * T + j];
                if (j > t)
                    CHECK(p == 0.0);
                else
                    CHECK(p > 0.0);
                s += p;
            }
            CHECK(s == doctest::Approx(1.0).epsilon(1e-15));
        }
    }
}

TEST_CASE("attention_forward: uniform attention has entropy 1, a one-hot row entropy 0") {
    const int B = 1, T = 5, n = 3, HD = 6;
    dvec qkv = randn(std::size_t(B) * T * 3 * n * HD, 22);
    for (int t = 0; t < T; ++t)  // q = 0 for every head: every row uniform over its causal prefix
        for (int i = 0; i < n; ++i)
            for (int d = 0; d < HD; ++d) qkv[qkv_at(0, t, 0, i, d, T, n, HD)] = 0.0;
    // Head 1: the last query points along dim 0 and only key 2 has a (large) component there.
    for (int t = 0; t < T; ++t)
        for (int d = 0; d < HD; ++d) qkv[qkv_at(0, t, 1, 1, d, T, n, HD)] = 0.0;
    qkv[qkv_at(0, T - 1, 0, 1, 0, T, n, HD)] = 30.0;
    qkv[qkv_at(0, 2, 1, 1, 0, T, n, HD)] = 30.0;  // score 900/√6 ≈ 367 against 0 for the rest

    dvec out(B * T * n * HD), probs(B * n * T * T), ent(B * n);
    sgt::attention_forward(cpu, out.data(), probs.data(), ent.data(), qkv.data(), B, T, n, HD);
    note("attention entropy uniform", std::max(std::abs(ent[0] - 1.0), std::abs(ent[2] - 1.0)));
    note("attention entropy one-hot", ent[1]);
    CHECK(ent[0] == doctest::Approx(1.0).epsilon(1e-14));
    CHECK(ent[2] == doctest::Approx(1.0).epsilon(1e-14));
    CHECK(ent[1] >= 0.0);
    CHECK(ent[1] < 1e-12);
    CHECK(probs[(1 * T + T - 1) * T + 2] == doctest::Approx(1.0).epsilon(1e-15));
    // Uniform head 0: out_t is the mean of v_0..v_t.
    for (int t = 0; t < T; ++t)
        for (int d = 0; d < HD; ++d) {
            double m = 0.0;
            for (int j = 0; j <= t; ++j) m += qkv[qkv_at(0, j, 2, 0, d, T, n, HD)] / (t + 1);
            CHECK(out[(t * n + 0) * HD + d] == doctest::Approx(m).epsilon(1e-13).scale(1.0));
        }
}

TEST_CASE("attention_backward: finite differences in q, k and v, overwrites dqkv") {
    const int B = 2, T = 5, n = 3, HD = 6;
    dvec qkv = randn(std::size_t(B) * T * 3 * n * HD, 23);
    const dvec w = randn(std::size_t(B) * T * n * HD, 24);
    dvec out(w.size()), probs(B * n * T * T), ent(B * n);
    auto loss = [&] {
        sgt::attention_forward(cpu, out.data(), probs.data(), ent.data(), qkv.data(), B, T, n, HD);
        return dot(w, out);
    };
    loss();
    const dvec saved = probs;
    const dvec dqkv = overwritten(qkv.size(), [&](double* g) {
        sgt::attention_backward(cpu, g, w.data(), qkv.data(), saved.data(), B, T, n, HD);
    }, "attention dqkv");
    const char* names[3] = {"attention dq", "attention dk", "attention dv"};
    for (int c = 0; c < 3; ++c) {
        std::vector<std::size_t> idx;
        for (int b = 0; b < B; ++b)
            for (int t = 0; t < T; ++t)
                for (int i = 0; i < n; ++i)
                    for (int d = 0; d < HD; ++d) idx.push_back(qkv_at(b, t, c, i, d, T, n, HD));
        check_fd(qkv, dqkv, loss, names[c], idx);
    }
    // The first query attends to one key only (its softmax is the constant 1): its gradient is zero.
    for (int i = 0; i < n; ++i)
        for (int d = 0; d < HD; ++d) CHECK(dqkv[qkv_at(0, 0, 0, i, d, T, n, HD)] == doctest::Approx(0.0).scale(1e-15));
}

TEST_CASE("attention: several causal blocks (T = 150, the last one partial) against naive attention and FD") {
    const int B = 1, T = 150, n = 2, HD = 4;
    dvec qkv = randn(std::size_t(B) * T * 3 * n * HD, 25);
    const naive_attn ref = naive_attention(qkv, B, T, n, HD);
    dvec out(B * T * n * HD), probs(B * n * T * T, 77.0), ent(B * n);
    sgt::attention_forward(cpu, out.data(), probs.data(), ent.data(), qkv.data(), B, T, n, HD);
    CHECK(max_abs_diff(out, ref.out) <= 1e-13);
    CHECK(max_abs_diff(probs, ref.probs) <= 1e-14);
    CHECK(max_abs_diff(ent, ref.entropy) <= 1e-13);
    const dvec w = randn(out.size(), 26);
    auto loss = [&] {
        sgt::attention_forward(cpu, out.data(), probs.data(), ent.data(), qkv.data(), B, T, n, HD);
        return dot(w, out);
    };
    loss();
    const dvec saved = probs;
    const dvec dqkv = overwritten(qkv.size(), [&](double* g) {
        sgt::attention_backward(cpu, g, w.data(), qkv.data(), saved.data(), B, T, n, HD);
    }, "attention dqkv, 150 positions");
    std::vector<std::size_t> idx;  // positions on both sides of each block edge, in q, k and v of both heads
    for (int c = 0; c < 3; ++c)
        for (int t : {1, 63, 64, 127, 128, 149})
            for (int i = 0; i < n; ++i) idx.push_back(qkv_at(0, t, c, i, (t + c) % HD, T, n, HD));
    check_fd(qkv, dqkv, loss, "attention dqkv, 150 positions", idx);
}

// ---------------------------------------------------------------------------------------------------------
TEST_CASE("heads: gather/scatter of rows and columns, round trip, adjoint, order") {
    const int NH = 3, HD = 6, C = 7;
    const std::vector<std::vector<int>> lists{{0, 2}, {1}, {2, 0}, {0, 1, 2}};
    for (const auto& heads : lists) {
        const int k = int(heads.size());
        CAPTURE(k);
        CAPTURE(heads[0]);
        // Rows: src (NH·HD, C) -> dst (k·HD, C).
        const dvec Wr = randn(NH * HD * C, 25), Yr = randn(k * HD * C, 26);
        dvec gr(k * HD * C, -5.0);
        sgt::gather_head_rows(cpu, gr.data(), Wr.data(), heads, HD, C);
        for (int i = 0; i < k; ++i)
            for (int r = 0; r < HD; ++r)
                for (int c = 0; c < C; ++c) CHECK(gr[(i * HD + r) * C + c] == Wr[(heads[i] * HD + r) * C + c]);
        dvec back(NH * HD * C, 0.0);
        sgt::scatter_add_head_rows(cpu, back.data(), gr.data(), heads, HD, C);
        for (int h = 0; h < NH; ++h) {  // round trip: the selected heads' rows come back, the others stay 0
            const bool in = std::find(heads.begin(), heads.end(), h) != heads.end();
            for (int q = 0; q < HD * C; ++q) CHECK(back[h * HD * C + q] == (in ? Wr[h * HD * C + q] : 0.0));
        }
        dvec sr(NH * HD * C, 0.0);
        sgt::scatter_add_head_rows(cpu, sr.data(), Yr.data(), heads, HD, C);
        CHECK(dot(gr, Yr) == doctest::Approx(dot(Wr, sr)).epsilon(1e-14));
        const dvec sr_acc = accumulated(sr.size(), [&](double* g) {
            sgt::scatter_add_head_rows(cpu, g, Yr.data(), heads, HD, C);
        }, "scatter_add_head_rows");
        CHECK(max_abs_diff(sr_acc, sr) == 0.0);

        // Columns: src (C, NH·HD) -> dst (C, k·HD).
        const dvec Wc = randn(C * NH * HD, 27), Yc = randn(C * k * HD, 28);
        dvec gc(C * k * HD, -5.0);
        sgt::gather_head_cols(cpu, gc.data(), Wc.data(), heads, HD, C, NH);
        for (int r = 0; r < C; ++r)
            for (int i = 0; i < k; ++i)
                for (int d = 0; d < HD; ++d) CHECK(gc[(r * k + i) * HD + d] == Wc[(r * NH + heads[i]) * HD + d]);
        dvec backc(C * NH * HD, 0.0);
        sgt::scatter_add_head_cols(cpu, backc.data(), gc.data(), heads, HD, C, NH);
        for (int r = 0; r < C; ++r)
            for (int h = 0; h < NH; ++h) {
                const bool in = std::find(heads.begin(), heads.end(), h) != heads.end();
                for (int d = 0; d < HD; ++d)
                    CHECK(backc[(r * NH + h) * HD + d] == (in ? Wc[(r * NH + h) * HD + d] : 0.0));
            }
        dvec sc(C * NH * HD, 0.0);
        sgt::scatter_add_head_cols(cpu, sc.data(), Yc.data(), heads, HD, C, NH);
        CHECK(dot(gc, Yc) == doctest::Approx(dot(Wc, sc)).epsilon(1e-14));
        const dvec sc_acc = accumulated(sc.size(), [&](double* g) {
            sgt::scatter_add_head_cols(cpu, g, Yc.data(), heads, HD, C, NH);
        }, "scatter_add_head_cols");
        CHECK(max_abs_diff(sc_acc, sc) == 0.0);
    }
}

TEST_CASE("head_gain_forward multiplies exactly its own head block of every row") {
    const int N = 5, n = 3, HD = 6;
    const dvec x0 = randn(N * n * HD, 29);
    const std::vector<double> gains{2.5, 1.0, -0.5};
    dvec x = x0;
    sgt::head_gain_forward(cpu, x.data(), gains.data(), N, n, HD, false);
    for (int r = 0; r < N; ++r)
        for (int i = 0; i < n; ++i)
            for (int d = 0; d < HD; ++d) CHECK(x[(r * n + i) * HD + d] == x0[(r * n + i) * HD + d] * gains[i]);
    // Two heads, one zeroed.
    const std::vector<double> g2{0.0, 3.0};
    dvec z = randn(4 * 2 * HD, 30);
    const dvec z0 = z;
    sgt::head_gain_forward(cpu, z.data(), g2.data(), 4, 2, HD, false);
    for (int r = 0; r < 4; ++r)
        for (int d = 0; d < HD; ++d) {
            CHECK(z[(r * 2 + 0) * HD + d] == 0.0);
            CHECK(z[(r * 2 + 1) * HD + d] == 3.0 * z0[(r * 2 + 1) * HD + d]);
        }
}

// ---------------------------------------------------------------------------------------------------------
TEST_CASE("dropout: mask values, drop rate, determinism, backward") {
    const std::int64_t n = 100000;
    for (double p : {0.1, 0.5}) {
        CAPTURE(p);
        const double keep = 1.0 / (1.0 - p);
        const dvec x0 = randn(n, 31);
        dvec x = x0, mask(n, -1.0);
        sgt::rng r(1234);
        sgt::dropout_forward(cpu, x.data(), mask.data(), n, p, r);
        std::int64_t dropped = 0;
        bool values_ok = true, product_ok = true;
        for (std::int64_t i = 0; i < n; ++i) {
            values_ok &= mask[i] == 0.0 || mask[i] == keep;
            product_ok &= x[i] == x0[i] * mask[i];
            dropped += mask[i] == 0.0;
        }
        CHECK(values_ok);
        CHECK(product_ok);
        // The number dropped is Binomial(n, p): mean n·p, sd σ = √(n p (1−p)) (≈ 95 for p = 0.1, 158 for 0.5).
        // A 6σ band fails by chance with probability below 2e-9.
        const double sd = std::sqrt(n * p * (1.0 - p));
        note("dropout rate |drops − np| / σ", std::abs(double(dropped) - n * p) / sd);
        CHECK(std::abs(double(dropped) - n * p) <= 6.0 * sd);

        // Same seed -> same mask; the generator advanced, so the next call draws a different one.
        dvec x2 = x0, mask2(n);
        sgt::rng r2(1234);
        sgt::dropout_forward(cpu, x2.data(), mask2.data(), n, p, r2);
        CHECK(mask2 == mask);
        CHECK(x2 == x);
        dvec x3 = x0, mask3(n);
        sgt::dropout_forward(cpu, x3.data(), mask3.data(), n, p, r2);
        CHECK(mask3 != mask);
        sgt::rng r4(4321);
        sgt::dropout_forward(cpu, x3.data(), mask3.data(), n, p, r4);
        CHECK(mask3 != mask);

        // Backward: dx ⊙= mask.
        const dvec d0 = randn(n, 32);
        dvec d = d0;
        sgt::dropout_backward(cpu, d.data(), mask.data(), n);
        bool back_ok = true;
        for (std::int64_t i = 0; i < n; ++i) back_ok &= d[i] == d0[i] * mask[i];
        CHECK(back_ok);
    }
    // p = 0 keeps everything unchanged.
    dvec x = randn(1000, 33), mask(1000);
    const dvec x0 = x;
    sgt::rng r(5);
    sgt::dropout_forward(cpu, x.data(), mask.data(), 1000, 0.0, r);
    CHECK(x == x0);
    CHECK(std::all_of(mask.begin(), mask.end(), [](double m) { return m == 1.0; }));
}

// ---------------------------------------------------------------------------------------------------------
namespace {

// AdamW (torch.optim.AdamW) step by step: m ← β1 m + (1−β1) g, v ← β2 v + (1−β2) g², m̂ = m / (1−β1^t),
// v̂ = v / (1−β2^t), p ← p − lr (m̂ / (√v̂ + ε) + wd · p).
void reference_adamw(dvec& p, const dvec& g, dvec& m, dvec& v, const sgt::adamw_hyper& h, double lr, double wd,
                     int t) {
    for (std::size_t i = 0; i < p.size(); ++i) {
        m[i] = h.beta1 * m[i] + (1.0 - h.beta1) * g[i];
        v[i] = h.beta2 * v[i] + (1.0 - h.beta2) * g[i] * g[i];
        const double mhat = m[i] / (1.0 - std::pow(h.beta1, t));
        const double vhat = v[i] / (1.0 - std::pow(h.beta2, t));
        p[i] = p[i] - lr * (mhat / (std::sqrt(vhat) + h.eps) + wd * p[i]);
    }
}

// Step t's values as the optimizer writes them (sgt::adamw::begin_step).
sgt::adamw_step_values step_values(const sgt::adamw_hyper& h, double lr, int t) {
    return {lr, 1.0 - std::pow(h.beta1, t), 1.0 - std::pow(h.beta2, t)};
}

// One run over the whole tensor, no clipping.
template <class T>
void adamw_whole(T* p, const T* g, T* m, T* v, std::int64_t n, const sgt::adamw_hyper& h, double lr, double wd,
                 int t) {
    const sgt::adamw_run run{0, n, wd};
    const auto s = step_values(h, lr, t);
    const double sq = 0.0;
    sgt::adamw_update(cpu, p, g, m, v, std::span<const sgt::adamw_run>(&run, 1), h, &s, &sq, 1);
}

template <class T>
void run_adamw_case(const sgt::adamw_hyper& h, double wd, double gscale, double tol) {
    const int n = 13;
    const double lr = 1e-2;
    dvec p_ref = randn(n, 34), m_ref(n, 0.0), v_ref(n, 0.0);
    std::vector<T> p(p_ref.begin(), p_ref.end()), m(n, T(0)), v(n, T(0));
    if constexpr (std::is_same_v<T, float>)  // the float run starts from the rounded parameters
        for (int i = 0; i < n; ++i) p_ref[i] = double(p[i]);
    for (int t = 1; t <= 3; ++t) {
        CAPTURE(t);
        const dvec g_ref = randn(n, 100 + t, gscale);
        std::vector<T> g(g_ref.begin(), g_ref.end());
        dvec g_used(g.begin(), g.end());
        const dvec p_before = p_ref;
        reference_adamw(p_ref, g_used, m_ref, v_ref, h, lr, wd, t);
        adamw_whole(p.data(), g.data(), m.data(), v.data(), n, h, lr, wd, t);
        char label[64];
        std::snprintf(label, sizeof label, "adamw %s wd %g eps %g step %d", sizeof(T) == 4 ? "float" : "double", wd,
                      h.eps, t);
        note(label, std::max({rel_err(p, p_ref), rel_err(m, m_ref), rel_err(v, v_ref)}));
        CHECK(rel_err(p, p_ref) <= tol);
        CHECK(rel_err(m, m_ref) <= tol);
        CHECK(rel_err(v, v_ref) <= tol);
        // The parameter moved by a visible amount relative to the tolerance (the comparison is meaningful).
        CHECK(max_abs_diff(p_before, p_ref) > 100 * tol * max_abs(p_ref));
        if (t == 1 && wd == 0.0 && h.eps < 1e-6)
            for (int i = 0; i < n; ++i)  // step 1: m̂ = g, v̂ = g², so the step is lr · g / (|g| + ε) ≈ ±lr
                CHECK(p_ref[i] - p_before[i] == doctest::Approx(-lr * g_used[i] / (std::abs(g_used[i]) + h.eps)));
    }
}

}  // namespace

TEST_CASE("adamw_update: three steps against the hand-written formula, wd 0 and 0.1, float and double") {
    sgt::adamw_hyper h;
    sgt::adamw_hyper big_eps = h;  // ε comparable to √v̂: pins ε outside the square root and after bias correction
    big_eps.eps = 1e-3;
    for (double wd : {0.0, 0.1}) {
        CAPTURE(wd);
        run_adamw_case<double>(h, wd, 1.0, 1e-14);
        run_adamw_case<double>(big_eps, wd, 1e-3, 1e-14);
        run_adamw_case<float>(h, wd, 1.0, 1e-6);
        run_adamw_case<float>(big_eps, wd, 1e-3, 1e-6);
    }
    // Decoupled decay: with zero gradients (m = v = 0), one step is exactly p ← p (1 − lr·wd).
    dvec p = randn(7, 35), g(7, 0.0), m(7, 0.0), v(7, 0.0);
    const dvec p0 = p;
    adamw_whole(p.data(), g.data(), m.data(), v.data(), 7, h, 1e-2, 0.1, 1);
    for (int i = 0; i < 7; ++i) CHECK(p[i] == doctest::Approx(p0[i] * (1.0 - 1e-2 * 0.1)).epsilon(1e-15));
}

TEST_CASE("adamw_update: clipped by the norm over every part, run by run with its own decay, nothing written when "
          "the norm is not finite") {
    // Two runs ([0, 5) decayed, [7, 13) not) around two elements no run holds; the norm in two parts.
    const int n = 13;
    const std::vector<sgt::adamw_run> runs{{0, 5, 0.1}, {7, 6, 0.0}};
    const dvec g = randn(n, 36, 3.0), p0 = randn(n, 37);
    double sq_a = 0.0, sq_b = 0.0;
    for (int i = 0; i < 5; ++i) sq_a += g[i] * g[i];
    for (int i = 7; i < n; ++i) sq_b += g[i] * g[i];
    const double parts[2] = {sq_a, sq_b}, norm = std::sqrt(sq_a + sq_b);
    REQUIRE(norm > 2.0);  // the clip to 1 scales every gradient
    sgt::adamw_hyper h;
    h.clip = 1.0;
    const double lr = 1e-2;
    dvec p = p0, m(n, 0.0), v(n, 0.0);
    const dvec g_before = g;
    for (int t = 1; t <= 2; ++t) {
        const auto s = step_values(h, lr, t);
        sgt::adamw_update(cpu, p.data(), g.data(), m.data(), v.data(), runs, h, &s, parts, 2);
    }
    CHECK(g == g_before);  // the gradients are scaled as they are read, not in place
    for (const auto& r : runs) {
        dvec pr(p0.begin() + r.offset, p0.begin() + r.offset + r.n), gr(g.begin() + r.offset, g.begin() + r.offset + r.n);
        for (double& x : gr) x *= 1.0 / (norm + 1e-6);
        dvec mr(std::size_t(r.n), 0.0), vr(std::size_t(r.n), 0.0);
        for (int t = 1; t <= 2; ++t) reference_adamw(pr, gr, mr, vr, h, lr, r.decay, t);
        for (std::int64_t i = 0; i < r.n; ++i) {
            CHECK(p[std::size_t(r.offset + i)] == doctest::Approx(pr[std::size_t(i)]).epsilon(1e-14));
            CHECK(m[std::size_t(r.offset + i)] == doctest::Approx(mr[std::size_t(i)]).epsilon(1e-14));
        }
    }
    for (int i : {5, 6}) CHECK(p[std::size_t(i)] == p0[std::size_t(i)]);  // in no run: untouched
    // A non-finite part: weights and moments stay as they were.
    const dvec p_kept = p, m_kept = m, v_kept = v;
    const double bad[2] = {sq_a, std::numeric_limits<double>::quiet_NaN()};
    const auto s = step_values(h, lr, 3);
    sgt::adamw_update(cpu, p.data(), g.data(), m.data(), v.data(), runs, h, &s, bad, 2);
    CHECK(p == p_kept);
    CHECK(m == m_kept);
    CHECK(v == v_kept);
}

// ---------------------------------------------------------------------------------------------------------
TEST_CASE("elementwise helpers: fill_zero, copy, add, accumulate, scale, sum_squares, all_finite") {
    const dvec a = randn(9, 36), b = randn(9, 37);
    dvec x = a;
    sgt::fill_zero(cpu, x.data(), 9);
    CHECK(std::all_of(x.begin(), x.end(), [](double v) { return v == 0.0; }));
    sgt::copy(cpu, x.data(), a.data(), 9);
    CHECK(x == a);
    dvec s(9);
    sgt::add(cpu, s.data(), a.data(), b.data(), 9);
    for (int i = 0; i < 9; ++i) CHECK(s[i] == a[i] + b[i]);
    sgt::add(cpu, x.data(), x.data(), b.data(), 9);  // out aliases a
    CHECK(x == s);
    x = a;
    sgt::accumulate(cpu, x.data(), b.data(), 9);
    CHECK(x == s);
    x = a;
    sgt::scale(cpu, x.data(), 9, -1.5);
    for (int i = 0; i < 9; ++i) CHECK(x[i] == -1.5 * a[i]);
    CHECK(sgt::sum_squares(cpu, a.data(), 9) == doctest::Approx(dot(a, a)).epsilon(1e-15));
    // Accumulated in double: 1e8 + 4 is not representable in float (spacing 8 there), in double it is.
    const std::vector<float> f{1e4f, 1.f, 1.f, 1.f, 1.f};
    CHECK(sgt::sum_squares(cpu, f.data(), 5) == 100000004.0);
    CHECK(sgt::all_finite(cpu, a.data(), 9));
    for (double bad : {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity(),
                       -std::numeric_limits<double>::infinity()}) {
        dvec y = a;
        y[8] = bad;
        CHECK_FALSE(sgt::all_finite(cpu, y.data(), 9));
        CHECK(sgt::all_finite(cpu, y.data(), 8));
    }
}

// ---------------------------------------------------------------------------------------------------------
TEST_CASE("float instantiations agree with double") {
    constexpr double tol = 1e-5;
    auto agree = [&](const std::string& what, double err) {
        note("float vs double " + what, err);
        INFO(what << ": " << err);
        CHECK(err <= tol);
    };
    const int N = 5, I = 7, O = 3, C = 7, V = 11, B = 2, T = 5, n = 3, HD = 6;

    {  // matmul
        const dvec x = randn(N * I, 40), W = randn(O * I, 41), dy = randn(N * O, 42);
        const auto xf = to_float(x), Wf = to_float(W), dyf = to_float(dy);
        dvec y(N * O), dx(N * I, 0.0), dW(O * I, 0.0);
        std::vector<float> yf(N * O), dxf(N * I, 0.f), dWf(O * I, 0.f);
        sgt::matmul_forward(cpu, y.data(), x.data(), W.data(), N, I, O);
        sgt::matmul_forward(cpu, yf.data(), xf.data(), Wf.data(), N, I, O);
        sgt::matmul_backward(cpu, dx.data(), dW.data(), dy.data(), x.data(), W.data(), N, I, O);
        sgt::matmul_backward(cpu, dxf.data(), dWf.data(), dyf.data(), xf.data(), Wf.data(), N, I, O);
        agree("matmul", std::max({rel_err(yf, y), rel_err(dxf, dx), rel_err(dWf, dW)}));
    }
    {  // embedding
        const std::vector<std::int32_t> tok{3, 7, 3, 0, 10};
        const dvec table = randn(V * C, 43), dy = randn(N * C, 44);
        const auto tf = to_float(table), dyf = to_float(dy);
        dvec y(N * C), dt(V * C, 0.0);
        std::vector<float> yf(N * C), dtf(V * C, 0.f);
        sgt::embedding_forward(cpu, y.data(), tok.data(), table.data(), N, C);
        sgt::embedding_forward(cpu, yf.data(), tok.data(), tf.data(), N, C);
        sgt::embedding_backward(cpu, dt.data(), dy.data(), tok.data(), N, C);
        sgt::embedding_backward(cpu, dtf.data(), dyf.data(), tok.data(), N, C);
        agree("embedding", std::max(rel_err(yf, y), rel_err(dtf, dt)));
    }
    {  // rmsnorm
        const dvec x = randn(N * C, 45), w = randn(C, 46), dy = randn(N * C, 47);
        const auto xf = to_float(x), wf = to_float(w), dyf = to_float(dy);
        dvec y(N * C), r(N), dx(N * C, 0.0), dw(C, 0.0);
        std::vector<float> yf(N * C), rf(N), dxf(N * C, 0.f), dwf(C, 0.f);
        sgt::rmsnorm_forward(cpu, y.data(), r.data(), x.data(), w.data(), N, C, 1e-5);
        sgt::rmsnorm_forward(cpu, yf.data(), rf.data(), xf.data(), wf.data(), N, C, 1e-5);
        sgt::rmsnorm_backward(cpu, dx.data(), dw.data(), dy.data(), x.data(), w.data(), r.data(), N, C);
        sgt::rmsnorm_backward(cpu, dxf.data(), dwf.data(), dyf.data(), xf.data(), wf.data(), rf.data(), N, C);
        agree("rmsnorm", std::max({rel_err(yf, y), rel_err(rf, r), rel_err(dxf, dx), rel_err(dwf, dw)}));
    }
    {  // rope
        const int half = HD / 2;
        dvec cs(T * half), sn(T * half);
        std::vector<float> csf(T * half), snf(T * half);
        sgt::rope_tables(cpu, cs.data(), sn.data(), T, HD, 10000.0);
        sgt::rope_tables(cpu, csf.data(), snf.data(), T, HD, 10000.0);
        dvec x = randn(B * T * n * HD, 48);
        auto xf = to_float(x);
        sgt::rope_forward(cpu, x.data(), cs.data(), sn.data(), B, T, n, HD, n * HD);
        sgt::rope_forward(cpu, xf.data(), csf.data(), snf.data(), B, T, n, HD, n * HD);
        double e = std::max({rel_err(csf, cs), rel_err(snf, sn), rel_err(xf, x)});
        sgt::rope_backward(cpu, x.data(), cs.data(), sn.data(), B, T, n, HD, n * HD);
        sgt::rope_backward(cpu, xf.data(), csf.data(), snf.data(), B, T, n, HD, n * HD);
        agree("rope", std::max(e, rel_err(xf, x)));
    }
    {  // swiglu
        const std::int64_t m = N * C;
        const dvec g = randn(m, 49, 2.0), u = randn(m, 50), dy = randn(m, 51);
        const auto gf = to_float(g), uf = to_float(u), dyf = to_float(dy);
        dvec y(m), dg(m, 0.0), du(m, 0.0);
        std::vector<float> yf(m), dgf(m, 0.f), duf(m, 0.f);
        sgt::swiglu_forward(cpu, y.data(), g.data(), u.data(), N, C, C);
        sgt::swiglu_forward(cpu, yf.data(), gf.data(), uf.data(), N, C, C);
        sgt::swiglu_backward(cpu, dg.data(), du.data(), dy.data(), g.data(), u.data(), N, C, C);
        sgt::swiglu_backward(cpu, dgf.data(), duf.data(), dyf.data(), gf.data(), uf.data(), N, C, C);
        agree("swiglu", std::max({rel_err(yf, y), rel_err(dgf, dg), rel_err(duf, du)}));
    }
    {  // cross entropy
        const dvec z = randn(N * V, 52, 2.0);
        const auto zf = to_float(z);
        const std::vector<std::int32_t> tgt{4, 10, -1, 0, 4};
        const auto l = sgt::cross_entropy_forward(cpu, z.data(), tgt.data(), N, V);
        const auto lf = sgt::cross_entropy_forward(cpu, zf.data(), tgt.data(), N, V);
        CHECK(lf.count == l.count);
        dvec dz(N * V);
        std::vector<float> dzf(N * V);
        sgt::cross_entropy_backward(cpu, dz.data(), z.data(), tgt.data(), N, V, 0.25);
        sgt::cross_entropy_backward(cpu, dzf.data(), zf.data(), tgt.data(), N, V, 0.25);
        agree("cross_entropy", std::max(std::abs(lf.sum - l.sum) / std::abs(l.sum), rel_err(dzf, dz)));
    }
    {  // attention
        const dvec qkv = randn(std::size_t(B) * T * 3 * n * HD, 53), dy = randn(std::size_t(B) * T * n * HD, 54);
        const auto qkvf = to_float(qkv), dyf = to_float(dy);
        dvec y(dy.size()), p(B * n * T * T), e(B * n), dq(qkv.size());
        std::vector<float> yf(dy.size()), pf(B * n * T * T), dqf(qkv.size());
        dvec ef(B * n);
        sgt::attention_forward(cpu, y.data(), p.data(), e.data(), qkv.data(), B, T, n, HD);
        sgt::attention_forward(cpu, yf.data(), pf.data(), ef.data(), qkvf.data(), B, T, n, HD);
        sgt::attention_backward(cpu, dq.data(), dy.data(), qkv.data(), p.data(), B, T, n, HD);
        sgt::attention_backward(cpu, dqf.data(), dyf.data(), qkvf.data(), pf.data(), B, T, n, HD);
        agree("attention", std::max({rel_err(yf, y), rel_err(pf, p), rel_err(ef, e), rel_err(dqf, dq)}));
    }
    {  // heads
        const std::vector<int> heads{0, 2};
        const dvec W = randn(n * HD * C, 55);
        const auto Wf = to_float(W);
        dvec gr(2 * HD * C), gc(C * 2 * HD), sr(n * HD * C, 0.0), sc(C * n * HD, 0.0);
        std::vector<float> grf(2 * HD * C), gcf(C * 2 * HD), srf(n * HD * C, 0.f), scf(C * n * HD, 0.f);
        sgt::gather_head_rows(cpu, gr.data(), W.data(), heads, HD, C);
        sgt::gather_head_rows(cpu, grf.data(), Wf.data(), heads, HD, C);
        sgt::gather_head_cols(cpu, gc.data(), W.data(), heads, HD, C, n);
        sgt::gather_head_cols(cpu, gcf.data(), Wf.data(), heads, HD, C, n);
        sgt::scatter_add_head_rows(cpu, sr.data(), gr.data(), heads, HD, C);
        sgt::scatter_add_head_rows(cpu, srf.data(), grf.data(), heads, HD, C);
        sgt::scatter_add_head_cols(cpu, sc.data(), gc.data(), heads, HD, C, n);
        sgt::scatter_add_head_cols(cpu, scf.data(), gcf.data(), heads, HD, C, n);
        dvec x = W;
        auto xf = Wf;
        const std::vector<double> gains{0.5, 1.0, 3.0};
        const std::vector<float> gainsf(gains.begin(), gains.end());
        sgt::head_gain_forward(cpu, x.data(), gains.data(), C, 3, HD, false);
        sgt::head_gain_forward(cpu, xf.data(), gainsf.data(), C, 3, HD, false);
        agree("heads", std::max({rel_err(grf, gr), rel_err(gcf, gc), rel_err(srf, sr), rel_err(scf, sc), rel_err(xf, x)}));
    }
    {  // dropout: the same seed gives the same mask in both precisions
        const dvec x0 = randn(1000, 56);
        dvec x = x0, mask(1000);
        auto xf = to_float(x0);
        std::vector<float> maskf(1000);
        sgt::rng r(9), rf(9);
        sgt::dropout_forward(cpu, x.data(), mask.data(), 1000, 0.3, r);
        sgt::dropout_forward(cpu, xf.data(), maskf.data(), 1000, 0.3, rf);
        dvec d = x0;
        auto df = to_float(x0);
        sgt::dropout_backward(cpu, d.data(), mask.data(), 1000);
        sgt::dropout_backward(cpu, df.data(), maskf.data(), 1000);
        agree("dropout", std::max({rel_err(maskf, mask), rel_err(xf, x), rel_err(df, d)}));
    }
    {  // elementwise helpers
        const dvec a = randn(9, 57), b = randn(9, 58);
        const auto af = to_float(a), bf = to_float(b);
        dvec s(9);
        std::vector<float> sf(9);
        sgt::add(cpu, s.data(), a.data(), b.data(), 9);
        sgt::add(cpu, sf.data(), af.data(), bf.data(), 9);
        sgt::accumulate(cpu, s.data(), a.data(), 9);
        sgt::accumulate(cpu, sf.data(), af.data(), 9);
        sgt::scale(cpu, s.data(), 9, 0.3);
        sgt::scale(cpu, sf.data(), 9, 0.3);
        const double ss = sgt::sum_squares(cpu, a.data(), 9), ssf = sgt::sum_squares(cpu, af.data(), 9);
        agree("elementwise", std::max(rel_err(sf, s), std::abs(ssf - ss) / ss));
        CHECK(sgt::all_finite(cpu, af.data(), 9));
    }
}
