// sgt/backend/cuda/attention.cuh: the causal softmax attention core over n heads (Eq. 1-3), forward and
// backward, with the last-row entropy of every head (Eq. 4) taken in the same pass. Same layouts as
// backend/cpu/attention.hpp: qkv (B, T, 3, n, HD), out (B, T, n, HD), probs (B, n, T, T).
//
// bf16 can run fused: cuDNN's kernels (cudnn_attention.hpp, in a build with SGT_CUDNN) or, with a head size of
// 32, 64, 96 or 128, ours (flash_attention.cuh); attention_kernel, runtime.hpp, says when. Everything else
// (fp32 for parity, fp64, other head sizes) runs the textbook version here, built from cuBLASLt and two CUB
// kernels: q, k, v are permuted to (B·n, T, HD); S = q kᵀ/√HD is one strided-batched product; a row kernel
// takes the causal softmax (and, in the last row, the entropy); O = P v is a second product. The backward is
// four products and a row kernel. The full T×T matrices are computed and kept (probs, what the backward reads).
#pragma once

#include <cub/block/block_reduce.cuh>

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "sgt/backend/cuda/backend.cuh"
#include "sgt/backend/cuda/cudnn_attention.hpp"
#include "sgt/backend/cuda/flash_attention.cuh"
#include "sgt/backend/cuda/matmul.cuh"

