// sgt/loop_subspace.hpp: a run of loop steps (Eq. 6) of one layer over the same heads S, computed in the subspace
// of S's heads: the same function as running those steps one by one through attention.hpp, with less work.
//
// A loop step adds W_O o' to the residual stream x (o' = the gains times the attention outputs of S's heads,
// m = |S|·HD numbers a token), and all that the next step reads of x is RMSNorm(x; γ) W_QKVᵀ. With
//     a = x diag(γ) W_QKVᵀ  (N, 3m),   s = ‖x‖²  (N),   u = x W_O  (N, m),
// a step's q, k, v are a / sqrt(s/C + eps) (then RoPE), and its update of x changes them by
//     a ← a + o' Mᵀ,   u ← u + o' G,   s ← s + o'·(2u + o' G),    M = W_QKV diag(γ) W_O  (3m, m),   G = W_Oᵀ W_O  (m, m)
// (u on the right the value before the update). So a run of K steps reads its input x₀ once (for a, s and u) and
// writes x_K = x₀ + (Σ_k o'_k) W_Oᵀ once at its end; in between it works in 4m + 1 numbers a token (a, u, s), and a
// step keeps m + 1 of them for its backward (u and s) where a pass keeps C + 1 (its output and rstd). Per token and
// step the products shrink from 8·C·m multiply-adds (W_QKV and W_O over the full width) to 4·m² (M and G); the run
// pays 5·C·m once more (a and u of x₀, the final W_O), and the RMSNorm of every step, with its backward, becomes a
// scaling of 3m numbers (RoPE in the same pass). In arithmetic that pays from K = 2 up to m ≈ 3C/4; in memory
// traffic a step moves about 19m numbers a token (a, u, t and the products' operands) where a pass moves about
// 5C + 4m, so loop_subspace_applies asks K ≥ 2 and 3m ≤ C: a run carries no more numbers than x itself (measured on
// the CPU at m = C/3 and m = C/2: docs/BENCHMARKS.md).
//
// Exact in real arithmetic; in floating point it rounds differently (x is not formed between the steps), which
// tests/test_loop_subspace.cpp bounds against the step-by-step form in double. The model (model.hpp) takes this
// form for every eligible run when model::set_loop_subspace is on; attention.hpp stays the definition of a pass.
#pragma once

#include <cstdint>
#include <span>

#include "sgt/attention.hpp"
#include "sgt/backend/common.hpp"
#include "sgt/core/buffers.hpp"
#include "sgt/core/error.hpp"
#include "sgt/core/precision.hpp"

namespace sgt {

// The row ops this form needs beyond the backend contract (backend/cpu/subspace.hpp has their definitions and
// shapes). Optional: a backend without them runs every loop step through attention.hpp.
template <class B>
concept has_subspace_ops = requires(float* x, const float* c, float* a, const float* ca) {
    row_sum_squares(B{}, a, c, 1, 1);
    row_sum_squares_backward(B{}, x, ca, c, 1, 1);
    subspace_normalize(B{}, x, c, ca, 1, 1, 1, double{}, rope_rows<float>{});
    subspace_normalize_backward(B{}, a, x, x, c, ca, 1, 1, 1, double{}, rope_rows<float>{}, bool{});
    subspace_update(B{}, a, x, ca, c, c, c, 1, 1);
    subspace_update_backward(B{}, x, x, x, ca, c, c, 1, 1);
    scale_columns(B{}, x, c, c, 1, 1);
    scale_columns_backward(B{}, x, x, c, c, c, 1, 1);
};

// Whether a run of `steps` loop steps over n heads is worth computing in the subspace (see the header).
inline bool loop_subspace_applies(int steps, int n, int HD, int C) { return steps >= 2 && 3 * n * HD <= C; }

// What a run keeps for its backward (its steps' q, k, v, attention records and outputs are in their
// attention_records). Buffers only grow.
template <class T, class Backend>
struct subspace_run {
    template <class U>
    using buffer = typename Backend::template buffer<U>;
    using A = accum_t<T>;

