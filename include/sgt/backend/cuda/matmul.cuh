// sgt/backend/cuda/matmul.cuh: the linear layer y = x Wᵀ (weights stored (out, in), as PyTorch's Linear),
// forward and backward, and the batched products of the attention core, all through cuBLASLt.
//
// fp32 runs with CUBLAS_COMPUTE_32F (TF32 off: the parity precision), bf16 with bf16 inputs and outputs and
// fp32 accumulation, double with CUBLAS_COMPUTE_64F. A product's descriptors, layouts and chosen algorithm
// are made once per shape, type and pointer alignment and reused from a per-thread cache.
//
// cuBLASLt is column-major; a row-major (r, c) matrix is the column-major (c, r) matrix of the same memory,
// so each row-major product below is written as the column-major product of the transposes.
#pragma once

#include <cublasLt.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <tuple>
#include <type_traits>
#include <vector>

#include "sgt/backend/cuda/backend.cuh"

namespace sgt {

namespace detail {

template <class T>
constexpr cudaDataType_t cuda_data_type() {
    if constexpr (std::is_same_v<T, float>) return CUDA_R_32F;
    else if constexpr (std::is_same_v<T, double>) return CUDA_R_64F;
    else {
        static_assert(std::is_same_v<T, __nv_bfloat16>, "cuda backend: matmul supports float, double and bf16");
        return CUDA_R_16BF;
    }
}

// The type of gemm's α and β for stored type T (cuBLASLt's scale type: double for double, else float).
template <class T>
using gemm_scale_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

// Calls f(std::type_identity<T>{}) with the stored type T whose cuBLASLt data type is `type` (the inverse of
// cuda_data_type<T>).
template <class F>
decltype(auto) with_stored_type(cudaDataType_t type, F&& f) {
    if (type == CUDA_R_16BF) return f(std::type_identity<__nv_bfloat16>{});
    if (type == CUDA_R_32F) return f(std::type_identity<float>{});
    if (type == CUDA_R_64F) return f(std::type_identity<double>{});
    fail("cuda backend: no stored type has the cuBLASLt data type {}", int(type));
}

// Largest power of two (up to 256) dividing the address: cuBLASLt picks kernels for the alignment it is told.
inline int pointer_alignment(const void* p) {
    const auto a = reinterpret_cast<std::uintptr_t>(p);
    int al = 256;
    while (al > 1 && (a % al)) al /= 2;
    return al;
}

// One column-major product D (m, n) = α op(A) op(B) + β D, batched with strides.
struct gemm_key {
    cudaDataType_t type;
    bool ta, tb, accumulate;
    int m, n, k, batch;
    std::int64_t lda, ldb, ldc, sa, sb, sc;
    int align_a, align_b, align_c;
    auto tie() const { return std::tie(type, ta, tb, accumulate, m, n, k, batch, lda, ldb, ldc, sa, sb, sc, align_a, align_b, align_c); }
    bool operator<(const gemm_key& o) const { return tie() < o.tie(); }
};

struct gemm_plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};  // what gemm runs: the heuristics' first choice, or tune_products's
    // The heuristics' choices, best first by their estimate (an array: nvcc 13 fails on a vector of algorithms).
    std::array<cublasLtMatmulAlgo_t, 8> candidates{};
    int found = 0;  // how many of candidates they made
    bool tuned = false;  // tune_products has looked at it

    gemm_plan() = default;
    gemm_plan(const gemm_plan&) = delete;
    gemm_plan& operator=(const gemm_plan&) = delete;
    ~gemm_plan() {
        if (a) cublasLtMatrixLayoutDestroy(a);
        if (b) cublasLtMatrixLayoutDestroy(b);
        if (c) cublasLtMatrixLayoutDestroy(c);
        if (op) cublasLtMatmulDescDestroy(op);
    }
};

inline cublasLtMatrixLayout_t make_layout(cudaDataType_t type, int rows, int cols, std::int64_t ld, int batch,
                                          std::int64_t stride) {
    cublasLtMatrixLayout_t l = nullptr;
    SGT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&l, type, std::uint64_t(rows), std::uint64_t(cols), ld));
    if (batch > 1) {
        SGT_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof(batch)));
        SGT_CUBLAS_CHECK(
            cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
    }
    return l;
}

// This thread's plans, one per product shape, type and alignment.
inline std::map<gemm_key, gemm_plan>& gemm_plans() {
    thread_local std::map<gemm_key, gemm_plan> plans;
    return plans;
}