namespace sgt {

namespace detail {

// to_heads: heads_major (B, n, T, HD) = the head-major copy of token_major, whose (b, t, i) head vector is at
// b·T·stride + t·stride + i·HD. Otherwise the reverse. A head vector is contiguous on both sides, so each
// thread moves one chunk of W elements (16 bytes when the layout allows, else one element).
template <class T, int W>
__global__ void permute_heads_kernel(T* heads_major, T* token_major, int B, int T_, int n, int HD, std::int64_t stride,
                                     bool to_heads) {
    using chunk = std::conditional_t<W == 1, T, uint4>;
    const int hd = HD / W;
    const std::int64_t total = std::int64_t(B) * n * T_ * hd;
    for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < total; i += std::int64_t(gridDim.x) * blockDim.x) {
        const int d = int(i % hd);
        const std::int64_t row = i / hd;  // (b·n + h)·T + t
        const int t = int(row % T_);
        const std::int64_t bh = row / T_;
        const int h = int(bh % n), b = int(bh / n);
        const std::int64_t j = ((std::int64_t(b) * T_ + t) * stride + std::int64_t(h) * HD) / W + d;
        chunk* hm = reinterpret_cast<chunk*>(heads_major);
        chunk* tm = reinterpret_cast<chunk*>(token_major);
        if (to_heads)
            hm[i] = tm[j];
        else
            tm[j] = hm[i];
    }
}

template <class T>
void permute_heads(T* heads_major, const T* token_major, int B, int T_, int n, int HD, std::int64_t stride, bool to_heads) {
    const std::int64_t total = std::int64_t(B) * n * T_ * HD;
    if (total <= 0) return;
    constexpr int W = 16 / sizeof(T);
    const bool wide = HD % W == 0 && stride % W == 0 && reinterpret_cast<std::uintptr_t>(heads_major) % 16 == 0 &&
                      reinterpret_cast<std::uintptr_t>(token_major) % 16 == 0;
    if (wide)
        permute_heads_kernel<T, W><<<blocks_for(total / W, 2), threads_per_block, 0, detail::stream()>>>(heads_major, const_cast<T*>(token_major),
                                                                                  B, T_, n, HD, stride, to_heads);
    else
        permute_heads_kernel<T, 1><<<blocks_for(total, 4), threads_per_block, 0, detail::stream()>>>(heads_major, const_cast<T*>(token_major),
                                                                              B, T_, n, HD, stride, to_heads);
    SGT_CUDA_LAUNCHED(permute_heads_kernel);
}

constexpr int softmax_threads = 256;

// Rows up to softmax_threads · row_registers long are held in registers: one read and one write per element.
constexpr int row_registers = 8;

// Row t of matrix bh of scores (B·n, T, T), in place: the causal softmax over keys 0..t, zeros above the
// diagonal. The last row also gives the length-normalised entropy −Σ p log p / log T (entropy.hpp's row_entropy).
// Cached: T ≤ softmax_threads · row_registers, the row in registers; otherwise it is re-read from memory.
template <class T, bool Cached>
__global__ void causal_softmax_kernel(T* probs, double* entropy, int T_) {
    using A = accum_t<T>;
    using reduce = cub::BlockReduce<A, softmax_threads>;
    __shared__ typename reduce::TempStorage temp;
    __shared__ A shared;
    const int t = blockIdx.x % T_;
    const std::int64_t bh = blockIdx.x / T_;
    T* row = probs + std::int64_t(blockIdx.x) * T_;
    A v[Cached ? row_registers : 1];
    A m = -INFINITY;
    if constexpr (Cached) {
#pragma unroll
        for (int k = 0; k < row_registers; ++k) {
            const int j = threadIdx.x + k * softmax_threads;
            v[k] = j <= t ? load(row[j]) : A(-INFINITY);
            m = max(m, v[k]);
        }
    } else {
        for (int j = threadIdx.x; j <= t; j += softmax_threads) m = max(m, load(row[j]));
    }
    m = reduce(temp).Reduce(m, ::cuda::maximum<A>{});
    if (threadIdx.x == 0) shared = m;
    __syncthreads();
    m = shared;
    A s = 0;
    if constexpr (Cached) {
#pragma unroll
        for (int k = 0; k < row_registers; ++k) {
            v[k] = threadIdx.x + k * softmax_threads <= t ? exp(v[k] - m) : A(0);
            s += v[k];
        }
    } else {
        for (int j = threadIdx.x; j <= t; j += softmax_threads) s += exp(load(row[j]) - m);
    }
    __syncthreads();
    s = reduce(temp).Sum(s);
    if (threadIdx.x == 0) shared = A(1) / s;
    __syncthreads();
    const A inv = shared;
    A h = 0;
    auto emit = [&](int j, A e) {  // writes p_j (zero above the diagonal) and adds to the entropy sum
        const T p = store<T>(j <= t ? e * inv : A(0));
        row[j] = p;
        const A pv = load(p);
        if (pv > A(0)) h -= pv * log(pv);
    };
    if constexpr (Cached) {
#pragma unroll
        for (int k = 0; k < row_registers; ++k)
            if (threadIdx.x + k * softmax_threads < T_) emit(threadIdx.x + k * softmax_threads, v[k]);
    } else {
        for (int j = threadIdx.x; j < T_; j += softmax_threads) emit(j, j <= t ? exp(load(row[j]) - m) : A(0));
    }
    if (t == T_ - 1) {  // uniform per block
        __syncthreads();
        h = reduce(temp).Sum(h);
        if (threadIdx.x == 0 && entropy) entropy[bh] = T_ < 2 ? 0.0 : double(h) / log(double(T_));
    }
}

// Row t, in place: dS = P ⊙ (dP − Σ_j dP_j P_j) over j ≤ t, zero above the diagonal.
template <class T, bool Cached>
__global__ void causal_softmax_backward_kernel(T* dp, const T* probs, int T_) {
    using A = accum_t<T>;
    using reduce = cub::BlockReduce<A, softmax_threads>;
    __shared__ typename reduce::TempStorage temp;
    __shared__ A shared;
    const int t = blockIdx.x % T_;
    T* d = dp + std::int64_t(blockIdx.x) * T_;
    const T* p = probs + std::int64_t(blockIdx.x) * T_;
    A pv[Cached ? row_registers : 1], dv[Cached ? row_registers : 1];
    A dot = 0;
    if constexpr (Cached) {
#pragma unroll
        for (int k = 0; k < row_registers; ++k) {
            const int j = threadIdx.x + k * softmax_threads;
            pv[k] = j <= t ? load(p[j]) : A(0);
            dv[k] = j <= t ? load(d[j]) : A(0);
            dot += pv[k] * dv[k];
        }
    } else {
        for (int j = threadIdx.x; j <= t; j += softmax_threads) dot += load(p[j]) * load(d[j]);
    }
    dot = reduce(temp).Sum(dot);
    if (threadIdx.x == 0) shared = dot;
    __syncthreads();
    dot = shared;
    if constexpr (Cached) {
#pragma unroll
        for (int k = 0; k < row_registers; ++k) {
            const int j = threadIdx.x + k * softmax_threads;
            if (j < T_) d[j] = store<T>(pv[k] * (dv[k] - dot));  // zero above the diagonal, where pv = 0
        }
    } else {
        for (int j = threadIdx.x; j < T_; j += softmax_threads)
            d[j] = store<T>(j <= t ? load(p[j]) * (load(d[j]) - dot) : A(0));
    }
}

// q, k and v of qkv (B, T, 3, n, HD), each permuted to (B, n, T, HD) in the context's scratch.
template <class T>
struct head_major_qkv {
    T *q, *k, *v;
};
template <class T>
head_major_qkv<T> split_qkv(const T* qkv, int B, int T_, int n, int HD) {
    auto& ctx = context();
    const std::int64_t count = std::int64_t(B) * n * T_ * HD, nh = std::int64_t(n) * HD;
    const head_major_qkv<T> r{ctx.scratch<T>(slot_attn_q, count), ctx.scratch<T>(slot_attn_k, count),
                              ctx.scratch<T>(slot_attn_v, count)};
    permute_heads(r.q, qkv, B, T_, n, HD, 3 * nh, true);
    permute_heads(r.k, qkv + nh, B, T_, n, HD, 3 * nh, true);
    permute_heads(r.v, qkv + 2 * nh, B, T_, n, HD, 3 * nh, true);
    return r;
}

}  // namespace detail

