// sgt/backend/cuda/rmsnorm.cuh: RMSNorm(x; w) = x / sqrt(mean(x²) + eps) ⊙ w (spec Sec. 1), forward and backward.
// One warp per row, the row's sums by warp shuffles. The weight gradient Σ_n dout ⊙ x̂ is summed in a
// fixed order (per-chunk partial sums, then the chunks in order), so it is the same on every run. Rows of up to
// 32·P packs (C ≤ 1024 in bf16 and fp32) take one pass over dout and x for both gradients: each lane keeps its
// columns' share of the weight gradient in registers while it writes the input gradient; wider rows read them
// twice (the input gradient, then the weight gradient's partial sums by a kernel of their own).
#pragma once

#include <cub/block/block_reduce.cuh>

#include "sgt/backend/cuda/backend.cuh"

namespace sgt {

namespace detail {

constexpr int rms_threads = 256, rms_rows = rms_threads / 32;  // a warp per row, 8 rows per block

// One warp per row; its lanes walk the row in packs of W elements (16 bytes when C and the pointers allow, else
// W = 1).
template <int W, class T>
__global__ void rmsnorm_forward_kernel(T* out, T* rstd, const T* in, const T* w, int N, int C, double eps) {
    using A = accum_t<T>;
    using P = pack<T, W>;
    const int row = blockIdx.x * rms_rows + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) return;
    const P* x = reinterpret_cast<const P*>(in + std::int64_t(row) * C);
    P* y = reinterpret_cast<P*>(out + std::int64_t(row) * C);
    const P* wp = reinterpret_cast<const P*>(w);
    A ss = 0;
    for (int c = lane; c < C / W; c += 32) {
        const P xv = x[c];
#pragma unroll
        for (int k = 0; k < W; ++k) ss += load(xv.v[k]) * load(xv.v[k]);
    }
    ss = warp_sum(ss);
    const T r_stored = store<T>(A(1.0 / sqrt(double(ss) / C + eps)));
    if (lane == 0) rstd[row] = r_stored;
    const A r = load(r_stored);  // the stored rstd, as the backward will see it
    for (int c = lane; c < C / W; c += 32) {
        const P xv = x[c], wv = wp[c];
        P yv;
#pragma unroll
        for (int k = 0; k < W; ++k) yv.v[k] = store<T>(load(xv.v[k]) * r * load(wv.v[k]));
        y[c] = yv;
    }
}

// The backward of one element, din += rstd · (g − x̂ · mean(g ⊙ x̂)) with g = dout ⊙ w and x̂ = x · rstd, in two
// parts: the element's term of the row's sum Σ g ⊙ x̂, then its input gradient given m = mean(g ⊙ x̂).
template <class A>
__device__ inline A rms_dot_term(A d, A w, A x, A r) {
    return d * w * x * r;
}
template <class A>
__device__ inline A rms_input_grad(A din, A d, A w, A x, A r, A m) {
    return din + r * (d * w - x * r * m);
}

// din += the input gradient (rms_input_grad). One warp per row.
template <int W, class T>
__global__ void rmsnorm_backward_input_kernel(T* din, const T* dout, const T* in, const T* w, const T* rstd, int N,
                                              int C) {
    using A = accum_t<T>;
    using P = pack<T, W>;
    const int row = blockIdx.x * rms_rows + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) return;
    const std::int64_t off = std::int64_t(row) * C;
    const P* dy = reinterpret_cast<const P*>(dout + off);
    const P* x = reinterpret_cast<const P*>(in + off);
    const P* wp = reinterpret_cast<const P*>(w);
    P* dx = reinterpret_cast<P*>(din + off);
    const A r = load(rstd[row]);
    A dot = 0;
    for (int c = lane; c < C / W; c += 32) {
        const P dv = dy[c], xv = x[c], wv = wp[c];
#pragma unroll
        for (int k = 0; k < W; ++k) dot += rms_dot_term(load(dv.v[k]), load(wv.v[k]), load(xv.v[k]), r);
    }
    const A m = warp_sum(dot) / A(C);
    for (int c = lane; c < C / W; c += 32) {
        const P dv = dy[c], xv = x[c], wv = wp[c];
        P g = dx[c];
#pragma unroll
        for (int k = 0; k < W; ++k)
            g.v[k] = store<T>(rms_input_grad(load(g.v[k]), load(dv.v[k]), load(wv.v[k]), load(xv.v[k]), r, m));
        dx[c] = g;
    }
}

