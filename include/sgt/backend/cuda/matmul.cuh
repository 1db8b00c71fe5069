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
#include <cstdint>
#include <map>
#include <tuple>

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
    cublasLtMatmulAlgo_t algo{};

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

inline const gemm_plan& plan_for(const gemm_key& key) {
    thread_local std::map<gemm_key, gemm_plan> plans;
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
        cublasLtMatmulHeuristicResult_t result{};
        int found = 0;
        const cublasStatus_t st =
            cublasLtMatmulAlgoGetHeuristic(ctx.lt, p.op, p.a, p.b, p.c, p.c, pref, 1, &result, &found);
        cublasLtMatmulPreferenceDestroy(pref);
        SGT_CUBLAS_CHECK(st);
        require(found > 0, "cuBLASLt: no algorithm for a {}x{}x{} product (batch {}, type {})", key.m, key.n, key.k,
                key.batch, int(key.type));
        p.algo = result.algo;
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
    using S = std::conditional_t<std::is_same_v<T, double>, double, float>;
    const S a = S(alpha), b = accumulate ? S(1) : S(0);
    if (k <= 0) {  // an empty sum: D = β C
        if (!accumulate) SGT_CUDA_CHECK(cudaMemsetAsync(D, 0, sizeof(T) * std::size_t(ldd) * n * batch, stream()));
        else if (C != D) SGT_CUDA_CHECK(cudaMemcpyAsync(D, C, sizeof(T) * std::size_t(ldd) * n * batch, cudaMemcpyDeviceToDevice, stream()));
        return;
    }
    SGT_CUBLAS_CHECK(cublasLtMatmul(ctx.lt, p.op, &a, A, p.a, B, p.b, &b, C, p.c, D, p.c, &p.algo,
                                    ctx.workspace.data(), ctx.workspace.size(), ctx.stream));
}

}  // namespace detail

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
