// sgt/backend/cuda/subspace.cuh: the row operations of loop steps in the looped heads' subspace on the device
// (backend/cpu/subspace.hpp has their definitions; loop_subspace.hpp the algebra). A warp per row (reductions in
// accum_t<T>), its lanes moving 16-byte packs where the row length and the pointers allow and single elements
// otherwise; a block of 8 columns for the column sums of scatter_run_grads; no atomics, so the results do not
// depend on scheduling.
#pragma once

#include <cstdint>

#include "sgt/backend/cuda/backend.cuh"
#include "sgt/backend/cuda/heads.cuh"  // head_list
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

// A run's weights (gather_run_weights), one element of w_qkv and w's first 3m rows, or of w_o and w's last m rows,
// per index: a (head, row) of W_Q, W_K or W_V times γ, or a (row, head column) of W_O, written twice.
template <class T>
__global__ void gather_run_weights_kernel(T* w_qkv, T* w_o, T* w, attention_weights<T> a, head_list l, int HD, int C,
                                          int NH) {
    const int m = l.n * HD;
    const std::int64_t top = 3 * std::int64_t(m) * C, total = top + std::int64_t(C) * m;
    for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < total;
         i += std::int64_t(gridDim.x) * blockDim.x) {
        if (i < top) {
            const int r = int(i / C), c = int(i % C), which = r / m, k = r % m;
            const T* src = which == 0 ? a.wq : which == 1 ? a.wk : a.wv;
            const T v = src[l.at(k, HD) * C + c];
            w_qkv[i] = v;
            w[i] = store<T>(load(v) * load(a.norm[c]));
        } else {
            const std::int64_t j = i - top;
            const int c = int(j / m), k = int(j % m);
            const T v = a.wo[std::int64_t(c) * NH * HD + l.at(k, HD)];
            w_o[j] = v;
            w[top + std::int64_t(k) * C + c] = v;
        }
    }
}

// A run's gradients (scatter_run_grads): a block per 8 columns c of the width, its 256 threads as 32 groups of 8
// (thread t: column t % 8, group t / 8). Group k takes rows k, k + 32, ... of dw's first 3m (the product with w_qkv
// summed for γ, dw diag(γ) added to the head's row of W_Q, W_K or W_V), then rows k, k + 32, ... of its last m
// (added with dw_o's row c into W_O's row c), loading run_grads_batch rows before it stores any, since the work is
// latency-bound (1.6 MB at gpt2); the 32 groups' sums for γ are added in group order: no atomics, the same order
// every run.
constexpr int run_grads_cols = 8, run_grads_groups = 32, run_grads_batch = 4;
template <class T>
__global__ void scatter_run_grads_kernel(attention_grads<T> g, const T* dw, const T* dw_o, const T* w_qkv,
                                         const T* gamma, head_list l, int HD, int C, int NH) {
    using A = accum_t<T>;
    constexpr int G = run_grads_groups, R = run_grads_batch;
    __shared__ A partial[G][run_grads_cols];
    const int col = threadIdx.x % run_grads_cols, group = threadIdx.x / run_grads_cols;
    const int c = blockIdx.x * run_grads_cols + col, m = l.n * HD;
    A sum = 0;
    // Adds delta(r) to the element dst(r) for rows r = group, group + G, ... < rows, loading R rows (dst's and
    // delta's reads) before it stores any.
    auto add_rows = [&](int rows, auto&& dst, auto&& delta) {
        for (int r0 = group; r0 < rows; r0 += G * R) {
            T* p[R];
            A y[R];
#pragma unroll
            for (int b = 0; b < R; ++b)
                if (const int r = r0 + b * G; r < rows) {
                    p[b] = &dst(r);
                    y[b] = load(*p[b]) + delta(r);
                }
#pragma unroll
            for (int b = 0; b < R; ++b)
                if (r0 + b * G < rows) *p[b] = store<T>(y[b]);
        }
    };
    if (c < C) {
        const A gc = load(gamma[c]);
        add_rows(
            3 * m,
            [&](int r) -> T& {  // W_Q, W_K or W_V's element of dw's row r < 3m, column c
                const int which = r / m, k = r % m;
                T* dst = which == 0 ? g.wq : which == 1 ? g.wk : g.wv;
                return dst[l.at(k, HD) * C + c];
            },
            [&](int r) {
                const std::int64_t i = std::int64_t(r) * C + c;
                const A d = load(dw[i]);
                sum += d * load(w_qkv[i]);
                return d * gc;
            });
        add_rows(
            m, [&](int k) -> T& { return g.wo[std::int64_t(c) * NH * HD + l.at(k, HD)]; },
            [&](int k) { return load(dw_o[std::int64_t(c) * m + k]) + load(dw[std::int64_t(3 * m + k) * C + c]); });
    }
    partial[group][col] = sum;
    __syncthreads();
    if (group == 0 && c < C) {
        A total = 0;
        for (int k = 0; k < G; ++k) total += partial[k][col];
        g.norm[c] = store<T>(load(g.norm[c]) + total);
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
void gather_run_weights(cuda, T* w_qkv, T* w_o, T* w, attention_weights<T> a, std::span<const int> heads, int HD, int C,
                        int NH) {
    const auto l = detail::make_head_list(heads);
    const std::int64_t total = 4 * std::int64_t(l.n) * HD * C;
    if (total <= 0) return;
    detail::gather_run_weights_kernel<<<detail::blocks_for(total, 4), detail::threads_per_block, 0, detail::stream()>>>(
        w_qkv, w_o, w, a, l, HD, C, NH);
    SGT_CUDA_LAUNCHED(gather_run_weights_kernel);
}

template <class T>
void scatter_run_grads(cuda, attention_grads<T> g, T* dw, T* dw_o, const T* w_qkv, const T* gamma,
                       std::span<const int> heads, int HD, int C, int NH) {
    const auto l = detail::make_head_list(heads);
    if (l.n <= 0 || C <= 0) return;
    detail::scatter_run_grads_kernel<<<(C + detail::run_grads_cols - 1) / detail::run_grads_cols,
                                       detail::run_grads_cols * detail::run_grads_groups, 0, detail::stream()>>>(
        g, dw, dw_o, w_qkv, gamma, l, HD, C, NH);
    SGT_CUDA_LAUNCHED(scatter_run_grads_kernel);
}

}  // namespace sgt