// The heuristics' choices a plan keeps for tune_products to time.
inline constexpr int gemm_candidates = int(std::tuple_size_v<decltype(gemm_plan::candidates)>);

inline const gemm_plan& plan_for(const gemm_key& key) {
    auto& plans = gemm_plans();
    auto [it, inserted] = plans.try_emplace(key);
    gemm_plan& p = it->second;
    if (!inserted) return p;
    try {
        const bool dbl = key.type == CUDA_R_64F;
        const cublasComputeType_t compute = dbl ? CUBLAS_COMPUTE_64F : CUBLAS_COMPUTE_32F;
        const cudaDataType_t scale_type = dbl ? CUDA_R_64F : CUDA_R_32F;
        SGT_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.op, compute, scale_type));
        const cublasOperation_t ta = key.ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb = key.tb ? CUBLAS_OP_T : CUBLAS_OP_N;
        SGT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
        SGT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
        p.a = make_layout(key.type, key.ta ? key.k : key.m, key.ta ? key.m : key.k, key.lda, key.batch, key.sa);
        p.b = make_layout(key.type, key.tb ? key.n : key.k, key.tb ? key.k : key.n, key.ldb, key.batch, key.sb);
        p.c = make_layout(key.type, key.m, key.n, key.ldc, key.batch, key.sc);

        auto& ctx = context();
        cublasLtMatmulPreference_t pref = nullptr;
        SGT_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
        const std::uint64_t ws = ctx.workspace.size();
        const std::uint32_t aa = key.align_a, ab = key.align_b, ac = key.align_c;
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &aa, sizeof(aa));
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ab, sizeof(ab));
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ac, sizeof(ac));
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ac, sizeof(ac));
        std::array<cublasLtMatmulHeuristicResult_t, gemm_candidates> results{};
        int found = 0;
        const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(ctx.lt, p.op, p.a, p.b, p.c, p.c, pref,
                                                                 gemm_candidates, results.data(), &found);
        cublasLtMatmulPreferenceDestroy(pref);
        SGT_CUBLAS_CHECK(st);
        require(found > 0, "cuBLASLt: no algorithm for a {}x{}x{} product (batch {}, type {})", key.m, key.n, key.k,
                key.batch, int(key.type));
        p.found = found;
        for (int i = 0; i < found; ++i) p.candidates[std::size_t(i)] = results[std::size_t(i)].algo;
        p.algo = p.candidates[0];
    } catch (...) {
        plans.erase(it);
        throw;
    }
    return p;
}

// D (m, n) = alpha · op(A) op(B) + (accumulate ? C : 0), column-major, `batch` products at the given strides;
// C (null: D itself) has D's layout.
template <class T>
void gemm(bool ta, bool tb, int m, int n, int k, const T* A, std::int64_t lda, std::int64_t sa, const T* B,
          std::int64_t ldb, std::int64_t sb, T* D, std::int64_t ldd, std::int64_t sd, int batch, double alpha,
          bool accumulate, const T* C = nullptr) {
    if (m <= 0 || n <= 0 || batch <= 0) return;
    if (!C) C = D;
    const gemm_key key{cuda_data_type<T>(), ta, tb, accumulate, m, n, k, batch, lda, ldb, ldd, sa, sb, sd,
                       pointer_alignment(A), pointer_alignment(B), std::min(pointer_alignment(D), pointer_alignment(C))};
    const gemm_plan& p = plan_for(key);
    auto& ctx = context();
    using S = gemm_scale_t<T>;
    const S a = S(alpha), b = accumulate ? S(1) : S(0);
    if (k <= 0) {  // an empty sum: D = β C
        if (!accumulate) SGT_CUDA_CHECK(cudaMemsetAsync(D, 0, sizeof(T) * std::size_t(ldd) * n * batch, stream()));
        else if (C != D) SGT_CUDA_CHECK(cudaMemcpyAsync(D, C, sizeof(T) * std::size_t(ldd) * n * batch, cudaMemcpyDeviceToDevice, stream()));
        return;
    }
    SGT_CUBLAS_CHECK(cublasLtMatmul(ctx.lt, p.op, &a, A, p.a, B, p.b, &b, C, p.c, D, p.c, &p.algo,
                                    ctx.workspace.data(), ctx.workspace.size(), ctx.stream));
}

