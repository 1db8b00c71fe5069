// sgt/backend/cuda.hpp: the CUDA backend's leaf ops, declared. Same names and parameters as backend/cpu/, with
// the tag sgt::cuda first and DEVICE pointers everywhere. Any C++20 compiler builds code against these
// declarations (the model, trainer and growth templates are instantiated by g++ or clang as usual); the
// definitions are the kernels in backend/cuda/*.cuh, compiled by nvcc in ONE translation unit of the program,
// backend/cuda/kernels.cu, which instantiates them for float, double and bf16 (CMake: link sgt::cuda_kernels).
//
// Why not the whole library through nvcc: nvcc's C++20 front end rejects parts of the standard library and of
// fmt that the rest of sgt uses (spans built from vectors, consteval format strings), and one kernel TU keeps
// the build fast.
#pragma once

#include <cstdint>
#include <span>
#include <type_traits>

#include "sgt/backend/common.hpp"  // loss_sum, adamw_hyper
#include "sgt/backend/cuda/cudnn_attention.hpp"  // cudnn::supports_head_dim
#include "sgt/backend/cuda/runtime.hpp"
#include "sgt/core/rng.hpp"

namespace sgt {

// backend.cuh: elementwise helpers and reductions (fill_zero, copy and the transfers are in runtime.hpp)
template <class T> void add(cuda, T* out, const T* a, const T* b, std::int64_t n);
template <class T> void accumulate(cuda, T* y, const T* x, std::int64_t n);
template <class T> void scale(cuda, T* x, std::int64_t n, double s);
template <class T> double sum_squares(cuda, const T* x, std::int64_t n);
template <class T> void sum_squares(cuda, const T* x, std::int64_t n, double* out);
template <class T> bool all_finite(cuda, const T* x, std::int64_t n);

// matmul.cuh (cuBLASLt)
template <class T>
void matmul_forward(cuda, T* out, const T* in, const T* w, int N, int I, int O, bool accumulate = false,
                    const T* add = nullptr);
template <class T>
void matmul_backward(cuda, T* din, T* dw, const T* dout, const T* in, const T* w, int N, int I, int O,
                     overwrite ow = {});

// embedding.cuh
template <class T> void embedding_forward(cuda, T* out, const std::int32_t* tokens, const T* table, int N, int C);
template <class T> void embedding_backward(cuda, T* dtable, const T* dout, const std::int32_t* tokens, int N, int C);

// rmsnorm.cuh
template <class T> void rmsnorm_forward(cuda, T* out, T* rstd, const T* in, const T* w, int N, int C, double eps);
template <class T>
void rmsnorm_backward(cuda, T* din, T* dw, const T* dout, const T* in, const T* w, const T* rstd, int N, int C);

// rope.cuh (tables in accum_t<T>)
template <class A> void rope_tables(cuda, A* cos_table, A* sin_table, int T_, int HD, double base);
template <class T>
void rope_forward(cuda, T* x, const accum_t<T>* cos_table, const accum_t<T>* sin_table, int B, int T_, int n_heads,
                  int HD, std::int64_t row_stride);
template <class T>
void rope_backward(cuda, T* dx, const accum_t<T>* cos_table, const accum_t<T>* sin_table, int B, int T_, int n_heads,
                   int HD, std::int64_t row_stride);

// attention.cuh (entropy: device memory, (B, n) doubles). In bf16 the attention core can run fused: through
// cuDNN (a build with SGT_CUDNN, cudnn_attention.hpp) or our own kernels (head sizes 32, 64, 96, 128,
// flash_attention.cuh); attention_kernel in runtime.hpp says which runs when. Fused, the forward saves each row's
// log-sum-exp and the output, not the T x T matrices, and the backward recomputes them.
namespace detail {
#if defined(SGT_WITH_CUDNN)
inline constexpr bool cudnn_built = true;
#else
inline constexpr bool cudnn_built = false;
#endif
enum class attention_path { materialized, fused, cudnn };
// The path this thread's calls at these sizes take.
template <class T>
attention_path attention_path_for(int T_, int HD) {
    if constexpr (!std::is_same_v<T, __nv_bfloat16>) {
        return attention_path::materialized;
    } else {
        const bool cudnn_ok = cudnn_built && cudnn::supports_head_dim(HD);
        const bool fused_ok = HD == 32 || HD == 64 || HD == 96 || HD == 128;
        const auto choice = context().attention;
        if (choice == attention_kernel::materialized) return attention_path::materialized;
        if (choice == attention_kernel::fused && fused_ok) return attention_path::fused;
        if (cudnn_ok) return attention_path::cudnn;
        if (fused_ok && (choice == attention_kernel::fused || T_ <= fused_attention_max_seq)) return attention_path::fused;
        return attention_path::materialized;
    }
}
}  // namespace detail
template <class T>
std::int64_t attention_saved_size(cuda, int B, int T_, int n, int HD) {
    const std::int64_t rows = std::int64_t(B) * n * T_;
    if (detail::attention_path_for<T>(T_, HD) == detail::attention_path::materialized) return rows * T_;
    return (2 * rows + 7) / 8 * 8 + rows * HD;  // float log-sum-exp per row (16-byte padded), then the output
}
template <class T>
void attention_forward(cuda, T* out, T* probs, double* entropy, const T* qkv, int B, int T_, int n, int HD);
template <class T>
void attention_backward(cuda, T* dqkv, const T* dout, const T* qkv, const T* probs, int B, int T_, int n, int HD);

// decode.cuh (start, pos: device memory, (B) int32). Decode attention's workspace, in accum_t<T>, is the caller's:
// per (sequence, head) and chunk of decode_chunk keys, a max, a sum and an unnormalised output.
namespace detail {
constexpr int decode_chunk = 64;
// The chunks of ctx keys, each of `sub` times decode_chunk keys (decode.cuh: a block takes one).
inline int decode_splits(int ctx, int sub = 1) { return (ctx + sub * decode_chunk - 1) / (sub * decode_chunk); }
}  // namespace detail
template <class T>
std::int64_t decode_attention_workspace(cuda, int B, int n, int HD, int ctx) {
    return std::int64_t(B) * n * detail::decode_splits(ctx) * (2 + HD);
}
template <class T>
void kv_cache_write(cuda, T* k_cache, T* v_cache, const T* qkv, const std::int32_t* start, int B, int T_, int n, int HD,
                    int ctx);
template <class T>
void rope_kv_write_at(cuda, T* qkv, T* k_cache, T* v_cache, const accum_t<T>* cos_table, const accum_t<T>* sin_table,
                      const std::int32_t* start, int B, int T_, int n, int HD, int ctx);
template <class T>
void decode_attention(cuda, T* out, const T* qkv, const T* k_cache, const T* v_cache, const std::int32_t* pos, int B,
                      int n, int HD, int ctx, accum_t<T>* workspace, const T* gain = nullptr);

// decode_products.cuh (a decode step's products; a and rstd [gate, up]: scratch of the composition)
template <class T>
void normed_matmul_forward(cuda, T* out, T* a, T* rstd, const T* x, const T* norm, const T* w, int N, int I, int O,
                           double eps, bool accumulate);
template <class T>
void normed_swiglu_forward(cuda, T* act, T* a, T* rstd, T* gate, T* up, const T* x, const T* norm, const T* w1,
                           const T* w3, int N, int C, int F, double eps);
template <class T>
void normed_qkv_write_at(cuda, T* qkv, T* k_cache, T* v_cache, T* a, T* rstd, const T* x, const T* norm,
                         const T* w_qkv, const accum_t<T>* cos_table, const accum_t<T>* sin_table,
                         const std::int32_t* start, int B, int C, int n, int HD, int ctx, double eps);
// Whether a normed product of N rows of I inputs against `weights` weight elements (with its norm, or SwiGLU or
// q/k/v after it), its outputs in whole tiles of 16 and its buffers aligned to 32 bytes, takes the tensor-core
// few-row kernel under this thread's settings.
template <class T>
bool few_rows_on_tensor_cores(cuda, int N, int I, std::int64_t weights);

// decode_pass.cuh (a run of a decode step's attention passes over the same heads; scratch: qkv, o, a, rstd, workspace)
template <class T>
void decode_passes(cuda, T* x, T* qkv, T* o, T* a, T* rstd, std::span<const decode_slot<T>> slots, const T* norm,
                   const T* w_qkv, const T* w_o, const accum_t<T>* cos_table, const accum_t<T>* sin_table,
                   const std::int32_t* start, int B, int C, int n, int HD, int ctx, double eps,
                   accum_t<T>* workspace);
// Whether decode_passes runs B rows of this shape (width C, n heads of HD) as one cluster kernel (with buffers
// aligned to 16 bytes) under this thread's settings.
template <class T>
bool decode_passes_one_kernel(cuda, int B, int C, int n, int HD);

// heads.cuh
template <class T> void gather_head_rows(cuda, T* dst, const T* src, std::span<const int> heads, int HD, int C);
template <class T> void scatter_add_head_rows(cuda, T* dst, const T* src, std::span<const int> heads, int HD, int C);
template <class T> void gather_head_cols(cuda, T* dst, const T* src, std::span<const int> heads, int HD, int C, int NH);
template <class T>
void scatter_add_head_cols(cuda, T* dst, const T* src, std::span<const int> heads, int HD, int C, int NH);
template <class T>
void head_gain_forward(cuda, T* x, const T* gains, std::int64_t N, int n, int HD, bool per_position);
template <class T>
void head_gain_backward(cuda, T* dgains, T* dy, const T* x, const T* gains, std::int64_t N, int n, int HD,
                        bool per_position);

// gates.cuh (GATES.md Sec. 1-2)
template <class T>
void gate_forward(cuda, T* s, T* g, const T* qkv, const T* w, const T* c, int B, int T_, int n, int HD, int i0,
                  double theta, bool hard);
template <class T>
void gate_forward_at(cuda, T* s, T* g, accum_t<T>* run, const T* qkv, const T* w, const T* c, const std::int32_t* start,
                     const std::int32_t* len, int B, int T_, int n, int HD, int i0, double theta, bool hard);
template <class T>
void gate_backward(cuda, T* dqkv, T* dw, T* dc, const T* ds, const T* s, const T* qkv, const T* w, int B, int T_,
                   int n, int HD, int i0, double ds_add);

// subspace.cuh (loop steps in the looped heads' subspace, loop_subspace.hpp; s and ds in accum_t<T>)
template <class T> void row_sum_squares(cuda, accum_t<T>* s, const T* x, int N, int C);
template <class T> void row_sum_squares_backward(cuda, T* dx, const accum_t<T>* ds, const T* x, int N, int C);
template <class T>
void subspace_step_forward(cuda, T* qkv, accum_t<T>* s, T* u_keep, const T* z, int N, int m, int C, double eps,
                           rope_rows<accum_t<T>> rope, subspace_prev<T> prev);
template <class T>
void subspace_step_backward(cuda, accum_t<T>* ds, T* dz, T* dqkv, const T* qkv, const accum_t<T>* s, const T* o, int N,
                            int m, int C, double eps, rope_rows<accum_t<T>> rope, bool add, subspace_prev_grad<T> prev);
template <class T>
void gather_run_weights(cuda, T* w_qkv, T* w_o, T* w, attention_weights<T> a, std::span<const int> heads, int HD, int C,
                        int NH);
template <class T>
void scatter_run_grads(cuda, attention_grads<T> g, T* dw, T* dw_o, const T* w_qkv, const T* gamma,
                       std::span<const int> heads, int HD, int C, int NH);

// swiglu.cuh
template <class T> void swiglu_forward(cuda, T* out, const T* gate, const T* up, int rows, int F, std::int64_t ld);
template <class T>
void swiglu_backward(cuda, T* dgate, T* dup, const T* dout, const T* gate, const T* up, int rows, int F,
                     std::int64_t ld);

// cross_entropy.cuh (targets: device memory; the loss comes back to the host, or stays in device memory at *sum)
template <class T>
loss_sum cross_entropy_forward(cuda, const T* logits, const std::int32_t* targets, int N, int V,
                               accum_t<T>* lse = nullptr);
template <class T>
void cross_entropy_forward(cuda, const T* logits, const std::int32_t* targets, int N, int V, accum_t<T>* lse,
                           double* sum);
template <class T>
void cross_entropy_forward_backward(cuda, T* logits, const std::int32_t* targets, int N, int V, double scale,
                                    double* sum);
template <class T>
void cross_entropy_backward(cuda, T* dlogits, const T* logits, const std::int32_t* targets, int N, int V, double scale,
                            const accum_t<T>* lse = nullptr);

// dropout.cuh
template <class T> void dropout_forward(cuda, T* x, T* mask, std::int64_t n, double p, rng& r);
template <class T> void dropout_backward(cuda, T* dx, const T* mask, std::int64_t n);

// adamw.cuh: plain, and mixed precision (fp32 master weights and moments, a low-precision working copy); s and
// grad_sq in device memory
template <class T>
void adamw_update(cuda, T* param, const T* grad, T* m, T* v, std::span<const adamw_run> runs, const adamw_hyper& h,
                  const adamw_step_values* s, const double* grad_sq, int parts);
template <class T, class M>
void adamw_update(cuda, T* param, const T* grad, M* master, M* m, M* v, std::span<const adamw_run> runs,
                  const adamw_hyper& h, const adamw_step_values* s, const double* grad_sq, int parts);
template <class D, class S> void convert(cuda, D* dst, const S* src, std::int64_t n);

}  // namespace sgt

#include "sgt/backend/backend.hpp"
static_assert(sgt::check_backend<sgt::cuda>());