// partial (chunks, C): Σ over the rows of chunk blockIdx.y of dout ⊙ x̂, for 32 packs of W columns per block,
// 8 rows at a time.
template <int W, class T>
__global__ void rmsnorm_weight_partial_kernel(accum_t<T>* partial, const T* dout, const T* in, const T* rstd, int N,
                                              int C, int rows_per_chunk) {
    using A = accum_t<T>;
    using P = pack<T, W>;
    __shared__ A sums[8][32 * W + 1];
    const int cp = blockIdx.x * 32 + threadIdx.x;  // this thread's pack of columns
    const bool in_row = cp < C / W;
    const int r0 = blockIdx.y * rows_per_chunk, r1 = min(N, r0 + rows_per_chunk);
    A s[W] = {};
    if (in_row)
        for (int r = r0 + threadIdx.y; r < r1; r += 8) {
            const P dv = reinterpret_cast<const P*>(dout + std::int64_t(r) * C)[cp];
            const P xv = reinterpret_cast<const P*>(in + std::int64_t(r) * C)[cp];
            const A rs = load(rstd[r]);
#pragma unroll
            for (int k = 0; k < W; ++k) s[k] += load(dv.v[k]) * load(xv.v[k]) * rs;
        }
#pragma unroll
    for (int k = 0; k < W; ++k) sums[threadIdx.y][threadIdx.x * W + k] = s[k];
    __syncthreads();
    for (int i = threadIdx.y * 32 + threadIdx.x; i < 32 * W; i += 256) {
        const int c = blockIdx.x * 32 * W + i;
        if (c >= C) continue;
        A t = 0;
        for (int k = 0; k < 8; ++k) t += sums[k][i];
        partial[std::int64_t(blockIdx.y) * C + c] = t;
    }
}

// din += as rmsnorm_backward_input_kernel; partial (gridDim.x, C) = Σ over the block's rows of dout ⊙ x̂. Block b
// takes rows [b·R, (b + 1)·R), its warp w the rows b·R + w, b·R + w + 8, ...; lane l the packs l, l + 32, ...
// (at most P of them), whose sums it holds in registers until the block adds its warps' sums in shared memory.
template <int W, int P, class T>
__global__ void __launch_bounds__(rms_threads)
    rmsnorm_backward_fused_kernel(T* din, accum_t<T>* partial, const T* dout, const T* in, const T* w, const T* rstd,
                                  int N, int C, int rows_per_block) {
    using A = accum_t<T>;
    using Pk = pack<T, W>;
    extern __shared__ __align__(16) unsigned char rms_smem[];
    A* sums = reinterpret_cast<A*>(rms_smem);  // (rms_rows, C): each warp's sums
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, packs = C / W;
    const int r0 = blockIdx.x * rows_per_block, r1 = min(N, r0 + rows_per_block);
    const Pk* wp = reinterpret_cast<const Pk*>(w);
    A s[P][W] = {};
    for (int row = r0 + warp; row < r1; row += rms_rows) {
        const std::int64_t off = std::int64_t(row) * C;
        const Pk* dy = reinterpret_cast<const Pk*>(dout + off);
        const Pk* x = reinterpret_cast<const Pk*>(in + off);
        Pk* dx = reinterpret_cast<Pk*>(din + off);
        const A r = load(rstd[row]);
        A dot = 0;
#pragma unroll
        for (int j = 0; j < P; ++j) {
            const int c = lane + 32 * j;
            if (c >= packs) break;
            const Pk dv = dy[c], xv = x[c], wv = wp[c];
#pragma unroll
            for (int k = 0; k < W; ++k) dot += rms_dot_term(load(dv.v[k]), load(wv.v[k]), load(xv.v[k]), r);
        }
        const A m = warp_sum(dot) / A(C);
#pragma unroll
        for (int j = 0; j < P; ++j) {  // the row again, from L1
            const int c = lane + 32 * j;
            if (c >= packs) break;
            const Pk dv = dy[c], xv = x[c], wv = wp[c];
            Pk g = dx[c];
#pragma unroll
            for (int k = 0; k < W; ++k) {
                const A d = load(dv.v[k]), xv_k = load(xv.v[k]);
                g.v[k] = store<T>(rms_input_grad(load(g.v[k]), d, load(wv.v[k]), xv_k, r, m));
                s[j][k] += d * (xv_k * r);  // dout ⊙ x̂
            }
            dx[c] = g;
        }
    }
#pragma unroll
    for (int j = 0; j < P; ++j) {
        const int c = lane + 32 * j;
        if (c >= packs) break;
#pragma unroll
        for (int k = 0; k < W; ++k) sums[warp * C + c * W + k] = s[j][k];
    }
    __syncthreads();
    for (int c = threadIdx.x; c < C; c += rms_threads) {
        A t = 0;
        for (int k = 0; k < rms_rows; ++k) t += sums[k * C + c];
        partial[std::int64_t(blockIdx.x) * C + c] = t;
    }
}

