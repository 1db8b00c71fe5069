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
// composition's but for the order of each dot product's sum. The kernel is a programmatic dependent launch
// (backend.cuh): it prefetches its first weight rows into L2 while the kernel before it ends. From 5 to 32 rows a
// thin product with its norm (a loop pass's q, k and v over a few heads) takes a second kernel of the same plan on
// the tensor cores (few_rows_tc_kernel, bf16); more rows, other products, unaligned rows, or
// set_fuse_few_rows(false): the composition itself.
#pragma once

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include <mma.h>

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
    int units;    // outputs of width 1: columns of the product or activation, or q/k/v pairs (3·n·HD/2)
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

// Where output unit u of a product lies when a unit is `width` outputs (1 on the CUDA cores, 16 on the tensor
// cores): its first output `col` (a column of the product or the activation; for q/k/v the pair index j within
// head `head` of section `sec`: q, k or v) and its first weight row w0, with the row that pairs with it in w1:
// SwiGLU's same row of w3, q/k/v's row HD/2 further (RoPE's partner), none for a plain product.
template <class T>
struct few_rows_unit {
    const T* w0;
    const T* w1;
    int col, sec, head;
};

template <few_rows_epilogue E, class T>
__device__ inline few_rows_unit<T> few_rows_unit_at(const few_rows_args<T>& p, int u, int width) {
    few_rows_unit<T> at{nullptr, nullptr, width * u, 0, 0};
    if constexpr (E == few_rows_epilogue::qkv) {
        const int half = p.HD / 2, per_head = half / width;
        at.sec = u / (p.n * per_head);
        at.head = (u / per_head) % p.n;
        at.col = width * (u % per_head);
        at.w0 = p.w0 + (std::int64_t(at.sec * p.n + at.head) * p.HD + at.col) * p.I;
        at.w1 = at.w0 + std::int64_t(half) * p.I;
    } else {
        at.w0 = p.w0 + std::int64_t(at.col) * p.I;
        if constexpr (E == few_rows_epilogue::swiglu) at.w1 = p.w1 + std::int64_t(at.col) * p.I;
    }
    return at;
}

// What follows a few-row product, for row r: output c of unit `at` (its sums d0 and d1, from w0 and w1) rounded to
// T as the separate ops would see them, then written as the op after the product would write them. Plain: output
// column at.col + c (plus `add`); SwiGLU: that column of the activation; q/k/v: elements j and j + HD/2 of its
// head of q, k or v (j = at.col + c), rotated for q and k, and for k and v also written into the cache slot at the
// row's position.
template <few_rows_epilogue E, class T>
__device__ inline void few_rows_store(const few_rows_args<T>& p, int r, const few_rows_unit<T>& at, int c,
                                      accum_t<T> d0, accum_t<T> d1) {
    using A = accum_t<T>;
    const int j = at.col + c, sec = at.sec, head = at.head;
    if constexpr (E == few_rows_epilogue::plain) {
        const std::int64_t o = std::int64_t(r) * p.O + j;
        p.out[o] = store<T>(d0 + (p.add ? load(p.add[o]) : A(0)));
    } else if constexpr (E == few_rows_epilogue::swiglu) {
        const A g = load(store<T>(d0)), up = load(store<T>(d1));  // as swiglu_forward reads them
        p.out[std::int64_t(r) * p.units + j] = store<T>(g / (A(1) + exp(-g)) * up);
    } else {
        const int half = p.HD / 2;
        T v0 = store<T>(d0), v1 = store<T>(d1);
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
            T* slot = (sec == 1 ? p.k_cache : p.v_cache) + ((std::int64_t(r) * p.n + head) * p.ctx + pos) * p.HD;
            slot[j] = v0;
            slot[j + half] = v1;
        }
    }
}