// The tunings of this thread's plans, in the order tune_products met them.
inline std::vector<product_tuning>& product_tuning_log() {
    thread_local std::vector<product_tuning> log;
    return log;
}

// Uniform values in [-1, 1) of type U, a hash of (seed, index): the operands tune_plan times on.
template <class U>
void tuning_fill(U* x, std::int64_t n, std::uint64_t seed) {
    for_each_index(x, n, [=] __device__(std::int64_t i) {
        return store<U>(2.0 * hash_uniform(seed, std::uint64_t(i)) - 1.0);
    });
}

// A 64-bit digest of a result's bits, independent of the order of the sum: two results with equal digests are
// equal bit for bit but with a chance of about 2^-64.
__global__ void tuning_digest_kernel(const std::uint16_t* x, std::int64_t n, unsigned long long* digest) {
    unsigned long long h = 0;
    for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
         i += std::int64_t(gridDim.x) * blockDim.x)
        h += mix64((std::uint64_t(i) << 16) ^ x[i]);
    atomicAdd(digest, h);
}

// tune_plan's measurement of a plan whose stored type is U, on operands at `mem` (a digest of D, then A, B, C and
// D of the plan's shape).
template <class U>
void time_candidates(product_tuning& t, const gemm_key& key, gemm_plan& p, std::byte* mem, std::size_t na,
                     std::size_t nb, std::size_t nd) {
    auto* digest = reinterpret_cast<unsigned long long*>(mem);
    U* A = reinterpret_cast<U*>(mem + 256);
    U *B = A + na, *C = B + nb, *D = C + nd;
    tuning_fill(A, std::int64_t(na), 1);
    tuning_fill(B, std::int64_t(nb), 2);
    tuning_fill(C, std::int64_t(nd), 3);
    auto digest_of_d = [&] {  // D's bits, as a digest
        const std::int64_t halves = std::int64_t(sizeof(U) * nd / 2);
        SGT_CUDA_CHECK(cudaMemsetAsync(digest, 0, sizeof(*digest), stream()));
        tuning_digest_kernel<<<std::min(blocks_for(halves), 1024u), threads_per_block, 0, stream()>>>(
            reinterpret_cast<const std::uint16_t*>(D), halves, digest);
        SGT_CUDA_LAUNCHED(tuning_digest_kernel);
        unsigned long long h = 0;
        SGT_CUDA_CHECK(cudaMemcpy(&h, digest, sizeof(h), cudaMemcpyDeviceToHost));
        return h;
    };
    auto& ctx = context();
    const gemm_scale_t<U> alpha = 1, beta = key.accumulate ? 1 : 0;
    auto run = [&](const cublasLtMatmulAlgo_t& algo) {
        return cublasLtMatmul(ctx.lt, p.op, &alpha, A, p.a, B, p.b, &beta, C, p.c, D, p.c, &algo,
                              ctx.workspace.data(), ctx.workspace.size(), stream());
    };
    const device_event start, stop;
    // A product's time as a step sees it: runs back to back (as in a replayed graph), 8 between two events, the
    // median of 5 such samples after 2 runs of warm-up, divided by 8.
    auto median_ms = [&](const cublasLtMatmulAlgo_t& algo) {
        constexpr int runs = 8;
        for (int i = 0; i < 2; ++i) SGT_CUBLAS_CHECK(run(algo));
        std::array<float, 5> ms{};
        for (float& m : ms) {
            SGT_CUDA_CHECK(cudaEventRecord(start, stream()));
            for (int i = 0; i < runs; ++i) SGT_CUBLAS_CHECK(run(algo));
            SGT_CUDA_CHECK(cudaEventRecord(stop, stream()));
            SGT_CUDA_CHECK(cudaEventSynchronize(stop));
            SGT_CUDA_CHECK(cudaEventElapsedTime(&m, start, stop));
        }
        std::sort(ms.begin(), ms.end());
        return double(ms[2]) / runs;
    };
    SGT_CUBLAS_CHECK(run(p.candidates[0]));
    const unsigned long long first = digest_of_d();
    t.first_ms = t.chosen_ms = median_ms(p.candidates[0]);
    for (std::size_t i = 1; i < std::size_t(p.found); ++i) {
        SGT_CUDA_CHECK(cudaMemsetAsync(D, 0xff, sizeof(U) * nd, stream()));  // NaNs: a candidate must write all of D
        if (run(p.candidates[i]) != CUBLAS_STATUS_SUCCESS) continue;  // not for this workspace or shape
        if (digest_of_d() != first) continue;
        ++t.identical;
        const double ms = median_ms(p.candidates[i]);
        if (ms < t.chosen_ms) t.chosen_ms = ms, t.chosen = int(i);
    }
    p.algo = p.candidates[std::size_t(t.chosen)];
}