// dw += Σ_k partial[k], the chunks k summed in a fixed order: thread (x, y) of a block adds the chunks y,
// y + 32, ... of column 32·blockIdx.x + x, then thread (x, 0) the 32 sums.
template <class T>
__global__ void rmsnorm_weight_sum_kernel(T* dw, const accum_t<T>* partial, int chunks, int C) {
    using A = accum_t<T>;
    __shared__ A sums[32][33];
    const int c = blockIdx.x * 32 + threadIdx.x;
    A s = 0;
    if (c < C)
        for (int k = threadIdx.y; k < chunks; k += 32) s += partial[std::int64_t(k) * C + c];
    sums[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y != 0 || c >= C) return;
    for (int k = 1; k < 32; ++k) s += sums[k][threadIdx.x];
    dw[c] = store<T>(load(dw[c]) + s);
}

// The packs a lane of the fused backward holds (1, 2, 3, 4, 6 or 8), or 0 when a row has more than it can hold in
// registers (32 accumulators) and its shared sums would not fit 48 KB.
template <class T>
int rms_fused_packs(int C, int W) {
    const int per_lane = (C / W + 31) / 32;
    for (int p : {1, 2, 3, 4, 6, 8})
        if (per_lane <= p)
            return W * p <= 32 && std::size_t(rms_rows) * C * sizeof(accum_t<T>) <= (48u << 10) ? p : 0;
    return 0;
}

// The fused backward with P packs a lane (rms_fused_packs).
template <int W, class T>
void launch_rmsnorm_backward_fused(int P, T* din, accum_t<T>* partial, const T* dout, const T* in, const T* w,
                                   const T* rstd, int N, int C, int chunks, int rows) {
    const std::size_t smem = std::size_t(rms_rows) * C * sizeof(accum_t<T>);
    auto launch = [&]<int Pc>() {
        if constexpr (W * Pc <= 32)
            rmsnorm_backward_fused_kernel<W, Pc><<<chunks, rms_threads, smem, stream()>>>(din, partial, dout, in, w,
                                                                                         rstd, N, C, rows);
    };
    switch (P) {
        case 1: launch.template operator()<1>(); break;
        case 2: launch.template operator()<2>(); break;
        case 3: launch.template operator()<3>(); break;
        case 4: launch.template operator()<4>(); break;
        case 6: launch.template operator()<6>(); break;
        default: launch.template operator()<8>();
    }
    SGT_CUDA_LAUNCHED(rmsnorm_backward_fused_kernel);
}

}  // namespace detail

