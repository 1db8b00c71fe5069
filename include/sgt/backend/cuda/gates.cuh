// sgt/backend/cuda/gates.cuh: the learned head gate of GATES.md Sec. 1-2 on the device (backend/cpu/gates.hpp
// gives the formulas and shapes). The forward takes the dot products w_q · q and w_k · k of every position at
// once (a warp each); the prefix mean is then a running sum of the scalars w_k · k_u, so one thread walks the
// positions of one (sequence, head) in order; the parameter gradients are reduced per element over (b, t) by one
// block each, in a fixed order (deterministic).
#pragma once

#include <cub/block/block_reduce.cuh>

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
    for (std::int64_t warp = (blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x) / 32; warp < rows * ng; warp += warps) {
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

// One thread per (b, i): s and g of head i along the positions of sequence b (gate_forward_at's arguments), from
// the dots: the running key sum, the prefix mean, the sigmoid and the threshold.
template <class T>
__global__ void gate_scan_kernel(T* s, T* g, accum_t<T>* run, const accum_t<T>* dots, const T* c,
                                 const std::int32_t* start, const std::int32_t* len, int B, int T_, int n, int i0,
                                 double theta, bool hard) {
    using A = accum_t<T>;
    const std::int64_t id = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x;
    if (id >= std::int64_t(B) * n) return;
    const int b = int(id / n), i = int(id % n), ng = n - i0;
    if (i < i0) {
        for (int t = 0; t < T_; ++t) {
            const std::int64_t o = (std::int64_t(b) * T_ + t) * n + i;
            s[o] = g[o] = store<T>(A(1));
        }
        return;
    }
    const std::int64_t p0 = start ? start[b] : 0;
    const int kept = len ? len[b] : T_;
    const A bias = load(c[i - i0]);
    A sum = run ? run[id] : A(0);
    for (int t = 0; t < T_; ++t) {
        const std::int64_t r = std::int64_t(b) * T_ + t, o = r * n + i;
        const A* d = dots + 2 * (r * ng + (i - i0));
        sum += d[1];
        if (run && t + 1 == kept) run[id] = sum;
        const A z = d[0] + sum / A(p0 + t + 1) + bias;
        const A sig = A(1) / (A(1) + exp(-z));
        s[o] = store<T>(sig);
        g[o] = store<T>(hard && double(sig) < theta ? A(0) : sig);
    }
}

// One thread per (b, j), j a gated head: dz and the suffix sums E (scratch, (B, T, ng) each), dq and dk.
template <class T>
__global__ void gate_backward_rows_kernel(T* dqkv, accum_t<T>* dz, accum_t<T>* E, const T* ds, const T* s,
                                          const T* w, int B, int T_, int n, int HD, int i0, double ds_add) {
    using A = accum_t<T>;
    const int ng = n - i0;
    const std::int64_t id = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x;
    if (id >= std::int64_t(B) * ng) return;
    const int b = int(id / ng), j = int(id % ng), i = i0 + j;
    const std::int64_t row = 3 * std::int64_t(n) * HD;
    const T* wq = w + std::int64_t(j) * 2 * HD;
    const T* wk = wq + HD;
    A e = 0;
    for (int t = T_ - 1; t >= 0; --t) {
        const std::int64_t r = std::int64_t(b) * T_ + t, o = r * n + i, p = r * ng + j;
        const A sv = load(s[o]);
        const A z = (load(ds[o]) + A(ds_add)) * sv * (A(1) - sv);
        e += z / A(t + 1);
        dz[p] = z;
        E[p] = e;
        T* dq = dqkv + r * row + std::int64_t(i) * HD;
        T* dk = dq + std::int64_t(n) * HD;
        for (int d = 0; d < HD; ++d) {
            dq[d] = store<T>(z * load(wq[d]));
            dk[d] = store<T>(e * load(wk[d]));
        }
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
    detail::gate_scan_kernel<<<detail::blocks_for(threads), detail::threads_per_block, 0, detail::stream()>>>(
        s, g, run, dots, c, start, len, B, T_, n, i0, theta, hard);
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
    detail::gate_backward_rows_kernel<<<detail::blocks_for(std::int64_t(B) * ng), detail::threads_per_block, 0,
                                         detail::stream()>>>(
        dqkv, dz, E, ds, s, w, B, T_, n, HD, i0, ds_add);
    SGT_CUDA_LAUNCHED(gate_backward_rows_kernel);
    detail::gate_backward_params_kernel<<<dim3(unsigned(ng), unsigned(2 * HD + 1)), detail::threads_per_block, 0,
                                           detail::stream()>>>(
        dw, dc, dz, E, qkv, rows, n, HD, i0);
    SGT_CUDA_LAUNCHED(gate_backward_params_kernel);
}

}  // namespace sgt
