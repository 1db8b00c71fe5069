// sgt/loop_subspace.hpp: a run of loop steps (Eq. 6) of one layer over the same heads S, computed in the subspace
// of S's heads: the same function as running those steps one by one through attention.hpp, with less work.
//
// A loop step adds W_O o' to the residual stream x (o' = the gains times the attention outputs of S's heads,
// m = |S|·HD numbers a token), and all that the next step reads of x is RMSNorm(x; γ) W_QKVᵀ. With the run's state
//     z = [a | u] = x Wᵀ  (N, 4m),   W = [W_QKV diag(γ); W_Oᵀ]  (4m, C),   s = ‖x‖²  (N),
// (a = x diag(γ) W_QKVᵀ, u = x W_O), a step's q, k, v are a / sqrt(s/C + eps) (then RoPE), and its update of x
// changes the state by
//     z ← z + o' Pᵀ,   s ← s + o'·(u + u_new),    P = W W_O = [W_QKV diag(γ) W_O; W_Oᵀ W_O]  (4m, m)
// (u the value before the update, u_new after it: o'·(2u + o' W_Oᵀ W_O) written with the updated u). So a run of
// K steps reads its input x₀ once (z and s) and writes x_K = x₀ + (Σ_k o'_k) W_Oᵀ once at its end; in between it
// works in 4m + 1 numbers a token, and a step keeps m + 1 of them for its backward (u and s) where a pass keeps
// C + 1 (its output and rstd). Per token and step the products shrink from 8·C·m multiply-adds (W_QKV and W_O over
// the full width) to 4·m² (P); the run pays 5·C·m once more (z of x₀, the final W_O), and the RMSNorm of every step,
// with its backward, becomes a scaling of 3m numbers (RoPE, the update of s and the sum of the o' in the same pass
// over the rows). In arithmetic that pays from K = 2 up to m ≈ 3C/4; in memory traffic a step moves about 20m
// numbers a token (z twice; q, k, v, u and o' a few times) where a pass moves about 5C + 4m, so
// loop_subspace_applies asks K ≥ 2 and 3m ≤ C: a run carries no more numbers than x itself (measured on the CPU at
// m = C/3 and m = C/2: docs/BENCHMARKS.md).
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
    subspace_step_forward(B{}, x, a, x, c, 1, 1, 1, double{}, rope_rows<float>{}, subspace_prev<float>{});
    subspace_step_backward(B{}, a, x, x, c, ca, c, 1, 1, 1, double{}, rope_rows<float>{}, bool{},
                           subspace_prev_grad<float>{});
    gather_run_weights(B{}, x, x, x, attention_weights<float>{}, std::span<const int>{}, 1, 1, 1);
    scatter_run_grads(B{}, attention_grads<float>{}, x, x, c, c, std::span<const int>{}, 1, 1, 1);
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
    buffer<T> w;                // (4m, C)          W = [W_QKV diag(γ); W_Oᵀ]
    buffer<T> p;                // (4m, m)          P = W W_O
    buffer<A> s;                // (K, N)           s before step k = 1..K
    buffer<T> u;                // (K, N, m)        u before step k (after the update that follows step k − 1)
    buffer<T> o_sum;            // (N, m)           Σ_k o'_k
    buffer<T> out;              // (N, C)           x_K
};

// Scratch shared by the runs.
template <class T, class Backend>
struct subspace_scratch {
    template <class U>
    using buffer = typename Backend::template buffer<U>;
    buffer<T> z;                     // (2, N, 4m): z of the step at hand and of the next (the backward reads only
                                     //   its u, kept in the run)
    buffer<T> d_sum, d_o;            // (N, m)
    buffer<T> dz;                    // (N, 4m)
    buffer<T> dqkv;                  // (N, 3m)
    buffer<accum_t<T>> ds;           // (N)
    buffer<T> dp;                    // (4m, m)
    buffer<T> dw, dw_o;              // (4m, C), (C, m)
};