// A few-row kernel's first step: rows 0..rows of x (row r at x + r·x_ld) into shared memory (row r at xs + r·ld),
// normalised by RMSNorm's arithmetic and rounding to T (one warp a row; norm: its weights) or copied as they are.
// x may be xs itself (the rows already copied there): each lane rewrites only the packs it has read.
template <class T, int W, bool Norm>
__device__ inline void few_rows_stage(const few_rows_args<T>& p, int rows, const T* x_rows, int x_ld, const T* norm,
                                      T* xs, int ld) {
    using A = accum_t<T>;
    using P = pack<T, W>;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32, packs = p.I / W;
    for (int r = warp; r < rows; r += warps) {
        const P* x = reinterpret_cast<const P*>(x_rows + std::int64_t(r) * x_ld);
        P* dst = reinterpret_cast<P*>(xs + std::int64_t(r) * ld);
        if constexpr (Norm) {
            const P* wn = reinterpret_cast<const P*>(norm);
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
                dst[c] = y;
            }
        } else {
            for (int c = lane; c < packs; c += 32) dst[c] = x[c];
        }
    }
}

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
    const int first = blockIdx.x * few_rows_warps + warp, stride = gridDim.x * few_rows_warps;
    // Each lane pulls its share of a unit's rows into L2, in lines of 128 bytes.
    const int lines = int(std::int64_t(p.I) * sizeof(T) / 128);
    auto prefetch = [&](int u) {
        if (u >= p.units) return;
        const few_rows_unit<T> at = few_rows_unit_at<E>(p, u, 1);
        for (int l = lane; l < lines; l += 32) {
            prefetch_l2(reinterpret_cast<const char*>(at.w0) + 128 * l);
            if (at.w1) prefetch_l2(reinterpret_cast<const char*>(at.w1) + 128 * l);
        }
    };
    // The weights are not written by the kernel before this one: their first rows are fetched while it ends.
    prefetch(first);
    wait_for_prior_grids();
    allow_dependents();
    few_rows_stage<T, W, Norm>(p, p.N, p.x, p.I, p.norm, xs, p.I);
    __syncthreads();

    for (int u = first; u < p.units; u += stride) {
        const few_rows_unit<T> at = few_rows_unit_at<E>(p, u, 1);
        prefetch(u + stride);  // the next unit's rows load while this one's are summed
        constexpr bool two = E != few_rows_epilogue::plain;
        A d0[R] = {}, d1[R] = {};
#pragma unroll 4
        for (int c = lane; c < packs; c += 32) {
            const P a = reinterpret_cast<const P*>(at.w0)[c];
            P b{};
            if constexpr (two) b = reinterpret_cast<const P*>(at.w1)[c];
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
            few_rows_store<E>(p, r, at, 0, d0[r], d1[r]);
        }
    }
}

// Tensor-core few-row products: 5 to few_rows_tc_max rows of a thin product (at most
// set_few_rows_tensor_cores weights: SGT's loop-pass products over |S| heads) in bf16. On the CUDA cores 32 rows
// cost a pass of arithmetic over the weights per row and were far slower than cuBLASLt ("Decode experiments not
// kept"); here WMMA's 16 x 16 x 16 products take 16 rows at a time, so the kernel does in one launch what the
// composition does in two or three (RMSNorm, the product, the epilogue op). A block takes one tile of 16 rows (17
// to 32 rows are two blocks a unit, grid.y, which took a gpt2 loop pass's q/k/v at batch 32 from 9.8 to 7.5 µs on
// an H100 against one block of both tiles; docs/BENCHMARKS.md) and output tiles of 16
// columns (a unit: 16 weight rows, or 16 of w1 and the same 16 of w3, or 16 of a head's q, k or v with the 16 that
// RoPE pairs them with). Its first unit's weights and the norm's are copied into shared memory while the kernel
// before this one ends (they are not written by it); then its rows are copied there, all at once, and normalised
// in place as few_rows_stage does, zero rows filling the tile. Its warps split a unit's sum along the
// inputs (16 at a time, warp w taking steps w, w + 8, ...), and after a barrier each thread adds one output's
// partial sums in warp order and writes it as few_rows_store does. So the results are the composition's but for
// the order of the sums, and the same run after run.
constexpr int few_rows_tc_max = 32;  // rows: two blocks of a 16-row tile
constexpr int few_rows_tc_width = 16;  // outputs a unit: one tile's columns
constexpr int few_rows_tc_warps = 8, few_rows_tc_threads = 32 * few_rows_tc_warps;

// Shared memory of the tensor-core kernel: a unit's NT weight tiles and 16 staged rows, each row of I + 8 elements
// (the 8 against bank conflicts of the fragment loads), then each warp's NT accumulator tiles of 16 x 16 floats and
// the norm's I weights.
__host__ __device__ inline std::size_t few_rows_tc_rows_bytes(int rows, int I) {
    return (std::size_t(rows) * (I + 8) * 2 + 127) / 128 * 128;
}
inline std::size_t few_rows_tc_smem(int NT, int I) {
    return few_rows_tc_rows_bytes(16 * NT, I) + few_rows_tc_rows_bytes(16, I) +
           std::size_t(few_rows_tc_warps) * NT * 256 * sizeof(float) + std::size_t(I) * 2;
}

