// sgt/backend/cuda/subspace.cuh: the row operations of loop steps in the looped heads' subspace on the device
// (backend/cpu/subspace.hpp has their definitions; loop_subspace.hpp the algebra). A warp per row (reductions in
// accum_t<T>), its lanes moving 16-byte packs where the row length and the pointers allow and single elements
// otherwise; a block of 32 columns for the column sums of scale_columns_backward; no atomics, so the results do
// not depend on scheduling.
#pragma once

#include <cstdint>

#include "sgt/backend/cuda/backend.cuh"
#include "sgt/backend/cuda/rope.cuh"  // rotate_pair

namespace sgt {

namespace detail {
constexpr int subspace_rows_per_block = threads_per_block / 32;
inline unsigned subspace_row_blocks(int N) {
    return unsigned((N + subspace_rows_per_block - 1) / subspace_rows_per_block);
}
template <class A>
__device__ inline A subspace_rstd_of(A s, int C, double eps) {
    return A(1) / sqrt(max(s, A(0)) / A(C) + A(eps));
}

// Row n of a warp-per-row kernel, or -1 past the last row; lane in [0, 32).
__device__ inline int subspace_row(int N) {
    const int n = blockIdx.x * subspace_rows_per_block + threadIdx.x / 32;
    return n < N ? n : -1;
}
// Calls f(j) for the packs of W elements a lane takes of a row of `len` (a multiple of W): j = lane·W, + 32·W, ...
template <int W, class F>
__device__ inline void for_lane_packs(int len, F&& f) {
    for (int j = int(threadIdx.x % 32) * W; j < len; j += 32 * W) f(j);
}
template <int W, class T>
__device__ inline pack<T, W> load_pack(const T* p) {
    return *reinterpret_cast<const pack<T, W>*>(p);
}
template <int W, class T>
__device__ inline void store_pack(T* p, const pack<T, W>& v) {
    *reinterpret_cast<pack<T, W>*>(p) = v;
}

template <int W, class T>
__global__ void row_sum_squares_kernel(accum_t<T>* s, const T* x, int N, int C) {
    using A = accum_t<T>;
    const int n = subspace_row(N);
    if (n < 0) return;
    const T* row = x + std::int64_t(n) * C;
    A ss = 0;
    for_lane_packs<W>(C, [&](int c) {
        const auto p = load_pack<W>(row + c);
#pragma unroll
        for (int k = 0; k < W; ++k) ss += load(p.v[k]) * load(p.v[k]);
    });
    ss = warp_sum(ss);
    if (threadIdx.x % 32 == 0) s[n] = ss;
}

template <int W, class T>
__global__ void row_sum_squares_backward_kernel(T* dx, const accum_t<T>* ds, const T* x, int N, int C) {
    const int n = subspace_row(N);
    if (n < 0) return;
    const std::int64_t at = std::int64_t(n) * C;
    const accum_t<T> g = 2 * ds[n];
    for_lane_packs<W>(C, [&](int c) {
        auto d = load_pack<W>(dx + at + c);
        const auto xv = load_pack<W>(x + at + c);
#pragma unroll
        for (int k = 0; k < W; ++k) d.v[k] = store<T>(load(d.v[k]) + g * load(xv.v[k]));
        store_pack(dx + at + c, d);
    });
}

// Calls f(i, i2, t) for the W-element packs of a row of `len` (row n) that a lane takes: once per pack of the rotated
// part (the first rope.heads head vectors; i the pack's start in the first half of its head, i2 = i + HD/2 its
// partner, t the index in the tables of the angle of pair (i, i2), t + k that of pair (i + k, i2 + k)), then
// f(i, -1, 0) for each pack past it.
template <int W, class A, class F>
__device__ inline void for_rope_packs(int len, const rope_rows<A>& rope, int n, F&& f) {
    const int half = rope.HD / 2, per_head = half / W, rotated = rope.heads * rope.HD;
    const std::int64_t t = std::int64_t(n % rope.T) * half;
    for (int p = int(threadIdx.x % 32); p < rope.heads * per_head; p += 32) {
        const int i = (p / per_head) * rope.HD + (p % per_head) * W;
        f(i, i + half, t + (p % per_head) * W);
    }
    for (int i = rotated + int(threadIdx.x % 32) * W; i < len; i += 32 * W) f(i, -1, std::int64_t(0));
}

template <int W, class T>
__global__ void subspace_normalize_kernel(T* out, const T* a, const accum_t<T>* s, int N, int len, int C, double eps,
                                          rope_rows<accum_t<T>> rope) {
    using A = accum_t<T>;
    const int n = subspace_row(N);
    if (n < 0) return;
    const std::int64_t at = std::int64_t(n) * len;
    const A r = subspace_rstd_of(s[n], C, eps);
    for_rope_packs<W>(len, rope, n, [&](int i, int i2, std::int64_t t) {
        auto v = load_pack<W>(a + at + i);
        if (i2 < 0) {
#pragma unroll
            for (int k = 0; k < W; ++k) v.v[k] = store<T>(load(v.v[k]) * r);
        } else {  // the rotation of pairs (i + k, i2 + k) after the scaling
            auto v2 = load_pack<W>(a + at + i2);
#pragma unroll
            for (int k = 0; k < W; ++k) {
                A x1 = load(v.v[k]) * r, x2 = load(v2.v[k]) * r;
                rotate_pair(x1, x2, rope.cos[t + k], rope.sin[t + k]);
                v.v[k] = store<T>(x1);
                v2.v[k] = store<T>(x2);
            }
            store_pack(out + at + i2, v2);
        }
        store_pack(out + at + i, v);
    });
}

template <int W, class T>
__global__ void subspace_normalize_backward_kernel(accum_t<T>* ds, T* da, const T* dout, const T* out,
                                                   const accum_t<T>* s, int N, int len, int C, double eps,
                                                   rope_rows<accum_t<T>> rope, bool add) {
    using A = accum_t<T>;
    const int n = subspace_row(N);
    if (n < 0) return;
    const std::int64_t at = std::int64_t(n) * len;
    const A r = subspace_rstd_of(s[n], C, eps);
    A dot = 0;
    // da (+)= the values g (W of them, at i): read before da is written, since da may be dout
    auto put = [&](int i, const A* g) {
        pack<T, W> d;
        if (add) d = load_pack<W>(da + at + i);
#pragma unroll
        for (int k = 0; k < W; ++k) d.v[k] = store<T>(add ? load(d.v[k]) + g[k] : g[k]);
        store_pack(da + at + i, d);
    };
    for_rope_packs<W>(len, rope, n, [&](int i, int i2, std::int64_t t) {
        const auto dy = load_pack<W>(dout + at + i), y = load_pack<W>(out + at + i);
        A g[W], g2[W];
        if (i2 < 0) {
#pragma unroll
            for (int k = 0; k < W; ++k) {
                dot += load(y.v[k]) * load(dy.v[k]);
                g[k] = r * load(dy.v[k]);
            }
        } else {  // the inverse rotation of pairs (i + k, i2 + k) after the scaling
            const auto dy2 = load_pack<W>(dout + at + i2), y2 = load_pack<W>(out + at + i2);
#pragma unroll
            for (int k = 0; k < W; ++k) {
                A d1 = load(dy.v[k]), d2 = load(dy2.v[k]);
                dot += load(y.v[k]) * d1 + load(y2.v[k]) * d2;
                rotate_pair(d1, d2, rope.cos[t + k], -rope.sin[t + k]);  // the inverse
                g[k] = r * d1;
                g2[k] = r * d2;
            }
            put(i2, g2);
        }
        put(i, g);
    });
    dot = warp_sum(dot);
    if (threadIdx.x % 32 == 0) ds[n] += -r * r / (2 * A(C)) * dot;
}

template <int W, class T>
__global__ void subspace_update_kernel(accum_t<T>* s_out, T* u_out, const accum_t<T>* s_in, const T* u_in, const T* o,
                                       const T* t, int N, int m) {
    using A = accum_t<T>;
    const int n = subspace_row(N);
    if (n < 0) return;
    const std::int64_t at = std::int64_t(n) * m;
    A dot = 0;
    for_lane_packs<W>(m, [&](int j) {
        auto u = load_pack<W>(u_in + at + j);
        const auto tv = load_pack<W>(t + at + j), ov = load_pack<W>(o + at + j);
#pragma unroll
        for (int k = 0; k < W; ++k) {
            const A uk = load(u.v[k]), tk = load(tv.v[k]);
            dot += load(ov.v[k]) * (2 * uk + tk);
            u.v[k] = store<T>(uk + tk);
        }
        store_pack(u_out + at + j, u);
    });
    dot = warp_sum(dot);
    if (threadIdx.x % 32 == 0) s_out[n] = s_in[n] + dot;
}

template <int W, class T>
__global__ void subspace_update_backward_kernel(T* d_o, T* du, T* w, const accum_t<T>* ds, const T* o, const T* u,
                                                int N, int m) {
    using A = accum_t<T>;
    const int n = subspace_row(N);
    if (n < 0) return;
    const std::int64_t at = std::int64_t(n) * m;
    const A g = ds[n];
    for_lane_packs<W>(m, [&](int j) {
        const auto ov = load_pack<W>(o + at + j), uv = load_pack<W>(u + at + j);
        auto dov = load_pack<W>(d_o + at + j), duv = load_pack<W>(du + at + j);
        pack<T, W> wv;
#pragma unroll
        for (int k = 0; k < W; ++k) {
            const A oi = load(ov.v[k]), dui = load(duv.v[k]);
            wv.v[k] = store<T>(dui + g * oi);
            dov.v[k] = store<T>(load(dov.v[k]) + 2 * g * load(uv.v[k]));
            duv.v[k] = store<T>(dui + 2 * g * oi);
        }
        store_pack(w + at + j, wv);
        store_pack(d_o + at + j, dov);
        store_pack(du + at + j, duv);
    });
}

// Whether rows of `len` elements at these pointers can move in 16-byte packs.
template <class T, class... P>
bool subspace_packs(int len, P... ptrs) {
    return len % pack_width<T> == 0 && (aligned16(ptrs) && ...);
}
// A warp-per-row kernel over N rows: its form with packs where `packed`, else its form with single elements.
template <class... Params, class... Args>
void launch_rows(int N, bool packed, void (*with_packs)(Params...), void (*single)(Params...), Args... args) {
    (packed ? with_packs : single)<<<subspace_row_blocks(N), threads_per_block, 0, stream()>>>(
        static_cast<Params>(args)...);
}

template <class T>
__global__ void scale_columns_kernel(T* out, const T* w, const T* g, int rows, int cols) {
    const std::int64_t total = std::int64_t(rows) * cols;
    for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < total;
         i += std::int64_t(gridDim.x) * blockDim.x)
        out[i] = store<T>(load(w[i]) * load(g[i % cols]));
}

// A block per 32 columns: lane c of warp k takes column c of rows k, k + 32, ... (dw written, the products summed),
// then the 32 warps' sums are added in warp order into dg: no atomics, the same order every run.
constexpr int scale_columns_warps = 32;
template <class T>
__global__ void scale_columns_backward_kernel(T* dw, T* dg, const T* dout, const T* w, const T* g, int rows, int cols) {
    using A = accum_t<T>;
    __shared__ A partial[scale_columns_warps][33];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, c = blockIdx.x * 32 + lane;
    A sum = 0;
    if (c < cols) {
        const A gc = load(g[c]);
        for (int r = warp; r < rows; r += scale_columns_warps) {
            const std::int64_t i = std::int64_t(r) * cols + c;
            const A d = load(dout[i]);
            dw[i] = store<T>(d * gc);
            sum += d * load(w[i]);
        }
    }
    partial[warp][lane] = sum;
    __syncthreads();
    if (warp == 0 && c < cols) {
        A total = 0;
        for (int k = 0; k < scale_columns_warps; ++k) total += partial[k][lane];
        dg[c] = store<T>(load(dg[c]) + total);
    }
}
}  // namespace detail