// The forward of a run over `steps` (their heads, gains and want_entropy set by the caller; each gets q, k, v, its
// attention record, o' and, where asked, its entropies, as a pass of attention.hpp would). run.out is x_K.
template <class T, class Backend>
void subspace_run_forward(Backend be, subspace_run<T, Backend>& run, std::span<attention_record<T, Backend>* const> steps,
                          subspace_scratch<T, Backend>& sc, const attention_weights<T>& w, const T* in,
                          const pass_dims& d, const accum_t<T>* rope_cos, const accum_t<T>* rope_sin) {
    const int K = int(steps.size()), m = steps[0]->n() * d.HD, C = d.C;
    const std::int64_t N = d.tokens(), m3 = 3 * std::int64_t(m), m4 = 4 * std::int64_t(m);
    require(K >= 2, "subspace_run_forward: a run takes at least 2 loop steps (loop_subspace_applies), found {}", K);
    const rope_rows<accum_t<T>> rope{rope_cos, rope_sin, d.T, 2 * steps[0]->n(), d.HD};  // q and k
    run.in = in;
    detail::grow(run.w_qkv, m3 * C);
    detail::grow(run.w_o, std::int64_t(C) * m);
    detail::grow(run.w, m4 * C);
    detail::grow(run.p, m4 * m);
    detail::grow(run.s, K * N);
    detail::grow(run.u, K * N * m);
    detail::grow(run.o_sum, N * m);
    detail::grow(run.out, N * C);
    detail::grow(sc.z, 2 * N * m4);
    auto z = [&](int k) { return sc.z.data() + (k % 2) * N * m4; };  // z before step k
    auto s = [&](int k) { return run.s.data() + (k - 1) * N; };
    auto u = [&](int k) { return run.u.data() + (k - 1) * N * m; };

    // W = [W_QKV diag(γ); W_Oᵀ] and P = W W_O
    gather_run_weights(be, run.w_qkv.data(), run.w_o.data(), run.w.data(), w, steps[0]->heads, d.HD, C, d.NH);
    matmul_forward(be, run.p.data(), run.w.data(), run.w.data() + m3 * C, int(m4), C, m);

    row_sum_squares(be, s(1), in, int(N), C);
    matmul_forward(be, z(1), in, run.w.data(), int(N), C, int(m4));
    for (int k = 1; k <= K; ++k) {
        auto& r = *steps[std::size_t(k - 1)];
        detail::grow_pass_core(be, r, d);
        r.in = nullptr;  // the step's input is not formed (nor its rstd or output)
        subspace_prev<T> prev;
        if (k > 1) prev = {s(k - 1), u(k - 1), steps[std::size_t(k - 2)]->o.data(), run.o_sum.data(), k == 2};
        subspace_step_forward(be, r.qkv.data(), s(k), u(k), z(k), int(N), m, C, d.eps, rope, prev);  // q, k, v
        detail::pass_core_forward(be, r, d, nullptr, nullptr);
        if (k < K) matmul_forward(be, z(k + 1), r.o.data(), run.p.data(), int(N), m, int(m4), false, z(k));
    }
    accumulate(be, run.o_sum.data(), steps[std::size_t(K - 1)]->o.data(), N * m);
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
    const std::int64_t N = d.tokens(), m3 = 3 * std::int64_t(m), m4 = 4 * std::int64_t(m);
    for (auto* b : {&sc.d_sum, &sc.d_o}) detail::grow(*b, N * m);
    detail::grow(sc.dz, N * m4);
    detail::grow(sc.dqkv, N * m3);
    detail::grow(sc.ds, N);
    detail::grow(sc.dp, m4 * m);
    detail::grow(sc.dw, m4 * C);
    detail::grow(sc.dw_o, std::int64_t(C) * m);
    auto s = [&](int k) { return run.s.data() + (k - 1) * N; };
    auto u = [&](int k) { return run.u.data() + (k - 1) * N * m; };
    auto o = [&](int k) { return steps[std::size_t(k - 1)]->o.data(); };
    T* skip = nullptr;
    const rope_rows<accum_t<T>> rope{rope_cos, rope_sin, d.T, 2 * steps[0]->n(), d.HD};

    // x_K = x₀ + (Σ o') W_Oᵀ: ∂L/∂Σo' = dres W_O, ∂L/∂W_O = dresᵀ Σo' (the scratch written)
    matmul_backward(be, sc.d_sum.data(), sc.dw_o.data(), dres, run.o_sum.data(), run.w_o.data(), int(N), m, C,
                    overwrite{.din = true, .dw = true});
    // Carried back through the steps: ∂L/∂z in sc.dz and ∂L/∂s in sc.ds (written by step K's row op: nothing reads
    // its update). Step k + 1's row op wrote ∂L/∂o'_k into sc.d_o (its Σo' and s terms) and completed ∂L/∂z of step
    // k + 1, which the update after step k (z ← z + o' Pᵀ) takes back to o'_k and to P. Step K's ∂L/∂o' is ∂L/∂Σo'
    // (read in place where no gains scale it).
    for (int k = K; k >= 1; --k) {
        auto& r = *steps[std::size_t(k - 1)];
        T* d_o = sc.d_o.data();
        if (k == K) {
            if (r.has_gains())
                copy(be, d_o, sc.d_sum.data(), N * m);
            else
                d_o = sc.d_sum.data();
        } else {
            matmul_backward(be, d_o, sc.dp.data(), sc.dz.data(), o(k), run.p.data(), int(N), m, int(m4),
                            overwrite{.dw = k == K - 1});
        }
        detail::pass_core_backward(be, sc.dqkv.data(), d_o, r, d);
        subspace_prev_grad<T> prev;
        if (k > 1) prev = {u(k - 1), u(k), o(k - 1), sc.d_sum.data(), sc.d_o.data()};
        subspace_step_backward(be, sc.ds.data(), sc.dz.data(), sc.dqkv.data(), r.qkv.data(), s(k),
                               k < K ? o(k) : nullptr, int(N), m, C, d.eps, rope, k < K, prev);
    }

    // x₀ gave z = x₀ Wᵀ and s = ‖x₀‖², besides x_K's identity path (already in dres)
    matmul_backward(be, dres, sc.dw.data(), sc.dz.data(), run.in, run.w.data(), int(N), C, int(m4),
                    overwrite{.dw = true});
    row_sum_squares_backward(be, dres, sc.ds.data(), run.in, int(N), C);
    // P = W W_O: ∂L/∂W += ∂L/∂P W_Oᵀ, ∂L/∂W_O += Wᵀ ∂L/∂P; then W's first 3m rows go through diag(γ) to W_QKV and
    // γ, its last m (W_Oᵀ) to W_O
    matmul_forward(be, sc.dw.data(), sc.dp.data(), run.w_o.data(), int(m4), m, C, true);
    matmul_backward(be, skip, sc.dw_o.data(), run.w.data(), sc.dp.data(), static_cast<const T*>(nullptr), int(m4), m, C);
    scatter_run_grads(be, g, sc.dw.data(), sc.dw_o.data(), run.w_qkv.data(), w.norm, steps[0]->heads, d.HD, C, d.NH);
}

}  // namespace sgt