// Calls f(row, c) for packs c = 0..packs of rows 0..rows, the block's threads taking them in turn: a division for a
// thread's first (row, c), then steps of the block's size, not a division in every turn.
template <class F>
__device__ inline void few_rows_tc_each_pack(int rows, int packs, F f) {
    const int step_rows = few_rows_tc_threads / packs, step_c = few_rows_tc_threads % packs;
    int row = threadIdx.x / packs, c = threadIdx.x % packs;
    while (row < rows) {
        f(row, c);
        row += step_rows;
        c += step_c;
        if (c >= packs) c -= packs, ++row;  // step_c < packs
    }
}

template <few_rows_epilogue E>
__global__ void __launch_bounds__(few_rows_tc_threads) few_rows_tc_kernel(const few_rows_args<__nv_bfloat16> p) {
    using T = __nv_bfloat16;
    namespace wmma = nvcuda::wmma;
    constexpr int NT = E == few_rows_epilogue::plain ? 1 : 2;  // weight tiles a unit
    constexpr int W = pack_width<T>;
    extern __shared__ __align__(128) unsigned char few_rows_tc_smem_[];
    const int ld = p.I + 8, warp = threadIdx.x / 32, steps = p.I / 16, packs = p.I / W;
    T* ws = reinterpret_cast<T*>(few_rows_tc_smem_);  // (NT·16, ld): the unit's weight rows
    T* xs = reinterpret_cast<T*>(few_rows_tc_smem_ + few_rows_tc_rows_bytes(16 * NT, p.I));  // (16, ld)
    float* red = reinterpret_cast<float*>(few_rows_tc_smem_ + few_rows_tc_rows_bytes(16 * NT, p.I) +
                                          few_rows_tc_rows_bytes(16, p.I));
    T* nw = reinterpret_cast<T*>(red + few_rows_tc_warps * NT * 256);  // (I) the norm's weights
    const int units = p.units / few_rows_tc_width;
    const int r0 = 16 * blockIdx.y, rows = min(p.N - r0, 16);  // this block's rows: grid.y splits them
    // Unit u's weight tiles into ws (this thread's copies; it waits for them with async_copy_wait).
    auto load_unit = [&](int u) {
        const few_rows_unit<T> at = few_rows_unit_at<E>(p, u, few_rows_tc_width);
        few_rows_tc_each_pack(NT * 16, packs, [&](int row, int c) {  // row t·16 + r: row r of tile t
            async_copy16(ws + std::int64_t(row) * ld + c * W,
                         (row < 16 ? at.w0 : at.w1) + std::int64_t(row % 16) * p.I + c * W);
        });
        return at;
    };
    few_rows_unit<T> at = load_unit(blockIdx.x);  // the grid has at most `units` blocks
    for (int c = threadIdx.x; c < packs; c += few_rows_tc_threads) async_copy16(nw + c * W, p.norm + c * W);
    wait_for_prior_grids();
    allow_dependents();
    // The rows, written by the kernel before: every copy in flight at once, then normalised in place (a warp's
    // rows one after another, from shared memory).
    few_rows_tc_each_pack(rows, packs, [&](int r, int c) {
        async_copy16(xs + std::int64_t(r) * ld + c * W, p.x + std::int64_t(r0 + r) * p.I + c * W);
    });
    pack<T, W> zero;
#pragma unroll
    for (int k = 0; k < W; ++k) zero.v[k] = __float2bfloat16(0.0f);
    few_rows_tc_each_pack(16 - rows, packs, [&](int r, int c) {  // the tile's rows past the block's
        reinterpret_cast<pack<T, W>*>(xs + std::int64_t(rows + r) * ld)[c] = zero;
    });
    async_copy_wait();
    __syncthreads();
    few_rows_stage<T, W, true>(p, rows, xs, ld, nw, xs, ld);

    for (int u = blockIdx.x; u < units; u += gridDim.x) {
        if (u != blockIdx.x) at = load_unit(u);
        async_copy_wait();
        __syncthreads();  // the unit's weights and (first) the staged rows
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[NT];
#pragma unroll
        for (int t = 0; t < NT; ++t) wmma::fill_fragment(acc[t], 0.0f);
        for (int k = warp; k < steps; k += few_rows_tc_warps) {
            // B (16 inputs x 16 outputs) column-major is 16 rows of W: element (i, o) at ws[o·ld + i].
            wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b[NT];
#pragma unroll
            for (int t = 0; t < NT; ++t) wmma::load_matrix_sync(b[t], ws + std::int64_t(16 * t) * ld + 16 * k, ld);
            wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
            wmma::load_matrix_sync(a, xs + 16 * k, ld);
#pragma unroll
            for (int t = 0; t < NT; ++t) wmma::mma_sync(acc[t], a, b[t], acc[t]);
        }
#pragma unroll
        for (int t = 0; t < NT; ++t)
            wmma::store_matrix_sync(red + (warp * NT + t) * 256, acc[t], 16, wmma::mem_row_major);
        __syncthreads();  // every warp's sums; ws free for the next unit
        for (int i = threadIdx.x; i < rows * 16; i += few_rows_tc_threads) {
            const int r = i / 16, c = i % 16;
            float d[2] = {0.0f, 0.0f};
            for (int v = 0; v < few_rows_tc_warps; ++v)
#pragma unroll
                for (int t = 0; t < NT; ++t) d[t] += red[(v * NT + t) * 256 + r * 16 + c];
            few_rows_store<E>(p, r0 + r, at, c, d[0], d[1]);
        }
        __syncthreads();  // red is the next unit's
    }
}