template <class T>
void row_sum_squares(cuda, accum_t<T>* s, const T* x, int N, int C) {
    if (N <= 0) return;
    constexpr int W = detail::pack_width<T>;
    detail::launch_rows(N, detail::subspace_packs<T>(C, x), detail::row_sum_squares_kernel<W, T>,
                        detail::row_sum_squares_kernel<1, T>, s, x, N, C);
    SGT_CUDA_LAUNCHED(row_sum_squares_kernel);
}

template <class T>
void row_sum_squares_backward(cuda, T* dx, const accum_t<T>* ds, const T* x, int N, int C) {
    if (N <= 0) return;
    constexpr int W = detail::pack_width<T>;
    detail::launch_rows(N, detail::subspace_packs<T>(C, dx, x), detail::row_sum_squares_backward_kernel<W, T>,
                        detail::row_sum_squares_backward_kernel<1, T>, dx, ds, x, N, C);
    SGT_CUDA_LAUNCHED(row_sum_squares_backward_kernel);
}

template <class T>
void subspace_normalize(cuda, T* out, const T* a, const accum_t<T>* s, int N, int W, int C, double eps,
                        rope_rows<accum_t<T>> rope) {
    if (N <= 0) return;
    constexpr int P = detail::pack_width<T>;
    detail::launch_rows(N, detail::subspace_packs<T>(W, out, a) && (rope.HD / 2) % P == 0,
                        detail::subspace_normalize_kernel<P, T>, detail::subspace_normalize_kernel<1, T>, out, a, s, N,
                        W, C, eps, rope);
    SGT_CUDA_LAUNCHED(subspace_normalize_kernel);
}

