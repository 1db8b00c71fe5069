// sgt/backend/cpu/decode.hpp: the leaf ops of cached decoding (spec Sec. 7): RoPE at per-sequence positions,
// appending keys and values to a KV-cache slot, and decode attention (one query per sequence and head over
// its cached keys).
//
// Layouts: qkv (B, T, 3, n, HD) as the packed projection writes it (attention.hpp); a cache slot holds
// k_cache, v_cache (B, n, ctx, HD): the keys of a head are contiguous along the context, as a decode step
// reads them. start (B): the position of each sequence's first token in the call.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#include "sgt/backend/common.hpp"
#include "sgt/backend/cpu/backend.hpp"
#include "sgt/backend/cpu/heads.hpp"
#include "sgt/backend/cpu/matmul.hpp"
#include "sgt/backend/cpu/rmsnorm.hpp"
#include "sgt/backend/cpu/rope.hpp"
#include "sgt/backend/cpu/swiglu.hpp"

namespace sgt {

// Rotates, in place, n_heads head vectors of HD values per token (as rope_forward), token t of sequence b at
// position start[b] + t.
template <class T>
void rope_forward_at(cpu, T* x, const T* cos_table, const T* sin_table, const std::int32_t* start, int B, int T_,
                     int n_heads, int HD, std::int64_t row_stride) {
    const int half = HD / 2;
    for (int b = 0; b < B; ++b)
        for (int t = 0; t < T_; ++t) {
            const std::int64_t pos = std::int64_t(start[b]) + t;
            T* row = x + (std::int64_t(b) * T_ + t) * row_stride;
            detail::rope_row(row, cos_table + pos * half, sin_table + pos * half, n_heads, HD, false);
        }
}

// Copies the keys and values of qkv (B, T, 3, n, HD) into the slot (B, n, ctx, HD): token t of sequence b goes
// to position start[b] + t (the caller keeps start[b] + T ≤ ctx).
template <class T>
void kv_cache_write(cpu, T* k_cache, T* v_cache, const T* qkv, const std::int32_t* start, int B, int T_, int n,
                    int HD, int ctx) {
    const std::int64_t row = 3 * std::int64_t(n) * HD;
    for (int b = 0; b < B; ++b)
        for (int t = 0; t < T_; ++t) {
            const T* src = qkv + (std::int64_t(b) * T_ + t) * row;
            for (int i = 0; i < n; ++i) {
                const std::int64_t dst = ((std::int64_t(b) * n + i) * ctx + start[b] + t) * HD;
                std::copy_n(src + (std::int64_t(n) + i) * HD, HD, k_cache + dst);
                std::copy_n(src + (2 * std::int64_t(n) + i) * HD, HD, v_cache + dst);
            }
        }
}

// Both of the above for a pass's (B, T, 3, n, HD) rows: RoPE on q and k at the positions, then k and v into the
// slot. On a GPU one kernel instead of two (a decode step is bound by its launches).
template <class T>
void rope_kv_write_at(cpu, T* qkv, T* k_cache, T* v_cache, const T* cos_table, const T* sin_table,
                      const std::int32_t* start, int B, int T_, int n, int HD, int ctx) {
    rope_forward_at(cpu{}, qkv, cos_table, sin_table, start, B, T_, 2 * n, HD, 3 * std::int64_t(n) * HD);
    kv_cache_write(cpu{}, k_cache, v_cache, qkv, start, B, T_, n, HD, ctx);
}

// ---- normed products of a decode step ----------------------------------------------------------------------
// A decode step's products have a few rows (one per sequence), too little work for a kernel each on a GPU, where
// a step is bound by its launches. So each product comes with what precedes and follows it: the RMSNorm of its
// input, and SwiGLU or RoPE with the cache write. Here, and on the GPU beyond a few rows, each is the composition
// of the training ops below; the GPU runs a few rows as one kernel (backend/cuda/decode_products.cuh). a (N, I)
// and rstd (N) [gate and up (N, F)] are the composition's scratch: their contents after the call are unspecified.

// out (N, O) = x̂ wᵀ, or out += x̂ wᵀ with accumulate; x̂ = RMSNorm(x; norm), or x itself where norm is null.
template <class T>
void normed_matmul_forward(cpu, T* out, T* a, T* rstd, const T* x, const T* norm, const T* w, int N, int I, int O,
                           double eps, bool accumulate) {
    if (norm) {
        rmsnorm_forward(cpu{}, a, rstd, x, norm, N, I, eps);
        x = a;
    }
    matmul_forward(cpu{}, out, x, w, N, I, O, accumulate);
}

// act (N, F) = silu(x̂ w1ᵀ) ⊙ (x̂ w3ᵀ), x̂ = RMSNorm(x; norm): the FFN up to its last product.
template <class T>
void normed_swiglu_forward(cpu, T* act, T* a, T* rstd, T* gate, T* up, const T* x, const T* norm, const T* w1,
                           const T* w3, int N, int C, int F, double eps) {
    rmsnorm_forward(cpu{}, a, rstd, x, norm, N, C, eps);
    matmul_forward(cpu{}, gate, a, w1, N, C, F);
    matmul_forward(cpu{}, up, a, w3, N, C, F);
    swiglu_forward(cpu{}, act, gate, up, N, F, F);
}

// qkv (B, 3, n, HD) = x̂ w_qkvᵀ, x̂ = RMSNorm(x; norm), one token per sequence; then rope_kv_write_at at start:
// q and k rotated, k and v appended to the slot.
template <class T>
void normed_qkv_write_at(cpu, T* qkv, T* k_cache, T* v_cache, T* a, T* rstd, const T* x, const T* norm,
                         const T* w_qkv, const T* cos_table, const T* sin_table, const std::int32_t* start, int B,
                         int C, int n, int HD, int ctx, double eps) {
    normed_matmul_forward(cpu{}, qkv, a, rstd, x, norm, w_qkv, B, C, 3 * n * HD, eps, false);
    rope_kv_write_at(cpu{}, qkv, k_cache, v_cache, cos_table, sin_table, start, B, 1, n, HD, ctx);
}

// Scratch decode_attention needs (in accum_t<T>), owned by the caller: none here.
template <class T>
std::int64_t decode_attention_workspace(cpu, int /*B*/, int /*n*/, int /*HD*/, int /*ctx*/) {
    return 0;
}

// out (B, n, HD): head i of sequence b attends with its query (in qkv (B, 1, 3, n, HD)) over the cached keys
// and values at positions 0..pos[b] of the slot (B, n, ctx, HD): softmax(q kᵀ / √HD) v. With gain (B, n) (the
// learned head gates' g, gates.hpp), the output is gain · softmax(q kᵀ / √HD) v, and a head whose gain is 0 (closed
// for this token) reads nothing from the cache: its output is 0.
template <class T>
void decode_attention(cpu, T* out, const T* qkv, const T* k_cache, const T* v_cache, const std::int32_t* pos, int B,
                      int n, int HD, int ctx, T* /*workspace*/, const T* gain = nullptr) {
    const std::int64_t row = 3 * std::int64_t(n) * HD;
    const T scale = T(1.0 / std::sqrt(double(HD)));
    const std::int64_t heads = std::int64_t(B) * n;
    const std::int64_t min_heads = std::max<std::int64_t>(1, 65536 / std::max<std::int64_t>(1, std::int64_t(ctx) * HD));
    parallel_blocks(heads, detail::grain_for(heads, min_heads), [&](std::int64_t first, std::int64_t last) {
        for (std::int64_t bh = first; bh < last; ++bh) {
            const int b = int(bh / n), i = int(bh % n), len = pos[b] + 1;
            T* o = out + std::int64_t(bh) * HD;
            if (gain && gain[bh] == T(0)) {
                std::fill_n(o, HD, T(0));
                continue;
            }
            // The scores and the weighted sum of the values as matrix-vector products over the head's cached rows.
            const detail::const_vector_map<T> q(qkv + b * row + std::int64_t(i) * HD, HD);
            const detail::const_matrix_map<T> k(k_cache + std::int64_t(bh) * ctx * HD, len, HD);
            const detail::const_matrix_map<T> v(v_cache + std::int64_t(bh) * ctx * HD, len, HD);
            Eigen::Matrix<T, Eigen::Dynamic, 1> p = (k * q) * scale;
            p = (p.array() - p.maxCoeff()).exp();
            detail::vector_map<T>(o, HD).noalias() = v.transpose() * p;
            const T norm = (gain ? gain[bh] : T(1)) / p.sum();
            for (int d = 0; d < HD; ++d) o[d] *= norm;
        }
    });
}

// ---- a decode step's attention passes -----------------------------------------------------------------------
// The attention passes `slots` of one token per sequence, one after the other, over the same n heads and weights
// (norm (C), w_qkv (3·n·HD, C), w_o (C, n·HD)): pass p appends its key and value to its slot and adds
//     x ← x + W_O · (g_p ⊙ softmax(q kᵀ / √HD) v),   q, k, v = RoPE(W_QKV · RMSNorm(x)) at the positions start,
// reading x as the pass before left it. A looped layer's steps k = 1..K (Eq. 6, spec Sec. 7) are such a run, and
// any pass is a run of one. Here, and on a GPU past one row or a few heads, it is the composition of the ops above
// (detail::compose_decode_passes, backend/common.hpp); a GPU runs a run over one row and a few heads as one kernel
// of a thread-block cluster (backend/cuda/decode_pass.cuh), since a pass over two heads of one token is three
// chained steps of a few hundred kilobytes each, bound by kernel boundaries. qkv (B, 3, n, HD), o (B, n·HD),
// a (B, C), rstd (B) and workspace (decode_attention_workspace) are scratch.
template <class T>
void decode_passes(cpu, T* x, T* qkv, T* o, T* a, T* rstd, std::span<const decode_slot<T>> slots, const T* norm,
                   const T* w_qkv, const T* w_o, const T* cos_table, const T* sin_table, const std::int32_t* start,
                   int B, int C, int n, int HD, int ctx, double eps, T* workspace) {
    detail::compose_decode_passes(cpu{}, x, qkv, o, a, rstd, slots, norm, w_qkv, w_o, cos_table, sin_table, start, B,
                                  C, n, HD, ctx, eps, workspace);
}

}  // namespace sgt