// Which kernel takes a product of N rows of I elements against `weights` weight elements whose outputs come in
// whole tiles of 16 (tiles): the CUDA-core kernel (1 to few_rows_max rows), the tensor-core one (bf16, up to
// few_rows_tc_max rows of a thin product that it fuses with an op before or after: a plain product without a norm
// is one cuBLASLt call, and on an H100 char_small's W_O at batch 32 was faster so; docs/BENCHMARKS.md), or
// neither (the composition).
enum class few_rows_path { composed, cuda_cores, tensor_cores };

template <class T>
few_rows_path few_rows_choice(int N, int I, std::int64_t weights, bool tiles, bool fuses,
                              std::initializer_list<const void*> ptrs) {
    constexpr int W = pack_width<T>;
    bool ok = context().fuse_few_rows && N >= 1 && I % W == 0;
    for (const void* ptr : ptrs) ok = ok && (!ptr || aligned16(ptr));
    if (!ok) return few_rows_path::composed;
    if (N <= few_rows_max) {
        const bool fits = std::size_t(N) * I * sizeof(T) <= few_rows_smem_max;
        return fits ? few_rows_path::cuda_cores : few_rows_path::composed;
    }
    if constexpr (std::is_same_v<T, __nv_bfloat16>) {
        bool tc = N <= few_rows_tc_max && tiles && fuses && I % 16 == 0 && weights <= context().few_rows_tc_weights &&
                  few_rows_tc_smem(2, I) <= smem_optin_limit();
        for (const void* ptr : ptrs) tc = tc && reinterpret_cast<std::uintptr_t>(ptr) % 32 == 0;  // WMMA's loads
        if (tc) return few_rows_path::tensor_cores;
    }
    return few_rows_path::composed;
}

template <few_rows_epilogue E>
void launch_few_rows_tc(const few_rows_args<__nv_bfloat16>& p) {
    constexpr int NT = E == few_rows_epilogue::plain ? 1 : 2;
    auto* kernel = few_rows_tc_kernel<E>;
    static const bool opted_in = (allow_smem(kernel, smem_optin_limit()), true);  // may exceed 48 KB; once
    (void)opted_in;
    const dim3 grid(unsigned(std::min(p.units / few_rows_tc_width, 4 * multiprocessors())), unsigned((p.N + 15) / 16));
    launch_dependent(kernel, grid, few_rows_tc_threads, few_rows_tc_smem(NT, p.I), p);
}