    const T* in = nullptr;      // (N, C) x₀, owned by the stage before
    buffer<T> w_qkv, w_o;       // (3m, C), (C, m)  S's rows of W_Q, W_K, W_V and columns of W_O (gathered)
    buffer<T> w_qkv_g;          // (3m, C)          W_QKV diag(γ)
    buffer<T> m_mat, g_mat;     // (3m, m), (m, m)  M and G
    buffer<A> s;                // (K, N)           s before step k = 1..K
    buffer<T> u;                // (K, N, m)        u before step k (u after the update that follows step k − 1)
    buffer<T> o_sum;            // (N, m)           Σ_k o'_k
    buffer<T> out;              // (N, C)           x_K
};

// Scratch shared by the runs.
template <class T, class Backend>
struct subspace_scratch {
    template <class U>
    using buffer = typename Backend::template buffer<U>;
    buffer<T> a;                     // (2, N, 3m): a of the step at hand and of the next (the backward needs
                                     //   neither: see subspace_run_backward)
    buffer<T> t, d_sum, d_o, du, w;  // (N, m)
    buffer<T> da, dqkv;              // (N, 3m)
    buffer<accum_t<T>> ds;           // (N)
    buffer<T> dm, dg;                // (3m, m), (m, m)
    buffer<T> dw_qkv_g, dw_qkv, dw_o;  // (3m, C), (3m, C), (C, m)
};

// The forward of a run over `steps` (their heads, gains and want_entropy set by the caller; each gets q, k, v, its
// attention record, o' and, where asked, its entropies, as a pass of attention.hpp would). run.out is x_K.
template <class T, class Backend>
void subspace_run_forward(Backend be, subspace_run<T, Backend>& run, std::span<attention_record<T, Backend>* const> steps,
                          subspace_scratch<T, Backend>& sc, const attention_weights<T>& w, const T* in,
                          const pass_dims& d, const accum_t<T>* rope_cos, const accum_t<T>* rope_sin) {
    const int K = int(steps.size()), m = steps[0]->n() * d.HD, C = d.C;
    const std::int64_t N = d.tokens(), m3 = 3 * std::int64_t(m);
    const T* none = nullptr;
    T* skip = nullptr;
    require(K >= 2, "subspace_run_forward: a run takes at least 2 loop steps (loop_subspace_applies), found {}", K);
    const rope_rows<accum_t<T>> rope{rope_cos, rope_sin, d.T, 2 * steps[0]->n(), d.HD};  // q and k
    run.in = in;
    detail::grow(run.w_qkv, m3 * C);
    detail::grow(run.w_o, std::int64_t(C) * m);
    detail::grow(run.w_qkv_g, m3 * C);
    detail::grow(run.m_mat, m3 * m);
    detail::grow(run.g_mat, std::int64_t(m) * m);
    detail::grow(run.s, K * N);
    detail::grow(run.u, K * N * m);
    detail::grow(run.o_sum, N * m);
    detail::grow(run.out, N * C);
    detail::grow(sc.t, N * m);
    detail::grow(sc.a, 2 * N * m3);
    auto a = [&](int k) { return sc.a.data() + (k % 2) * N * m3; };  // a before step k
    auto s = [&](int k) { return run.s.data() + (k - 1) * N; };
    auto u = [&](int k) { return run.u.data() + (k - 1) * N * m; };

    detail::gather_pass_weights(be, run.w_qkv.data(), run.w_o.data(), w, steps[0]->heads, d);
    scale_columns(be, run.w_qkv_g.data(), run.w_qkv.data(), w.norm, int(m3), C);
    // M = W_QKV diag(γ) W_O and G = W_Oᵀ W_O, as the input- and weight-gradient forms of a product
    matmul_backward(be, run.m_mat.data(), skip, run.w_qkv_g.data(), none, run.w_o.data(), int(m3), m, C,
                    overwrite{.din = true});
    matmul_backward(be, skip, run.g_mat.data(), run.w_o.data(), run.w_o.data(), none, C, m, m, overwrite{.dw = true});

    row_sum_squares(be, s(1), in, int(N), C);
    matmul_forward(be, a(1), in, run.w_qkv_g.data(), int(N), C, int(m3));
    matmul_backward(be, u(1), skip, in, none, run.w_o.data(), int(N), m, C, overwrite{.din = true});  // u = x W_O
    for (int k = 1; k <= K; ++k) {
        auto& r = *steps[std::size_t(k - 1)];
        detail::grow_pass_core(be, r, d);
        r.in = nullptr;  // the step's input is not formed (nor its rstd or output)
        subspace_normalize(be, r.qkv.data(), a(k), s(k), int(N), int(m3), C, d.eps, rope);  // q, k, v, RoPE'd
        detail::pass_core_forward(be, r, d, nullptr, nullptr);
        if (k == 2)
            add(be, run.o_sum.data(), steps[0]->o.data(), r.o.data(), N * m);
        else if (k > 2)
            accumulate(be, run.o_sum.data(), r.o.data(), N * m);
        if (k == K) break;
        matmul_forward(be, a(k + 1), r.o.data(), run.m_mat.data(), int(N), m, int(m3), false, a(k));
        matmul_forward(be, sc.t.data(), r.o.data(), run.g_mat.data(), int(N), m, m);  // t = o' G (G symmetric)
        subspace_update(be, s(k + 1), u(k + 1), s(k), u(k), r.o.data(), sc.t.data(), int(N), m);
    }
    matmul_forward(be, run.out.data(), run.o_sum.data(), run.w_o.data(), int(N), m, C, false, in);
}

// The backward of the run over the same `steps`. dres (N, C): on entry ∂L/∂x_K, on exit ∂L/∂x₀. Weight gradients
// (W_Q, W_K, W_V and W_O's rows and columns of S, and γ) accumulate into g.
template <class T, class Backend>
void subspace_run_backward(Backend be, T* dres, const attention_grads<T>& g, subspace_run<T, Backend>& run,
                           std::span<attention_record<T, Backend>* const> steps, const attention_weights<T>& w,
                           subspace_scratch<T, Backend>& sc, const pass_dims& d, const accum_t<T>* rope_cos,
                           const accum_t<T>* rope_sin) {
    const int K = int(steps.size()), m = steps[0]->n() * d.HD, C = d.C;
    const std::int64_t N = d.tokens(), m3 = 3 * std::int64_t(m);
    for (auto* b : {&sc.t, &sc.d_sum, &sc.d_o, &sc.du, &sc.w}) detail::grow(*b, N * m);
    detail::grow(sc.da, N * m3);
    detail::grow(sc.dqkv, N * m3);
    detail::grow(sc.ds, N);
    detail::grow(sc.dm, m3 * m);
    detail::grow(sc.dg, std::int64_t(m) * m);
    detail::grow(sc.dw_qkv_g, m3 * C);
    detail::grow(sc.dw_qkv, m3 * C);
    detail::grow(sc.dw_o, std::int64_t(C) * m);
    auto s = [&](int k) { return run.s.data() + (k - 1) * N; };
    auto u = [&](int k) { return run.u.data() + (k - 1) * N * m; };
    const T* none = nullptr;
    T* skip = nullptr;
    const rope_rows<accum_t<T>> rope{rope_cos, rope_sin, d.T, 2 * steps[0]->n(), d.HD};

    // x_K = x₀ + (Σ o') W_Oᵀ: ∂L/∂Σo' = dres W_O, ∂L/∂W_O = dresᵀ Σo' (the scratch written)
    matmul_backward(be, sc.d_sum.data(), sc.dw_o.data(), dres, run.o_sum.data(), run.w_o.data(), int(N), m, C,
                    overwrite{.din = true, .dw = true});
    // ∂L/∂a, ∂L/∂s and ∂L/∂u of the step at hand, carried back: step K writes ∂L/∂a, and ∂L/∂u(K) is zero (no
    // update reads u after step K); ∂L/∂M and ∂L/∂G are written by the last update (k = K − 1), added to after.
    fill_zero(be, sc.ds.data(), N);
    fill_zero(be, sc.du.data(), N * m);
    for (int k = K; k >= 1; --k) {
        auto& r = *steps[std::size_t(k - 1)];
        T* const d_o = k == 1 ? sc.d_sum.data() : sc.d_o.data();  // ∂L/∂o'_k: ∂L/∂Σo' plus what the update adds
        if (k > 1) copy(be, d_o, sc.d_sum.data(), N * m);
        if (k < K) {  // the update after step k, which gave a, s and u of step k + 1
            const overwrite first{.dw = k == K - 1};
            matmul_backward(be, d_o, sc.dm.data(), sc.da.data(), r.o.data(), run.m_mat.data(), int(N), m, int(m3),
                            first);                                                                 // a += o' Mᵀ
            if (k < K - 1)
                matmul_backward(be, d_o, skip, sc.du.data(), none, run.g_mat.data(), int(N), m, m);  // u += o' G
            subspace_update_backward(be, d_o, sc.du.data(), sc.w.data(), sc.ds.data(), r.o.data(), u(k + 1), int(N), m);
            matmul_backward(be, skip, sc.dg.data(), sc.w.data(), r.o.data(), none, int(N), m, m, first);  // ∂L/∂G (transposed)
        }
        // ∂L/∂ of the RoPE'd q, k, v; then ∂L/∂s through this step's 1/rms, which RoPE (a rotation) leaves as it
        // is when taken from the RoPE'd values, so that a need not be kept; then ∂L/∂a += RoPE⁻¹(r · ∂L/∂qkv)
        // (step K writes it in place).
        T* const dqkv = k == K ? sc.da.data() : sc.dqkv.data();
        detail::pass_core_backward(be, dqkv, d_o, r, d);
        subspace_normalize_backward(be, sc.ds.data(), sc.da.data(), dqkv, r.qkv.data(), s(k), int(N), int(m3), C, d.eps,
                                    rope, k < K);
    }

    // x₀ gave a = x₀ diag(γ) W_QKVᵀ, u = x₀ W_O and s = ‖x₀‖², besides x_K's identity path (already in dres)
    matmul_backward(be, dres, sc.dw_qkv_g.data(), sc.da.data(), run.in, run.w_qkv_g.data(), int(N), C, int(m3),
                    overwrite{.dw = true});
    matmul_forward(be, dres, sc.du.data(), run.w_o.data(), int(N), m, C, true);
    matmul_backward(be, skip, sc.dw_o.data(), run.in, sc.du.data(), none, int(N), m, C);
    row_sum_squares_backward(be, dres, sc.ds.data(), run.in, int(N), C);
    // M = W_QKV diag(γ) W_O and G = W_Oᵀ W_O (∂L/∂G enters symmetrised: W_O (dG + dGᵀ))
    matmul_forward(be, sc.dw_qkv_g.data(), sc.dm.data(), run.w_o.data(), int(m3), m, C, true);
    matmul_backward(be, skip, sc.dw_o.data(), run.w_qkv_g.data(), sc.dm.data(), none, int(m3), m, C);
    matmul_forward(be, sc.dw_o.data(), run.w_o.data(), sc.dg.data(), C, m, m, true);
    matmul_backward(be, sc.dw_o.data(), skip, run.w_o.data(), none, sc.dg.data(), C, m, m);
    scale_columns_backward(be, sc.dw_qkv.data(), g.norm, sc.dw_qkv_g.data(), run.w_qkv.data(), w.norm, int(m3), C);
    detail::scatter_pass_grads(be, g, sc.dw_qkv.data(), sc.dw_o.data(), steps[0]->heads, d);
}

}  // namespace sgt