// One plan's tuning (tune_products): each candidate runs once on random operands of the plan's shape, and those
// whose result equals the first candidate's bit for bit (by their digests) are timed (median_ms: back to back, as in
// a step); the fastest is kept.
// Two algorithms' results differ where they add a product's terms in another order (a split of the k sum, as
// cuBLASLt's split-K), which random operands of the whole shape show at almost every element; equal bits there are
// taken as the same order, and so the same bits on any operands (the GPU tests check it on others).
inline product_tuning tune_plan(const gemm_key& key, gemm_plan& p) {
    return with_stored_type(key.type, [&]<class U>(std::type_identity<U>) {
        product_tuning t{.m = key.m, .n = key.n, .k = key.k, .ta = key.ta, .tb = key.tb, .accumulate = key.accumulate,
                         .element_bytes = int(sizeof(U)), .candidates = p.found, .identical = 1};
        if (key.batch != 1) {
            t.skipped = "batched";
            return t;
        }
        if (p.found < 2) {
            t.skipped = "one algorithm";
            return t;
        }
        const std::size_t na = std::size_t(key.lda) * std::size_t(key.ta ? key.m : key.k);
        const std::size_t nb = std::size_t(key.ldb) * std::size_t(key.tb ? key.k : key.n);
        const std::size_t nd = std::size_t(key.ldc) * std::size_t(key.n);
        const std::size_t bytes = 256 + sizeof(U) * (na + nb + 2 * nd);  // D's digest, then A, B, C and D
        if (bytes > (std::size_t(512) << 20)) {
            t.skipped = "operands above 512 MiB";
            return t;
        }
        // Allocated here, not as a device_buffer: the operands live only while the plan is tuned and are not
        // counted with the model's memory, and a refusal skips the tuning instead of failing it.
        std::byte* mem = nullptr;
        if (cudaMalloc(&mem, bytes) != cudaSuccess) {
            (void)cudaGetLastError();  // a refusal here is not an error of a later call
            t.skipped = "no device memory for its operands";
            return t;
        }
        struct cuda_free {
            void operator()(std::byte* q) const { cudaFree(q); }
        };
        std::unique_ptr<std::byte, cuda_free> held(mem);  // freed if the measurement throws
        time_candidates<U>(t, key, p, mem, na, nb, nd);
        SGT_CUDA_CHECK(cudaFree(held.release()));
        return t;
    });
}

}  // namespace detail

void tune_products(cuda) {
    for (auto& [key, plan] : detail::gemm_plans()) {
        if (plan.tuned) continue;
        plan.tuned = true;
        const auto start = std::chrono::steady_clock::now();
        product_tuning t = detail::tune_plan(key, plan);
        t.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        detail::product_tuning_log().push_back(t);
    }
}

std::vector<product_tuning> product_tunings(cuda) { return detail::product_tuning_log(); }

// out (N, O) = in (N, I) · w (O, I)ᵀ, plus `add` (N, O) where given (cuBLASLt's C input: a residual added in the
// product's epilogue); with accumulate, out += instead.
// Column-major: outᵀ (O, N) = wᵀ-view(I, O)ᵀ · inᵀ-view (I, N).
template <class T>
void matmul_forward(cuda, T* out, const T* in, const T* w, int N, int I, int O, bool accumulate, const T* add) {
    detail::gemm(true, false, O, N, I, w, I, 0, in, I, 0, out, O, 0, 1, 1.0, accumulate || add, add);
}

// din (N, I) += dout · w;  dw (O, I) += doutᵀ · in (each = instead where `ow` says: β = 0, nothing read).
// Either gradient output may be null to skip it.
template <class T>
void matmul_backward(cuda, T* din, T* dw, const T* dout, const T* in, const T* w, int N, int I, int O, overwrite ow) {
    if (din) detail::gemm(false, false, I, N, O, w, I, 0, dout, O, 0, din, I, 0, 1, 1.0, !ow.din);
    if (dw) detail::gemm(false, true, I, O, N, in, I, 0, dout, O, 0, dw, I, 0, 1, 1.0, !ow.dw);
}

}  // namespace sgt
