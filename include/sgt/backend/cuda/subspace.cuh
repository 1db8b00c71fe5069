// sgt/backend/cuda/subspace.cuh: the row operations of loop steps in the looped heads' subspace on the device
// (backend/cpu/subspace.hpp has their definitions; loop_subspace.hpp the algebra). A warp per row (reductions in
// accum_t<T>, then the row's elements by its lanes), a block of 32 columns for the column sums of
// scale_columns_backward; no atomics, so the results do not depend on scheduling.
#pragma once

#include <cstdint>

#include "sgt/backend/cuda/backend.cuh"

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

template <class T>
__global__ void row_sum_squares_kernel(accum_t<T>* s, const T* x, int N, int C) {
    using A = accum_t<T>;
    const int n = blockIdx.x * subspace_rows_per_block + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (n >= N) return;
    const T* row = x + std::int64_t(n) * C;
    A ss = 0;
    for (int c = lane; c < C; c += 32) ss += load(row[c]) * load(row[c]);
    ss = warp_sum(ss);
    if (lane == 0) s[n] = ss;
}

template <class T>
__global__ void row_sum_squares_backward_kernel(T* dx, const accum_t<T>* ds, const T* x, int N, int C) {
    const int n = blockIdx.x * subspace_rows_per_block + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (n >= N) return;
    const std::int64_t at = std::int64_t(n) * C;
    const accum_t<T> g = 2 * ds[n];
    for (int c = lane; c < C; c += 32) dx[at + c] = store<T>(load(dx[at + c]) + g * load(x[at + c]));
}

template <class T>
__global__ void subspace_normalize_kernel(T* out, const T* a, const accum_t<T>* s, int N, int W, int C, double eps) {
    const int n = blockIdx.x * subspace_rows_per_block + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (n >= N) return;
    const std::int64_t at = std::int64_t(n) * W;
    const accum_t<T> r = subspace_rstd_of(s[n], C, eps);
    for (int j = lane; j < W; j += 32) out[at + j] = store<T>(load(a[at + j]) * r);
}

template <class T>
__global__ void subspace_normalize_backward_kernel(accum_t<T>* ds, T* dout, const T* out, const accum_t<T>* s, int N,
                                                   int W, int C, double eps) {
    using A = accum_t<T>;
    const int n = blockIdx.x * subspace_rows_per_block + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (n >= N) return;
    const std::int64_t at = std::int64_t(n) * W;
    const A r = subspace_rstd_of(s[n], C, eps);
    A dot = 0;
    for (int j = lane; j < W; j += 32) {
        const A dy = load(dout[at + j]);
        dot += load(out[at + j]) * dy;
        dout[at + j] = store<T>(r * dy);
    }
    dot = warp_sum(dot);
    if (lane == 0) ds[n] += -r * r / (2 * A(C)) * dot;
}

template <class T>
__global__ void subspace_update_kernel(accum_t<T>* s_out, T* u_out, const accum_t<T>* s_in, const T* u_in, const T* o,
                                       const T* t, int N, int m) {
    using A = accum_t<T>;
    const int n = blockIdx.x * subspace_rows_per_block + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (n >= N) return;
    const std::int64_t at = std::int64_t(n) * m;
    A dot = 0;
    for (int j = lane; j < m; j += 32) {
        const A u = load(u_in[at + j]), tj = load(t[at + j]);
        dot += load(o[at + j]) * (2 * u + tj);
        u_out[at + j] = store<T>(u + tj);
    }
    dot = warp_sum(dot);
    if (lane == 0) s_out[n] = s_in[n] + dot;
}

template <class T>
__global__ void subspace_update_backward_kernel(T* d_o, T* du, T* w, const accum_t<T>* ds, const T* o, const T* u,
                                                int N, int m) {
    using A = accum_t<T>;
    const int n = blockIdx.x * subspace_rows_per_block + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (n >= N) return;
    const A g = ds[n];
    for (std::int64_t i = std::int64_t(n) * m + lane, end = std::int64_t(n + 1) * m; i < end; i += 32) {
        const A oi = load(o[i]), dui = load(du[i]);
        w[i] = store<T>(dui + g * oi);
        d_o[i] = store<T>(load(d_o[i]) + 2 * g * load(u[i]));
        du[i] = store<T>(dui + 2 * g * oi);
    }
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
    detail::row_sum_squares_kernel<<<detail::subspace_row_blocks(N), detail::threads_per_block, 0, detail::stream()>>>(
        s, x, N, C);
    SGT_CUDA_LAUNCHED(row_sum_squares_kernel);
}

template <class T>
void row_sum_squares_backward(cuda, T* dx, const accum_t<T>* ds, const T* x, int N, int C) {
    if (N <= 0) return;
    detail::row_sum_squares_backward_kernel<<<detail::subspace_row_blocks(N), detail::threads_per_block, 0,
                                              detail::stream()>>>(dx, ds, x, N, C);
    SGT_CUDA_LAUNCHED(row_sum_squares_backward_kernel);
}

template <class T>
void subspace_normalize(cuda, T* out, const T* a, const accum_t<T>* s, int N, int W, int C, double eps) {
    if (N <= 0) return;
    detail::subspace_normalize_kernel<<<detail::subspace_row_blocks(N), detail::threads_per_block, 0,
                                        detail::stream()>>>(out, a, s, N, W, C, eps);
    SGT_CUDA_LAUNCHED(subspace_normalize_kernel);
}

template <class T>
void subspace_normalize_backward(cuda, accum_t<T>* ds, T* dout, const T* out, const accum_t<T>* s, int N, int W, int C,
                                 double eps) {
    if (N <= 0) return;
    detail::subspace_normalize_backward_kernel<<<detail::subspace_row_blocks(N), detail::threads_per_block, 0,
                                                 detail::stream()>>>(ds, dout, out, s, N, W, C, eps);
    SGT_CUDA_LAUNCHED(subspace_normalize_backward_kernel);
}

template <class T>
void subspace_update(cuda, accum_t<T>* s_out, T* u_out, const accum_t<T>* s_in, const T* u_in, const T* o, const T* t,
                     int N, int m) {
    if (N <= 0) return;
    detail::subspace_update_kernel<<<detail::subspace_row_blocks(N), detail::threads_per_block, 0, detail::stream()>>>(
        s_out, u_out, s_in, u_in, o, t, N, m);
    SGT_CUDA_LAUNCHED(subspace_update_kernel);
}

template <class T>
void subspace_update_backward(cuda, T* d_o, T* du, T* w, const accum_t<T>* ds, const T* o, const T* u, int N, int m) {
    if (N <= 0) return;
    detail::subspace_update_backward_kernel<<<detail::subspace_row_blocks(N), detail::threads_per_block, 0,
                                              detail::stream()>>>(d_o, du, w, ds, o, u, N, m);
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
