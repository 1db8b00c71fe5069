// sgt/backend/cuda/gates.cuh: the learned head gate of GATES.md Sec. 1-2 on the device (backend/cpu/gates.hpp
// gives the formulas and shapes). The forward takes the dot products w_q · q and w_k · k of every position at
// once (a warp each); the prefix mean is then a running sum of the scalars w_k · k_u, a block-wide scan per
// (sequence, head) along its positions; the backward's suffix sums likewise. The parameter gradients are reduced
// per element over (b, t) by one block each. Every sum is in a fixed order (deterministic).
#pragma once

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include "sgt/backend/cuda/backend.cuh"

namespace sgt {

namespace detail {

// The gate's two dot products of every (row r = (b, t), gated head j): dots[(r·ng + j)·2] = w_q · q, [.. + 1] =
// w_k · k; one warp each, the lanes over the head's HD values (all positions at once: only the prefix sum that
// follows runs along the sequence).
template <class T>
__global__ void gate_dots_kernel(accum_t<T>* dots, const T* qkv, const T* w, std::int64_t rows, int n, int HD, int i0) {
    using A = accum_t<T>;
    const int ng = n - i0, lane = threadIdx.x % 32;
    const std::int64_t warps = std::int64_t(gridDim.x) * blockDim.x / 32;
    const std::int64_t first = (blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x) / 32;
    for (std::int64_t warp = first; warp < rows * ng; warp += warps) {
        const std::int64_t r = warp / ng;
        const int j = int(warp % ng), i = i0 + j;
        const T* q = qkv + r * 3 * std::int64_t(n) * HD + std::int64_t(i) * HD;
        const T* k = q + std::int64_t(n) * HD;
        const T* wq = w + std::int64_t(j) * 2 * HD;
        const T* wk = wq + HD;
        A zq = 0, zk = 0;
        for (int d = lane; d < HD; d += 32) {
            zq += load(wq[d]) * load(q[d]);
            zk += load(wk[d]) * load(k[d]);
        }
        zq = warp_sum(zq);
        zk = warp_sum(zk);
        if (lane == 0) dots[2 * warp] = zq, dots[2 * warp + 1] = zk;
    }
}

// Block (b, i): s and g of head i along the positions of sequence b (gate_forward_at's arguments), from the dots:
// the running key sum is a block-wide inclusive scan of w_k · k over tiles of threads_per_block positions, each
// tile starting from the last one's total (and the first from run); then the prefix mean, sigmoid and threshold.
template <class T>
__global__ void __launch_bounds__(threads_per_block) gate_scan_kernel(T* s, T* g, accum_t<T>* run,
                                                                      const accum_t<T>* dots, const T* c,
                                                                      const std::int32_t* start,
                                                                      const std::int32_t* len, int T_, int n, int i0,
                                                                      double theta, bool hard) {
    using A = accum_t<T>;
    using scan = cub::BlockScan<A, threads_per_block>;
    __shared__ typename scan::TempStorage tmp;
    __shared__ A carry;
    const int b = blockIdx.x / n, i = blockIdx.x % n, ng = n - i0;
    if (i < i0) {
        for (int t = threadIdx.x; t < T_; t += threads_per_block) {
            const std::int64_t o = (std::int64_t(b) * T_ + t) * n + i;
            s[o] = g[o] = store<T>(A(1));
        }
        return;
    }
    const std::int64_t p0 = start ? start[b] : 0;
    const int kept = len ? len[b] : T_;
    const A bias = load(c[i - i0]);
    if (threadIdx.x == 0) carry = run ? run[blockIdx.x] : A(0);
    __syncthreads();
    for (int t0 = 0; t0 < T_; t0 += threads_per_block) {
        const int t = t0 + int(threadIdx.x);
        const std::int64_t r = std::int64_t(b) * T_ + t;
        const A* d = dots + 2 * (r * ng + (i - i0));
        A sum = 0;
        scan(tmp).InclusiveSum(t < T_ ? d[1] : A(0), sum);
        sum += carry;
        if (t < T_) {
            if (run && t + 1 == kept) run[blockIdx.x] = sum;
            const A z = d[0] + sum / A(p0 + t + 1) + bias;
            const A sig = A(1) / (A(1) + exp(-z));
            const std::int64_t o = r * n + i;
            s[o] = store<T>(sig);
            g[o] = store<T>(hard && double(sig) < theta ? A(0) : sig);
        }
        __syncthreads();  // every thread has read carry, and the scan's storage is free again
        if (threadIdx.x == threads_per_block - 1) carry = sum;
        __syncthreads();
    }
}

// Block (b, j), j a gated head: dz_t = ∂L/∂s · s (1 − s) and the suffix sums E_u = Σ_{t≥u} dz_t / (t+1) (scratch,
// (B, T, ng) each), by a block-wide scan over tiles taken from the end of the sequence.
template <class T>
__global__ void __launch_bounds__(threads_per_block) gate_backward_scan_kernel(accum_t<T>* dz, accum_t<T>* E,
                                                                               const T* ds, const T* s, int T_, int n,
                                                                               int i0, double ds_add) {
    using A = accum_t<T>;
    using scan = cub::BlockScan<A, threads_per_block>;
    __shared__ typename scan::TempStorage tmp;
    __shared__ A carry;
    const int ng = n - i0, b = blockIdx.x / ng, j = blockIdx.x % ng, i = i0 + j;
    if (threadIdx.x == 0) carry = A(0);
    __syncthreads();
    for (int base = 0; base < T_; base += threads_per_block) {
        const int t = T_ - 1 - (base + int(threadIdx.x));
        const std::int64_t r = std::int64_t(b) * T_ + t;
        A z = 0;
        if (t >= 0) {
            const A sv = load(s[r * n + i]);
            z = (load(ds[r * n + i]) + A(ds_add)) * sv * (A(1) - sv);
        }
        A e = 0;
        scan(tmp).InclusiveSum(t >= 0 ? z / A(t + 1) : A(0), e);
        e += carry;
        if (t >= 0) {
            dz[r * ng + j] = z;
            E[r * ng + j] = e;
        }
        __syncthreads();
        if (threadIdx.x == threads_per_block - 1) carry = e;
        __syncthreads();
    }
}

// dq_t = dz_t w_q and dk_t = E_t w_k of every (row, gated head, d), all at once.
template <class T>
__global__ void gate_backward_rows_kernel(T* dqkv, const accum_t<T>* dz, const accum_t<T>* E, const T* w,
                                          std::int64_t rows, int n, int HD, int i0) {
    const int ng = n - i0;
    const std::int64_t total = rows * ng * HD, row = 3 * std::int64_t(n) * HD;
    for (std::int64_t x = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; x < total;
         x += std::int64_t(gridDim.x) * blockDim.x) {
        const int d = int(x % HD);
        const std::int64_t p = x / HD, r = p / ng;
        const int j = int(p % ng), i = i0 + j;
        const T* wq = w + std::int64_t(j) * 2 * HD;
        T* dq = dqkv + r * row + std::int64_t(i) * HD;
        dq[d] = store<T>(dz[p] * load(wq[d]));
        dq[std::int64_t(n) * HD + d] = store<T>(E[p] * load(wq[HD + d]));
    }
}

// Block (j, e): e < HD: dw_q[e] += Σ dz·q; HD ≤ e < 2·HD: dw_k[e − HD] += Σ E·k; e = 2·HD: dc += Σ dz.
template <class T>
__global__ void gate_backward_params_kernel(T* dw, T* dc, const accum_t<T>* dz, const accum_t<T>* E, const T* qkv,
                                            std::int64_t rows, int n, int HD, int i0) {
    using A = accum_t<T>;
    using reduce = cub::BlockReduce<A, threads_per_block>;
    __shared__ typename reduce::TempStorage tmp;
    const int ng = n - i0, j = blockIdx.x, e = blockIdx.y, i = i0 + j;
    const std::int64_t row = 3 * std::int64_t(n) * HD;
    A sum = 0;
    for (std::int64_t r = threadIdx.x; r < rows; r += threads_per_block) {
        const std::int64_t p = r * ng + j;
        if (e < HD)
            sum += dz[p] * load(qkv[r * row + std::int64_t(i) * HD + e]);
        else if (e < 2 * HD)
            sum += E[p] * load(qkv[r * row + std::int64_t(n + i) * HD + (e - HD)]);
        else
            sum += dz[p];
    }
    const A total = reduce(tmp).Sum(sum);
    if (threadIdx.x != 0) return;
    T& out = e < 2 * HD ? dw[std::int64_t(j) * 2 * HD + e] : dc[j];
    out = store<T>(load(out) + total);
}

}  // namespace detail

template <class T>
void gate_forward_at(cuda, T* s, T* g, accum_t<T>* run, const T* qkv, const T* w, const T* c, const std::int32_t* start,
                     const std::int32_t* len, int B, int T_, int n, int HD, int i0, double theta, bool hard) {
    using A = accum_t<T>;
    const std::int64_t threads = std::int64_t(B) * n, rows = std::int64_t(B) * T_;
    if (threads <= 0 || T_ <= 0) return;
    // The gate's scratch slot: the backward's temporaries use it too, but never while a forward's dots are live.
    A* dots = detail::context().scratch<A>(detail::slot_gate, std::max<std::int64_t>(1, 2 * rows * (n - i0)));
    if (n > i0) {
        detail::gate_dots_kernel<T><<<detail::blocks_for(32 * rows * (n - i0)), detail::threads_per_block, 0,
                                      detail::stream()>>>(dots, qkv, w, rows, n, HD, i0);
        SGT_CUDA_LAUNCHED(gate_dots_kernel);
    }
    detail::gate_scan_kernel<<<unsigned(threads), detail::threads_per_block, 0, detail::stream()>>>(
        s, g, run, dots, c, start, len, T_, n, i0, theta, hard);
    SGT_CUDA_LAUNCHED(gate_scan_kernel);
}

template <class T>
void gate_forward(cuda be, T* s, T* g, const T* qkv, const T* w, const T* c, int B, int T_, int n, int HD, int i0,
                  double theta, bool hard) {
    gate_forward_at(be, s, g, static_cast<accum_t<T>*>(nullptr), qkv, w, c, nullptr, nullptr, B, T_, n, HD, i0, theta,
                    hard);
}

template <class T>
void gate_backward(cuda, T* dqkv, T* dw, T* dc, const T* ds, const T* s, const T* qkv, const T* w, int B, int T_,
                   int n, int HD, int i0, double ds_add) {
    using A = accum_t<T>;
    const std::int64_t rows = std::int64_t(B) * T_;
    fill_zero(cuda{}, dqkv, rows * 3 * n * HD);
    const int ng = n - i0;
    if (rows <= 0 || ng <= 0) return;
    A* dz = detail::context().scratch<A>(detail::slot_gate, 2 * rows * ng);
    A* E = dz + rows * ng;
    detail::gate_backward_scan_kernel<T><<<unsigned(std::int64_t(B) * ng), detail::threads_per_block, 0,
                                           detail::stream()>>>(dz, E, ds, s, T_, n, i0, ds_add);
    SGT_CUDA_LAUNCHED(gate_backward_scan_kernel);
    detail::gate_backward_rows_kernel<T><<<detail::blocks_for(rows * ng * HD), detail::threads_per_block, 0,
                                           detail::stream()>>>(dqkv, dz, E, w, rows, n, HD, i0);
    SGT_CUDA_LAUNCHED(gate_backward_rows_kernel);
    detail::gate_backward_params_kernel<<<dim3(unsigned(ng), unsigned(2 * HD + 1)), detail::threads_per_block, 0,
                                           detail::stream()>>>(
        dw, dc, dz, E, qkv, rows, n, HD, i0);
    SGT_CUDA_LAUNCHED(gate_backward_params_kernel);
}

}  // namespace sgt
