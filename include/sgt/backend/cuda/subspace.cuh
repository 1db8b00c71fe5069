// sgt/backend/cuda/subspace.cuh: the row operations of loop steps in the looped heads' subspace on the device
// (backend/cpu/subspace.hpp has their definitions; loop_subspace.hpp the algebra). A warp per row (reductions in
// accum_t<T>), its lanes moving 16-byte packs where the row length and the pointers allow and single elements
// otherwise; a block of 32 columns for the column sums of scale_columns_backward; 32 x 32 tiles for the transpose;
// no atomics, so the results do not depend on scheduling.
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

// a (len = 3m, row n of z at z_row) scaled by r and rotated into out_row (the normalisation of subspace_step_forward).
template <int W, class T>
__device__ inline void subspace_normalize_row(T* out_row, const T* a_row, accum_t<T> r, int len, int n,
                                              const rope_rows<accum_t<T>>& rope) {
    using A = accum_t<T>;
    for_rope_packs<W>(len, rope, n, [&](int i, int i2, std::int64_t t) {
        auto v = load_pack<W>(a_row + i);
        if (i2 < 0) {
#pragma unroll
            for (int k = 0; k < W; ++k) v.v[k] = store<T>(load(v.v[k]) * r);
        } else {  // the rotation of pairs (i + k, i2 + k) after the scaling
            auto v2 = load_pack<W>(a_row + i2);
#pragma unroll
            for (int k = 0; k < W; ++k) {
                A x1 = load(v.v[k]) * r, x2 = load(v2.v[k]) * r;
                rotate_pair(x1, x2, rope.cos[t + k], rope.sin[t + k]);
                v.v[k] = store<T>(x1);
                v2.v[k] = store<T>(x2);
            }
            store_pack(out_row + i2, v2);
        }
        store_pack(out_row + i, v);
    });
}

template <int W, class T>
__global__ void subspace_step_forward_kernel(T* qkv, accum_t<T>* s, T* u_keep, const T* z, int N, int m, int C,
                                             double eps, rope_rows<accum_t<T>> rope, subspace_prev<T> prev) {
    using A = accum_t<T>;
    const int n = subspace_row(N);
    if (n < 0) return;
    const int len = 3 * m;
    const std::int64_t zr = std::int64_t(n) * 4 * m + len, ur = std::int64_t(n) * m;  // zr: u's start in z
    A sn;
    if (prev.o) {  // s from the update before the step; o' of that step into the sum
        A dot = 0;
        for_lane_packs<W>(m, [&](int j) {
            const auto u = load_pack<W>(z + zr + j), up = load_pack<W>(prev.u_prev + ur + j),
                       o = load_pack<W>(prev.o + ur + j);
            pack<T, W> sum = o;
            if (!prev.first) sum = load_pack<W>(prev.sum + ur + j);
#pragma unroll
            for (int k = 0; k < W; ++k) {
                dot += load(o.v[k]) * (load(up.v[k]) + load(u.v[k]));
                if (!prev.first) sum.v[k] = store<T>(load(sum.v[k]) + load(o.v[k]));
            }
            store_pack(prev.sum + ur + j, sum);
            store_pack(u_keep + ur + j, u);
        });
        sn = prev.s_prev[n] + warp_sum(dot);
        if (threadIdx.x % 32 == 0) s[n] = sn;
    } else {
        for_lane_packs<W>(m, [&](int j) { store_pack(u_keep + ur + j, load_pack<W>(z + zr + j)); });
        sn = s[n];
    }
    subspace_normalize_row<W>(qkv + std::int64_t(n) * len, z + std::int64_t(n) * 4 * m, subspace_rstd_of(sn, C, eps),
                              len, n, rope);
}