template <class T>
void subspace_normalize_backward(cuda, accum_t<T>* ds, T* da, T* dout, const T* out, const accum_t<T>* s, int N, int W,
                                 int C, double eps, rope_rows<accum_t<T>> rope, bool add) {
    if (N <= 0) return;
    constexpr int P = detail::pack_width<T>;
    detail::launch_rows(N, detail::subspace_packs<T>(W, da, dout, out) && (rope.HD / 2) % P == 0,
                        detail::subspace_normalize_backward_kernel<P, T>,
                        detail::subspace_normalize_backward_kernel<1, T>, ds, da, dout, out, s, N, W, C, eps, rope,
                        add);
    SGT_CUDA_LAUNCHED(subspace_normalize_backward_kernel);
}

template <class T>
void subspace_update(cuda, accum_t<T>* s_out, T* u_out, const accum_t<T>* s_in, const T* u_in, const T* o, const T* t,
                     int N, int m) {
    if (N <= 0) return;
    constexpr int W = detail::pack_width<T>;
    detail::launch_rows(N, detail::subspace_packs<T>(m, u_out, u_in, o, t), detail::subspace_update_kernel<W, T>,
                        detail::subspace_update_kernel<1, T>, s_out, u_out, s_in, u_in, o, t, N, m);
    SGT_CUDA_LAUNCHED(subspace_update_kernel);
}