// The launch of a product that few_rows_choice gave a kernel.
template <bool Norm, few_rows_epilogue E, class T>
void launch_few_rows(few_rows_path path, const few_rows_args<T>& p) {
    if (path == few_rows_path::tensor_cores) {
        // few_rows_choice gives this path to bf16 products with their norm only (`fuses`).
        if constexpr (std::is_same_v<T, __nv_bfloat16> && Norm) {
            launch_few_rows_tc<E>(p);
        } else {
            fail("launch_few_rows: the tensor-core kernel takes bf16 products with their norm only");
        }
        return;
    }
    const int blocks = std::min((p.units + few_rows_warps - 1) / few_rows_warps, 4 * multiprocessors());
    const std::size_t smem = std::size_t(p.N) * p.I * sizeof(T);
    constexpr int W = pack_width<T>;
    if (p.N == 1) launch_dependent(few_rows_kernel<T, W, 1, Norm, E>, blocks, few_rows_threads, smem, p);
    else launch_dependent(few_rows_kernel<T, W, few_rows_max, Norm, E>, blocks, few_rows_threads, smem, p);
}

}  // namespace detail

template <class T>
bool few_rows_on_tensor_cores(cuda, int N, int I, std::int64_t weights) {
    return detail::few_rows_choice<T>(N, I, weights, true, true, {}) == detail::few_rows_path::tensor_cores;
}

template <class T>
void normed_matmul_forward(cuda, T* out, T* a, T* rstd, const T* x, const T* norm, const T* w, int N, int I, int O,
                           double eps, bool accumulate) {
    if (N <= 0 || O <= 0) return;
    const auto path = detail::few_rows_choice<T>(N, I, std::int64_t(O) * I, O % 16 == 0, norm != nullptr, {x, norm, w});
    if (path == detail::few_rows_path::composed) {
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
    if (norm) detail::launch_few_rows<true, detail::few_rows_epilogue::plain>(path, p);
    else detail::launch_few_rows<false, detail::few_rows_epilogue::plain>(path, p);
}

template <class T>
void normed_swiglu_forward(cuda, T* act, T* a, T* rstd, T* gate, T* up, const T* x, const T* norm, const T* w1,
                           const T* w3, int N, int C, int F, double eps) {
    if (N <= 0 || F <= 0) return;
    const auto path = detail::few_rows_choice<T>(N, C, 2 * std::int64_t(F) * C, F % 16 == 0, true,
                                                   {x, norm, w1, w3});
    if (path == detail::few_rows_path::composed) {
        rmsnorm_forward(cuda{}, a, rstd, x, norm, N, C, eps);
        matmul_forward(cuda{}, gate, a, w1, N, C, F);
        matmul_forward(cuda{}, up, a, w3, N, C, F);
        swiglu_forward(cuda{}, act, gate, up, N, F, F);
        return;
    }
    detail::few_rows_args<T> p{};
    p.x = x, p.norm = norm, p.eps = eps, p.N = N, p.I = C, p.w0 = w1, p.w1 = w3, p.units = F, p.out = act;
    detail::launch_few_rows<true, detail::few_rows_epilogue::swiglu>(path, p);
}

template <class T>
void normed_qkv_write_at(cuda, T* qkv, T* k_cache, T* v_cache, T* a, T* rstd, const T* x, const T* norm,
                         const T* w_qkv, const accum_t<T>* cos_table, const accum_t<T>* sin_table,
                         const std::int32_t* start, int B, int C, int n, int HD, int ctx, double eps) {
    if (B <= 0 || n <= 0) return;
    const auto path = HD % 2 != 0 ? detail::few_rows_path::composed
                                  : detail::few_rows_choice<T>(B, C, 3 * std::int64_t(n) * HD * C, HD % 32 == 0, true,
                                                               {x, norm, w_qkv});
    if (path == detail::few_rows_path::composed) {
        normed_matmul_forward(cuda{}, qkv, a, rstd, x, norm, w_qkv, B, C, 3 * n * HD, eps, false);
        rope_kv_write_at(cuda{}, qkv, k_cache, v_cache, cos_table, sin_table, start, B, 1, n, HD, ctx);
        return;
    }
    detail::few_rows_args<T> p{};
    p.x = x, p.norm = norm, p.eps = eps, p.N = B, p.I = C, p.w0 = w_qkv, p.units = 3 * n * (HD / 2), p.out = qkv;
    p.k_cache = k_cache, p.v_cache = v_cache, p.cos_table = cos_table, p.sin_table = sin_table, p.start = start;
    p.n = n, p.HD = HD, p.ctx = ctx;
    detail::launch_few_rows<true, detail::few_rows_epilogue::qkv>(path, p);
}

}  // namespace sgt
