// sgt/backend/cuda/decode_products.cuh: the normed products of a decode step (backend/cpu/decode.hpp says what
// each computes) as one kernel each for a few rows.
//
// A decode step multiplies one row per sequence by every weight matrix: at batch 1 a product reads its weights
// once and does nothing else, and a step of a few hundred such kernels is bound by their launches, not their
// bytes. So up to few_rows_max rows run as one kernel per product that also does what precedes it (the RMSNorm of
// its input) and what follows it (SwiGLU over the gate and up products, or RoPE and the cache write over q, k and
// v): one kernel where the training ops take three to five.
//
// The kernel: a block stages its input rows in shared memory (normalised, and rounded to T as rmsnorm_forward
// rounds them), then each warp takes output units: a unit is one weight row (a plain product), the same row of
// w1 and w3 (SwiGLU), or the rows j and j + HD/2 of one head's q, k or v (RoPE rotates that pair). The warp's
// lanes walk the rows in 16-byte packs against every input row, sum by shuffles, and lane 0 writes the unit's
// outputs, rounded to T before the epilogue as the separate ops would see them. So the results equal the
// composition's but for the order of each dot product's sum. More rows than few_rows_max, unaligned rows, or
// set_fuse_few_rows(false): the composition itself. The kernel is a programmatic dependent launch (backend.cuh):
// it prefetches its first weight rows into L2 while the kernel before it ends.
#pragma once

#include <cmath>
#include <cstdint>
#include <initializer_list>

#include "sgt/backend/cuda/backend.cuh"
#include "sgt/backend/cuda/rope.cuh"  // rotate_pair

