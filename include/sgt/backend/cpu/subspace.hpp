// sgt/backend/cpu/subspace.hpp: the row operations of a loop run computed in the looped heads' subspace
// (loop_subspace.hpp has the algebra): squared row norms s; a loop step's q, k, v from the run's state (the update of
// s by the step before, the normalisation of the projections a by s, RoPE after it); the gathering of a run's
// weights (the norm's γ folded into W_QKV as W_QKV diag(γ), W_O transposed) and the scattering of their gradients,
// with the column scaling and the transpose they are made of.
// Rows of s are accum_t<T>, as the normalisation's sums are elsewhere.
#pragma once

#include <cmath>
#include <cstdint>
#include <span>

#include "sgt/backend/common.hpp"
#include "sgt/backend/cpu/backend.hpp"
#include "sgt/backend/cpu/heads.hpp"
#include "sgt/backend/cpu/rope.hpp"

namespace sgt {

namespace detail {
inline std::int64_t subspace_grain(int N, int W) { return grain_for(N, std::max<std::int64_t>(1, 65536 / std::max(W, 1))); }
// 1 / sqrt(s / C + eps), with s clamped at 0 (a sum of squares that rounding took below it).
template <class A>
inline A subspace_rstd(A s, int C, double eps) {
    return A(1.0 / std::sqrt(std::max(double(s), 0.0) / C + eps));
}
}  // namespace detail

// s (N) = Σ_c x², rows of x (N, C).
template <class T>
void row_sum_squares(cpu, accum_t<T>* s, const T* x, int N, int C) {
    parallel_blocks(N, detail::subspace_grain(N, C), [&](std::int64_t b, std::int64_t e) {
        for (std::int64_t n = b; n < e; ++n)
            s[n] = accum_t<T>(detail::const_vector_map<T>(x + n * C, C).template cast<double>().squaredNorm());
    });
}

// dx (N, C) += 2 ds ⊙ x: the gradient of s = Σ_c x² (row_sum_squares).
template <class T>
void row_sum_squares_backward(cpu, T* dx, const accum_t<T>* ds, const T* x, int N, int C) {
    parallel_blocks(N, detail::subspace_grain(N, C), [&](std::int64_t b, std::int64_t e) {
        for (std::int64_t n = b; n < e; ++n)
            detail::vector_map<T>(dx + n * C, C) += T(2 * ds[n]) * detail::const_vector_map<T>(x + n * C, C);
    });
}

// Loop step k's q, k, v from the run's state z = [a | u] (rows of 4m: a = x diag(γ) W_QKVᵀ of 3m, u = x W_O of m):
// qkv (N, 3m) = rope(a · r), r = 1 / sqrt(s / C + eps), the RMS normalisation of a row whose projections and squared
// norm are known, then the rotation of its first rope.heads head vectors (q and k). Where prev.o is given (k > 1), s
// is first computed from the update before the step, s = prev.s_prev + Σ prev.o ⊙ (prev.u_prev + u), and written,
// and prev.o is added into prev.sum (copied where prev.first); else s is read. u is copied into u_keep.
template <class T>
void subspace_step_forward(cpu, T* qkv, accum_t<T>* s, T* u_keep, const T* z, int N, int m, int C, double eps,
                           rope_rows<accum_t<T>> rope, subspace_prev<T> prev) {
    const int half = rope.HD / 2, W = 3 * m;
    parallel_blocks(N, detail::subspace_grain(N, 4 * m), [&](std::int64_t b, std::int64_t e) {
        for (std::int64_t n = b; n < e; ++n) {
            const auto u = detail::const_vector_map<T>(z + n * 4 * m + W, m);
            if (prev.o) {
                const auto o = detail::const_vector_map<T>(prev.o + n * m, m);
                const auto up = detail::const_vector_map<T>(prev.u_prev + n * m, m);
                s[n] = accum_t<T>(double(prev.s_prev[n]) +
                                  (o.template cast<double>().array() *
                                   (up.template cast<double>() + u.template cast<double>()).array()).sum());
                auto sum = detail::vector_map<T>(prev.sum + n * m, m);
                if (prev.first)
                    sum = o;
                else
                    sum += o;
            }
            detail::vector_map<T>(u_keep + n * m, m) = u;
            detail::vector_map<T>(qkv + n * W, W) =
                T(detail::subspace_rstd(s[n], C, eps)) * detail::const_vector_map<T>(z + n * 4 * m, W);
            if (rope.heads > 0) {
                const std::int64_t t = n % rope.T;
                detail::rope_row(qkv + n * W, rope.cos + t * half, rope.sin + t * half, rope.heads, rope.HD, false);
            }
        }
    });
}

// Its backward from dqkv = ∂L/∂qkv (N, 3m; left unspecified), with qkv as the forward wrote it. With `add`, ds (N)
// and dz = [da | du] (N, 4m) hold on entry what the later steps gave (∂L/∂s and ∂L/∂z of step k + 1) and are added
// to; without (the run's last step), they are written. ds gains −r² / (2C) · Σ qkv ⊙ dqkv (through r; the rotation,
// orthogonal, leaves the sum as it is): ∂L/∂s of step k. da gains rope⁻¹(r · dqkv); du the terms through s:
// (ds on entry) · o where o, step k's o' (which the update after step k read), is given, and (ds on exit) · prev.o
// where prev.o is given. Then prev.d_o = prev.d_sum + (ds on exit) · (prev.u_prev + prev.u): ∂L/∂o' of step k − 1
// through s and Σo'.
template <class T>
void subspace_step_backward(cpu, accum_t<T>* ds, T* dz, T* dqkv, const T* qkv, const accum_t<T>* s, const T* o, int N,
                            int m, int C, double eps, rope_rows<accum_t<T>> rope, bool add, subspace_prev_grad<T> prev) {
    const int half = rope.HD / 2, W = 3 * m;
    parallel_blocks(N, detail::subspace_grain(N, 4 * m), [&](std::int64_t b, std::int64_t e) {
        for (std::int64_t n = b; n < e; ++n) {
            auto dy = detail::vector_map<T>(dqkv + n * W, W);
            const double r = double(detail::subspace_rstd(s[n], C, eps));
            const double dot = (detail::const_vector_map<T>(qkv + n * W, W).template cast<double>().array() *
                                dy.template cast<double>().array()).sum();
            const T ds_next = add ? T(ds[n]) : T(0);
            ds[n] = accum_t<T>(double(ds_next) - r * r / (2.0 * C) * dot);
            const T ds_here = T(ds[n]);
            dy *= T(r);
            if (rope.heads > 0) {
                const std::int64_t t = n % rope.T;
                detail::rope_row(dqkv + n * W, rope.cos + t * half, rope.sin + t * half, rope.heads, rope.HD, true);
            }
            auto da = detail::vector_map<T>(dz + n * 4 * m, W);
            auto du = detail::vector_map<T>(dz + n * 4 * m + W, m);
            if (add) {
                da += dy;
            } else {
                da = dy;
                du.setZero();
            }
            if (o) du += ds_next * detail::const_vector_map<T>(o + n * m, m);
            if (prev.o) {
                du += ds_here * detail::const_vector_map<T>(prev.o + n * m, m);
                detail::vector_map<T>(prev.d_o + n * m, m) =
                    detail::const_vector_map<T>(prev.d_sum + n * m, m) +
                    ds_here * (detail::const_vector_map<T>(prev.u_prev + n * m, m) +
                               detail::const_vector_map<T>(prev.u + n * m, m));
            }
        }
    });
}

// out (cols, rows) = inᵀ for in (rows, cols); with accumulate, out += inᵀ.
template <class T>
void transpose(cpu, T* out, const T* in, int rows, int cols, bool accumulate) {
    const detail::const_matrix_map<T> x(in, rows, cols);
    detail::matrix_map<T> y(out, cols, rows);
    if (accumulate)
        y += x.transpose();
    else
        y = x.transpose();
}

// out (rows, cols) = w diag(g).
template <class T>
void scale_columns(cpu, T* out, const T* w, const T* g, int rows, int cols) {
    const auto gm = detail::const_vector_map<T>(g, cols).array();
    parallel_blocks(rows, detail::subspace_grain(rows, cols), [&](std::int64_t b, std::int64_t e) {
        for (std::int64_t r = b; r < e; ++r)
            detail::vector_map<T>(out + r * cols, cols).array() = detail::const_vector_map<T>(w + r * cols, cols).array() * gm;
    });
}

// The weights of a subspace run over `heads` (ascending) of a layer (NH heads of HD): w_qkv (3m, C) their rows of
// W_Q, W_K, W_V (packed as detail::gather_head_weights packs them), w_o (C, m) their columns of W_O, and
// w (4m, C) = [w_qkv diag(γ); w_oᵀ].
template <class T>
void gather_run_weights(cpu, T* w_qkv, T* w_o, T* w, attention_weights<T> a, std::span<const int> heads, int HD, int C,
                        int NH) {
    const int m = int(heads.size()) * HD;
    const std::int64_t block = std::int64_t(m) * C;
    detail::gather_head_weights(cpu{}, w_qkv, w_o, a, heads, HD, C, NH);
    scale_columns(cpu{}, w, w_qkv, a.norm, 3 * m, C);
    transpose(cpu{}, w + 3 * block, w_o, C, m, false);
}

// Their gradients, added into g, from dw = ∂L/∂w (4m, C) and dw_o = ∂L/∂w_o (C, m) (both left unspecified): γ gains
// Σ_rows dw[:3m] ⊙ w_qkv (rows in order), the heads' rows of W_Q, W_K, W_V gain dw[:3m] diag(γ), and their columns
// of W_O gain dw_o + dw[3m:]ᵀ.
template <class T>
void scatter_run_grads(cpu, attention_grads<T> g, T* dw, T* dw_o, const T* w_qkv, const T* gamma,
                       std::span<const int> heads, int HD, int C, int NH) {
    const int m = int(heads.size()) * HD;
    const std::int64_t block = std::int64_t(m) * C;
    const auto gm = detail::const_vector_map<T>(gamma, C).array();
    auto dg = detail::vector_map<T>(g.norm, C);
    for (std::int64_t r = 0; r < 3 * m; ++r) {
        auto dy = detail::vector_map<T>(dw + r * C, C);
        dg.array() += dy.array() * detail::const_vector_map<T>(w_qkv + r * C, C).array();
        dy.array() *= gm;
    }
    transpose(cpu{}, dw_o, dw + 3 * block, m, C, true);
    detail::scatter_add_head_weights(cpu{}, g, dw, dw_o, heads, HD, C, NH);
}

}  // namespace sgt