template <class T>
void subspace_update_backward(cuda, T* d_o, T* du, T* w, const accum_t<T>* ds, const T* o, const T* u, int N, int m) {
    if (N <= 0) return;
    constexpr int W = detail::pack_width<T>;
    detail::launch_rows(N, detail::subspace_packs<T>(m, d_o, du, w, o, u), detail::subspace_update_backward_kernel<W, T>,
                        detail::subspace_update_backward_kernel<1, T>, d_o, du, w, ds, o, u, N, m);
    SGT_CUDA_LAUNCHED(subspace_update_backward_kernel);
}

template <class T>
void scale_columns(cuda, T* out, const T* w, const T* g, int rows, int cols) {
    if (rows <= 0 || cols <= 0) return;
    detail::scale_columns_kernel<<<detail::blocks_for(std::int64_t(rows) * cols, 4), detail::threads_per_block, 0,
                                   detail::stream()>>>(out, w, g, rows, cols);
    SGT_CUDA_LAUNCHED(scale_columns_kernel);
}

template <class T>
void scale_columns_backward(cuda, T* dw, T* dg, const T* dout, const T* w, const T* g, int rows, int cols) {
    if (rows <= 0 || cols <= 0) return;
    detail::scale_columns_backward_kernel<<<(cols + 31) / 32, 32 * detail::scale_columns_warps, 0, detail::stream()>>>(
        dw, dg, dout, w, g, rows, cols);
    SGT_CUDA_LAUNCHED(scale_columns_backward_kernel);
}

}  // namespace sgt