namespace sgt {

namespace detail {

// Rows the fused kernel takes: its sums run on the CUDA cores, so each row more costs it a pass of arithmetic over
// the weights, while cuBLASLt's tensor-core product costs about the same from 1 row to 16. On an H200 at gpt2 size
// a decode step was as fast either way at 4 rows, and 3-5%, 10-11%, 16-17% and 19-20% faster composed at 5, 6, 7
// and 8 (docs/BENCHMARKS.md, "Where the few-row products stop"; char_small's smaller products were faster fused at
// 5 rows).
constexpr int few_rows_max = 4;
constexpr int few_rows_threads = 256, few_rows_warps = few_rows_threads / 32;
constexpr std::size_t few_rows_smem_max = 48 << 10;  // the staged input rows, without an opt-in

enum class few_rows_epilogue { plain, swiglu, qkv };

template <class T>
struct few_rows_args {
    const T* x;     // (N, I) input rows
    const T* norm;  // (I) RMSNorm weight, or null
    double eps;
    int N, I;
    const T* w0;  // (O, I) weights; SwiGLU: w1
    const T* w1;  // SwiGLU: w3
    int units;    // output units (see above)
    T* out;       // plain (N, O); SwiGLU (N, F); qkv (N, 3, n, HD)
    const T* add; // plain: added to the product (out itself when accumulating), or null
    int O;
    T* k_cache;  // qkv: the slot (N, n, ctx, HD), RoPE tables and positions
    T* v_cache;
    const accum_t<T>* cos_table;
    const accum_t<T>* sin_table;
    const std::int32_t* start;
    int n, HD, ctx;
};

// R: the most rows this instance takes, 1 or few_rows_max (a lane keeps R sums a unit). On an H200 at gpt2 size an
// instance for one row made a batch-1 decode step 3% faster than the 4-row instance, and one for two rows made a
// batch-2 step 5-8% slower (docs/BENCHMARKS.md, "Where the few-row products stop").
template <class T, int W, int R, bool Norm, few_rows_epilogue E>
__global__ void __launch_bounds__(few_rows_threads) few_rows_kernel(const few_rows_args<T> p) {
    using A = accum_t<T>;
    using P = pack<T, W>;
    extern __shared__ __align__(16) unsigned char few_rows_smem[];
    T* xs = reinterpret_cast<T*>(few_rows_smem);  // (N, I), as the product reads its input
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, packs = p.I / W;
    const int half = p.HD / 2, first = blockIdx.x * few_rows_warps + warp, stride = gridDim.x * few_rows_warps;
    // The weight rows of output unit u (r1: the second row of a pair, or null).
    auto rows = [&](int u, const T*& r0, const T*& r1, int& sec, int& head, int& j) {
        if constexpr (E == few_rows_epilogue::plain) {
            r0 = p.w0 + std::int64_t(u) * p.I;
        } else if constexpr (E == few_rows_epilogue::swiglu) {
            r0 = p.w0 + std::int64_t(u) * p.I;
            r1 = p.w1 + std::int64_t(u) * p.I;
        } else {  // unit (sec, head, j): rows j and j + HD/2 of head `head` of q, k or v
            sec = u / (p.n * half);
            head = (u / half) % p.n;
            j = u % half;
            r0 = p.w0 + (std::int64_t(sec * p.n + head) * p.HD + j) * p.I;
            r1 = r0 + std::int64_t(half) * p.I;
        }
    };
    // Each lane pulls its share of a unit's rows into L2, in lines of 128 bytes.
    const int lines = int(std::int64_t(p.I) * sizeof(T) / 128);
    auto prefetch = [&](int u) {
        if (u >= p.units) return;
        const T* r0 = nullptr;
        const T* r1 = nullptr;
        int sec = 0, head = 0, j = 0;
        rows(u, r0, r1, sec, head, j);
        for (int l = lane; l < lines; l += 32) {
            prefetch_l2(reinterpret_cast<const char*>(r0) + 128 * l);
            if (r1) prefetch_l2(reinterpret_cast<const char*>(r1) + 128 * l);
        }
    };
    // The weights are not written by the kernel before this one: their first rows are fetched while it ends.
    prefetch(first);
    wait_for_prior_grids();
    allow_dependents();
    if constexpr (Norm) {  // rmsnorm_forward's arithmetic, one warp per row
        const P* wn = reinterpret_cast<const P*>(p.norm);
        for (int r = warp; r < p.N; r += few_rows_warps) {
            const P* x = reinterpret_cast<const P*>(p.x + std::int64_t(r) * p.I);
            A ss = 0;
            for (int c = lane; c < packs; c += 32) {
                const P xv = x[c];
#pragma unroll
                for (int k = 0; k < W; ++k) ss += load(xv.v[k]) * load(xv.v[k]);
            }
            ss = warp_sum(ss);
            const A rs = load(store<T>(A(1.0 / sqrt(double(ss) / p.I + p.eps))));
            for (int c = lane; c < packs; c += 32) {
                const P xv = x[c], wv = wn[c];
                P y;
#pragma unroll
                for (int k = 0; k < W; ++k) y.v[k] = store<T>(load(xv.v[k]) * rs * load(wv.v[k]));
                reinterpret_cast<P*>(xs + std::int64_t(r) * p.I)[c] = y;
            }
        }
    } else {
        for (int i = threadIdx.x; i < p.N * packs; i += few_rows_threads)
            reinterpret_cast<P*>(xs)[i] = reinterpret_cast<const P*>(p.x)[i];
    }
    __syncthreads();

    for (int u = first; u < p.units; u += stride) {
        const T* r0 = nullptr;
        const T* r1 = nullptr;
        int sec = 0, head = 0, j = 0;
        rows(u, r0, r1, sec, head, j);
        prefetch(u + stride);  // the next unit's rows load while this one's are summed
        constexpr bool two = E != few_rows_epilogue::plain;
        A d0[R] = {}, d1[R] = {};
#pragma unroll 4
        for (int c = lane; c < packs; c += 32) {
            const P a = reinterpret_cast<const P*>(r0)[c];
            P b{};
            if constexpr (two) b = reinterpret_cast<const P*>(r1)[c];
#pragma unroll
            for (int r = 0; r < R; ++r) {
                if (r >= p.N) break;
                const P xv = reinterpret_cast<const P*>(xs + std::int64_t(r) * p.I)[c];
#pragma unroll
                for (int k = 0; k < W; ++k) {
                    d0[r] += load(xv.v[k]) * load(a.v[k]);
                    if constexpr (two) d1[r] += load(xv.v[k]) * load(b.v[k]);
                }
            }
        }
#pragma unroll
        for (int r = 0; r < R; ++r) {
            if (r >= p.N) break;
            d0[r] = warp_sum(d0[r]);
            if constexpr (two) d1[r] = warp_sum(d1[r]);
        }
        if (lane != 0) continue;
#pragma unroll
        for (int r = 0; r < R; ++r) {
            if (r >= p.N) break;
            if constexpr (E == few_rows_epilogue::plain) {
                const std::int64_t at = std::int64_t(r) * p.O + u;
                p.out[at] = store<T>(d0[r] + (p.add ? load(p.add[at]) : A(0)));
            } else if constexpr (E == few_rows_epilogue::swiglu) {
                const A g = load(store<T>(d0[r])), up = load(store<T>(d1[r]));  // as swiglu_forward reads them
                p.out[std::int64_t(r) * p.units + u] = store<T>(g / (A(1) + exp(-g)) * up);
            } else {
                T v0 = store<T>(d0[r]), v1 = store<T>(d1[r]);
                const std::int64_t pos = p.start[r];
                if (sec < 2) {  // RoPE on q and k, as rope_kv_write_kernel
                    const A c = p.cos_table[pos * half + j], s = p.sin_table[pos * half + j];
                    A a0 = load(v0), a1 = load(v1);
                    rotate_pair(a0, a1, c, s);
                    v0 = store<T>(a0);
                    v1 = store<T>(a1);
                }
                T* row = p.out + std::int64_t(r) * 3 * p.n * p.HD + std::int64_t(sec * p.n + head) * p.HD;
                row[j] = v0;
                row[j + half] = v1;
                if (sec > 0) {
                    T* slot = (sec == 1 ? p.k_cache : p.v_cache) +
                              ((std::int64_t(r) * p.n + head) * p.ctx + pos) * p.HD;
                    slot[j] = v0;
                    slot[j + half] = v1;
                }
            }
        }
    }
}

// Whether N rows of I elements can take the fused kernel: few enough, the rows in whole 16-byte packs.
template <class T>
bool few_rows_fit(int N, int I, std::initializer_list<const void*> ptrs) {
    constexpr int W = pack_width<T>;
    bool ok = context().fuse_few_rows && N >= 1 && N <= few_rows_max && I % W == 0 &&
              std::size_t(N) * I * sizeof(T) <= few_rows_smem_max;
    for (const void* ptr : ptrs) ok = ok && (!ptr || aligned16(ptr));
    return ok;
}

template <bool Norm, few_rows_epilogue E, class T>
void launch_few_rows(const few_rows_args<T>& p) {
    const int blocks = std::min((p.units + few_rows_warps - 1) / few_rows_warps, 4 * multiprocessors());
    const std::size_t smem = std::size_t(p.N) * p.I * sizeof(T);
    constexpr int W = pack_width<T>;
    if (p.N == 1) launch_dependent(few_rows_kernel<T, W, 1, Norm, E>, blocks, few_rows_threads, smem, p);
    else launch_dependent(few_rows_kernel<T, W, few_rows_max, Norm, E>, blocks, few_rows_threads, smem, p);
}

}  // namespace detail

template <class T>
void normed_matmul_forward(cuda, T* out, T* a, T* rstd, const T* x, const T* norm, const T* w, int N, int I, int O,
                           double eps, bool accumulate) {
    if (N <= 0 || O <= 0) return;
    if (!detail::few_rows_fit<T>(N, I, {x, norm, w})) {
        if (norm) {
            rmsnorm_forward(cuda{}, a, rstd, x, norm, N, I, eps);
            x = a;
        }
        matmul_forward(cuda{}, out, x, w, N, I, O, accumulate);
        return;
    }
    detail::few_rows_args<T> p{};
    p.x = x, p.norm = norm, p.eps = eps, p.N = N, p.I = I, p.w0 = w, p.units = O, p.out = out, p.O = O;
    p.add = accumulate ? out : nullptr;
    if (norm) detail::launch_few_rows<true, detail::few_rows_epilogue::plain>(p);
    else detail::launch_few_rows<false, detail::few_rows_epilogue::plain>(p);
}

template <class T>
void normed_swiglu_forward(cuda, T* act, T* a, T* rstd, T* gate, T* up, const T* x, const T* norm, const T* w1,
                           const T* w3, int N, int C, int F, double eps) {
    if (N <= 0 || F <= 0) return;
    if (!detail::few_rows_fit<T>(N, C, {x, norm, w1, w3})) {
        rmsnorm_forward(cuda{}, a, rstd, x, norm, N, C, eps);
        matmul_forward(cuda{}, gate, a, w1, N, C, F);
        matmul_forward(cuda{}, up, a, w3, N, C, F);
        swiglu_forward(cuda{}, act, gate, up, N, F, F);
        return;
    }
    detail::few_rows_args<T> p{};
    p.x = x, p.norm = norm, p.eps = eps, p.N = N, p.I = C, p.w0 = w1, p.w1 = w3, p.units = F, p.out = act;
    detail::launch_few_rows<true, detail::few_rows_epilogue::swiglu>(p);
}

template <class T>
void normed_qkv_write_at(cuda, T* qkv, T* k_cache, T* v_cache, T* a, T* rstd, const T* x, const T* norm,
                         const T* w_qkv, const accum_t<T>* cos_table, const accum_t<T>* sin_table,
                         const std::int32_t* start, int B, int C, int n, int HD, int ctx, double eps) {
    if (B <= 0 || n <= 0) return;
    if (HD % 2 != 0 || !detail::few_rows_fit<T>(B, C, {x, norm, w_qkv})) {
        normed_matmul_forward(cuda{}, qkv, a, rstd, x, norm, w_qkv, B, C, 3 * n * HD, eps, false);
        rope_kv_write_at(cuda{}, qkv, k_cache, v_cache, cos_table, sin_table, start, B, 1, n, HD, ctx);
        return;
    }
    detail::few_rows_args<T> p{};
    p.x = x, p.norm = norm, p.eps = eps, p.N = B, p.I = C, p.w0 = w_qkv, p.units = 3 * n * (HD / 2), p.out = qkv;
    p.k_cache = k_cache, p.v_cache = v_cache, p.cos_table = cos_table, p.sin_table = sin_table, p.start = start;
    p.n = n, p.HD = HD, p.ctx = ctx;
    detail::launch_few_rows<true, detail::few_rows_epilogue::qkv>(p);
}

}  // namespace sgt