// entropy (B, n) device memory: length-normalised entropy of the last query row of each head and sequence (null:
// not taken).
template <class T>
void attention_forward(cuda, T* out, T* probs, double* entropy, const T* qkv, int B, int T_, int n, int HD) {
    if (B <= 0 || n <= 0) return;
    if constexpr (std::is_same_v<T, __nv_bfloat16>) {
        switch (detail::attention_path_for<T>(T_, HD)) {
            case detail::attention_path::cudnn:
                // Chosen only where cuDNN was built in; without it the call must not be compiled at all, since
                // an unoptimised build keeps calls that attention_path_for's result rules out.
                if constexpr (detail::cudnn_built) {
                    // The saved buffer as the fused kernels lay it out: log-sum-exp, then the output.
                    const std::int64_t rows = std::int64_t(B) * n * T_;
                    T* saved_out = probs + (2 * rows + 7) / 8 * 8;
                    detail::cudnn::attention_forward(saved_out, reinterpret_cast<float*>(probs), qkv, B, T_, n, HD);
                    copy(cuda{}, out, saved_out, rows * HD);
                    if (entropy) detail::flash::last_row_entropy(entropy, qkv, B, T_, n, HD);
                    return;
                }
                break;
            case detail::attention_path::fused:
                return detail::flash::with_head_dim(HD, [&]<int D>() { detail::flash::forward<D>(out, probs, entropy, qkv, B, T_, n); });
            default: break;
        }
    }
    const std::int64_t nh = std::int64_t(n) * HD, mat = std::int64_t(T_) * HD;
    const auto [q, k, v] = detail::split_qkv(qkv, B, T_, n, HD);
    T* o = detail::context().scratch<T>(detail::slot_attn_o, std::int64_t(B) * n * mat);
    const int batch = B * n;
    const std::int64_t tt = std::int64_t(T_) * T_;
    // S (T, T) = q kᵀ / √HD: column-major Sᵀ = (kᵀ-view)ᵀ · qᵀ-view.
    detail::gemm(true, false, T_, T_, HD, k, HD, mat, q, HD, mat, probs, T_, tt, batch, 1.0 / std::sqrt(double(HD)), false);
    const unsigned rows = unsigned(std::int64_t(batch) * T_);
    if (T_ <= detail::softmax_threads * detail::row_registers)
        detail::causal_softmax_kernel<T, true><<<rows, detail::softmax_threads, 0, detail::stream()>>>(probs, entropy, T_);
    else
        detail::causal_softmax_kernel<T, false><<<rows, detail::softmax_threads, 0, detail::stream()>>>(probs, entropy, T_);
    SGT_CUDA_LAUNCHED(causal_softmax_kernel);
    // O (T, HD) = P v: column-major Oᵀ = vᵀ-view · Pᵀ-view.
    detail::gemm(false, false, HD, T_, T_, v, HD, mat, probs, T_, tt, o, HD, mat, batch, 1.0, false);
    detail::permute_heads(o, out, B, T_, n, HD, nh, false);
}