template <int W, class T>
__global__ void subspace_step_backward_kernel(accum_t<T>* ds, T* dz, const T* dqkv, const T* qkv, const accum_t<T>* s,
                                              const T* o, int N, int m, int C, double eps,
                                              rope_rows<accum_t<T>> rope, bool add, subspace_prev_grad<T> prev) {
    using A = accum_t<T>;
    const int n = subspace_row(N);
    if (n < 0) return;
    const int len = 3 * m;
    const std::int64_t qr = std::int64_t(n) * len, ar = std::int64_t(n) * 4 * m, ur = std::int64_t(n) * m;
    const A r = subspace_rstd_of(s[n], C, eps), ds_next = add ? ds[n] : A(0);
    A dot = 0;
    // da (+)= the values g (W of them, at i of the row)
    auto put = [&](int i, const A* g) {
        pack<T, W> d;
        if (add) d = load_pack<W>(dz + ar + i);
#pragma unroll
        for (int k = 0; k < W; ++k) d.v[k] = store<T>(add ? load(d.v[k]) + g[k] : g[k]);
        store_pack(dz + ar + i, d);
    };
    for_rope_packs<W>(len, rope, n, [&](int i, int i2, std::int64_t t) {
        const auto dy = load_pack<W>(dqkv + qr + i), y = load_pack<W>(qkv + qr + i);
        A g[W], g2[W];
        if (i2 < 0) {
#pragma unroll
            for (int k = 0; k < W; ++k) {
                dot += load(y.v[k]) * load(dy.v[k]);
                g[k] = r * load(dy.v[k]);
            }
        } else {  // the inverse rotation of pairs (i + k, i2 + k) after the scaling
            const auto dy2 = load_pack<W>(dqkv + qr + i2), y2 = load_pack<W>(qkv + qr + i2);
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
    const A ds_here = ds_next - r * r / (2 * A(C)) * warp_sum(dot);
    if (threadIdx.x % 32 == 0) ds[n] = ds_here;
    // du: the terms through s, and ∂L/∂o' of the step before
    for_lane_packs<W>(m, [&](int j) {
        pack<T, W> du;
        A acc[W];
        if (add) du = load_pack<W>(dz + ar + len + j);
#pragma unroll
        for (int k = 0; k < W; ++k) acc[k] = add ? load(du.v[k]) : A(0);
        if (o) {
            const auto ov = load_pack<W>(o + ur + j);
#pragma unroll
            for (int k = 0; k < W; ++k) acc[k] += ds_next * load(ov.v[k]);
        }
        if (prev.o) {
            const auto ov = load_pack<W>(prev.o + ur + j), up = load_pack<W>(prev.u_prev + ur + j),
                       uv = load_pack<W>(prev.u + ur + j), dsum = load_pack<W>(prev.d_sum + ur + j);
            pack<T, W> d_o;
#pragma unroll
            for (int k = 0; k < W; ++k) {
                acc[k] += ds_here * load(ov.v[k]);
                d_o.v[k] = store<T>(load(dsum.v[k]) + ds_here * (load(up.v[k]) + load(uv.v[k])));
            }
            store_pack(prev.d_o + ur + j, d_o);
        }
#pragma unroll
        for (int k = 0; k < W; ++k) du.v[k] = store<T>(acc[k]);
        store_pack(dz + ar + len + j, du);
    });
}

// out (cols, rows) (+)= in (rows, cols)ᵀ through a 32 x 32 tile in shared memory (in read and out written along rows).
template <class T>
__global__ void transpose_kernel(T* out, const T* in, int rows, int cols, bool accumulate) {
    __shared__ accum_t<T> tile[32][33];
    const int c0 = blockIdx.x * 32, r0 = blockIdx.y * 32, x = threadIdx.x % 32;
    for (int i = threadIdx.x / 32; i < 32; i += blockDim.x / 32)
        if (r0 + i < rows && c0 + x < cols) tile[i][x] = load(in[std::int64_t(r0 + i) * cols + c0 + x]);
    __syncthreads();
    for (int i = threadIdx.x / 32; i < 32; i += blockDim.x / 32)
        if (c0 + i < cols && r0 + x < rows) {
            T& y = out[std::int64_t(c0 + i) * rows + r0 + x];
            y = store<T>(accumulate ? load(y) + tile[x][i] : tile[x][i]);
        }
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
void subspace_step_forward(cuda, T* qkv, accum_t<T>* s, T* u_keep, const T* z, int N, int m, int C, double eps,
                           rope_rows<accum_t<T>> rope, subspace_prev<T> prev) {
    if (N <= 0) return;
    constexpr int P = detail::pack_width<T>;
    const bool packed = detail::subspace_packs<T>(m, qkv, u_keep, z, prev.u_prev, prev.o, prev.sum) &&
                        (rope.HD / 2) % P == 0;
    detail::launch_rows(N, packed, detail::subspace_step_forward_kernel<P, T>,
                        detail::subspace_step_forward_kernel<1, T>, qkv, s, u_keep, z, N, m, C, eps, rope, prev);
    SGT_CUDA_LAUNCHED(subspace_step_forward_kernel);
}

template <class T>
void subspace_step_backward(cuda, accum_t<T>* ds, T* dz, T* dqkv, const T* qkv, const accum_t<T>* s, const T* o, int N,
                            int m, int C, double eps, rope_rows<accum_t<T>> rope, bool add, subspace_prev_grad<T> prev) {
    if (N <= 0) return;
    constexpr int P = detail::pack_width<T>;
    const bool packed = detail::subspace_packs<T>(m, dz, dqkv, qkv, o, prev.u_prev, prev.u, prev.o, prev.d_sum,
                                                  prev.d_o) &&
                        (rope.HD / 2) % P == 0;
    detail::launch_rows(N, packed, detail::subspace_step_backward_kernel<P, T>,
                        detail::subspace_step_backward_kernel<1, T>, ds, dz, static_cast<const T*>(dqkv), qkv, s, o, N,
                        m, C, eps, rope, add, prev);
    SGT_CUDA_LAUNCHED(subspace_step_backward_kernel);
}

template <class T>
void transpose(cuda, T* out, const T* in, int rows, int cols, bool accumulate) {
    if (rows <= 0 || cols <= 0) return;
    const dim3 grid(unsigned((cols + 31) / 32), unsigned((rows + 31) / 32));
    detail::transpose_kernel<<<grid, 256, 0, detail::stream()>>>(out, in, rows, cols, accumulate);
    SGT_CUDA_LAUNCHED(transpose_kernel);
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