// out (N, C), rstd (N) saved for the backward; in (N, C); w (C).
template <class T>
void rmsnorm_forward(cuda, T* out, T* rstd, const T* in, const T* w, int N, int C, double eps) {
    if (N <= 0) return;
    constexpr int W = detail::pack_width<T>;
    using detail::aligned16;
    const unsigned blocks = unsigned((N + detail::rms_rows - 1) / detail::rms_rows);
    if (C % W == 0 && aligned16(out) && aligned16(in) && aligned16(w))
        detail::rmsnorm_forward_kernel<W><<<blocks, detail::rms_threads, 0, detail::stream()>>>(out, rstd, in, w, N, C, eps);
    else
        detail::rmsnorm_forward_kernel<1><<<blocks, detail::rms_threads, 0, detail::stream()>>>(out, rstd, in, w, N, C, eps);
    SGT_CUDA_LAUNCHED(rmsnorm_forward_kernel);
}

// din (N, C) += ∂L/∂x; dw (C) += ∂L/∂w.
template <class T>
void rmsnorm_backward(cuda, T* din, T* dw, const T* dout, const T* in, const T* w, const T* rstd, int N, int C) {
    if (N <= 0) return;
    constexpr int W = detail::pack_width<T>;
    using detail::aligned16;
    const bool packed = C % W == 0 && aligned16(din) && aligned16(dout) && aligned16(in) && aligned16(w);
    const int P = detail::rms_fused_packs<T>(C, packed ? W : 1);
    // The weight gradient's partial sums, one per chunk of rows: up to 512 blocks of whole rows of the one-pass
    // kernel, or 128 chunks of the two-pass one.
    int chunks = 0, rows = 0;
    if (P > 0) {
        rows = std::max(detail::rms_rows, (N + 511) / 512);
        chunks = (N + rows - 1) / rows;
    } else {
        chunks = std::min(N, 128);
        rows = (N + chunks - 1) / chunks;
    }
    auto* partial = detail::context().scratch<accum_t<T>>(detail::slot_rmsnorm_partial, std::int64_t(chunks) * C);
    if (P > 0) {
        if (packed) detail::launch_rmsnorm_backward_fused<W>(P, din, partial, dout, in, w, rstd, N, C, chunks, rows);
        else detail::launch_rmsnorm_backward_fused<1>(P, din, partial, dout, in, w, rstd, N, C, chunks, rows);
    } else {
        const unsigned blocks = unsigned((N + detail::rms_rows - 1) / detail::rms_rows);
        if (packed)
            detail::rmsnorm_backward_input_kernel<W><<<blocks, detail::rms_threads, 0, detail::stream()>>>(din, dout, in, w, rstd, N, C);
        else
            detail::rmsnorm_backward_input_kernel<1><<<blocks, detail::rms_threads, 0, detail::stream()>>>(din, dout, in, w, rstd, N, C);
        SGT_CUDA_LAUNCHED(rmsnorm_backward_input_kernel);
        if (packed)
            detail::rmsnorm_weight_partial_kernel<W><<<dim3((C / W + 31) / 32, chunks), dim3(32, 8), 0, detail::stream()>>>(partial, dout, in, rstd, N, C, rows);
        else
            detail::rmsnorm_weight_partial_kernel<1><<<dim3((C + 31) / 32, chunks), dim3(32, 8), 0, detail::stream()>>>(partial, dout, in, rstd, N, C, rows);
        SGT_CUDA_LAUNCHED(rmsnorm_weight_partial_kernel);
    }
    detail::rmsnorm_weight_sum_kernel<<<(C + 31) / 32, dim3(32, 32), 0, detail::stream()>>>(dw, partial, chunks, C);
    SGT_CUDA_LAUNCHED(rmsnorm_weight_sum_kernel);
}

}  // namespace sgt