// dqkv (B, T, 3, n, HD) = gradients of the RoPE'd q, k and v (overwrites), from dout (B, T, n, HD).
// dP = dO vᵀ, dv = Pᵀ dO, dS = P ⊙ (dP − rowsum(dP ⊙ P)), dq = dS k / √HD, dk = dSᵀ q / √HD.
template <class T>
void attention_backward(cuda, T* dqkv, const T* dout, const T* qkv, const T* probs, int B, int T_, int n, int HD) {
    if (B <= 0 || n <= 0) return;
    if constexpr (std::is_same_v<T, __nv_bfloat16>) {
        switch (detail::attention_path_for<T>(T_, HD)) {
            case detail::attention_path::cudnn:
                if constexpr (detail::cudnn_built) {  // as in the forward
                    const std::int64_t rows = std::int64_t(B) * n * T_;
                    return detail::cudnn::attention_backward(dqkv, dout, qkv, probs + (2 * rows + 7) / 8 * 8,
                                                             reinterpret_cast<const float*>(probs), B, T_, n, HD,
                                                             detail::context().deterministic);
                }
                break;
            case detail::attention_path::fused:
                return detail::flash::with_head_dim(HD, [&]<int D>() { detail::flash::backward<D>(dqkv, dout, qkv, probs, B, T_, n); });
            default: break;
        }
    }
    auto& ctx = detail::context();
    const std::int64_t row = 3 * std::int64_t(n) * HD, nh = std::int64_t(n) * HD, mat = std::int64_t(T_) * HD;
    const std::int64_t count = std::int64_t(B) * n * mat, tt = std::int64_t(T_) * T_;
    const int batch = B * n;
    const auto [q, k, v] = detail::split_qkv(qkv, B, T_, n, HD);
    T* dO = ctx.scratch<T>(detail::slot_attn_o, count);
    T* dp = ctx.scratch<T>(detail::slot_attn_dp, std::int64_t(batch) * tt);
    T* dq = ctx.scratch<T>(detail::slot_attn_dq, count);
    T* dk = ctx.scratch<T>(detail::slot_attn_dk, count);
    T* dv = ctx.scratch<T>(detail::slot_attn_dv, count);
    detail::permute_heads(dO, dout, B, T_, n, HD, nh, true);
    const double scale = 1.0 / std::sqrt(double(HD));
    // dP (T, T) = dO vᵀ
    detail::gemm(true, false, T_, T_, HD, v, HD, mat, dO, HD, mat, dp, T_, tt, batch, 1.0, false);
    // dv (T, HD) = Pᵀ dO: column-major dvᵀ = dOᵀ-view · (Pᵀ-view)ᵀ
    detail::gemm(false, true, HD, T_, T_, dO, HD, mat, probs, T_, tt, dv, HD, mat, batch, 1.0, false);
    const unsigned rows = unsigned(std::int64_t(batch) * T_);
    if (T_ <= detail::softmax_threads * detail::row_registers)
        detail::causal_softmax_backward_kernel<T, true><<<rows, detail::softmax_threads, 0, detail::stream()>>>(dp, probs, T_);
    else
        detail::causal_softmax_backward_kernel<T, false><<<rows, detail::softmax_threads, 0, detail::stream()>>>(dp, probs, T_);
    SGT_CUDA_LAUNCHED(causal_softmax_backward_kernel);
    // dq (T, HD) = dS k / √HD;  dk (T, HD) = dSᵀ q / √HD
    detail::gemm(false, false, HD, T_, T_, k, HD, mat, dp, T_, tt, dq, HD, mat, batch, scale, false);
    detail::gemm(false, true, HD, T_, T_, q, HD, mat, dp, T_, tt, dk, HD, mat, batch, scale, false);
    detail::permute_heads(dq, dqkv, B, T_, n, HD, row, false);
    detail::permute_heads(dk, dqkv + nh, B, T_, n, HD, row, false);
    detail::permute_heads(dv, dqkv + 2 * nh, B, T_, n, HD, row, false);
}

}  // namespace sgt
