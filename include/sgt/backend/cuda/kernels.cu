// sgt/backend/cuda/kernels.cu: the one translation unit nvcc compiles. It holds every kernel of the CUDA
// backend, instantiated for the stored types the library supports: float (fp32), double (fp64, for checks)
// and __nv_bfloat16 (bf16 mixed precision). Everything else is built by the C++ compiler against the
// declarations in backend/cuda.hpp. CMake: sgt::cuda_kernels is this file as a static library.
#include "sgt/backend/cuda/adamw.cuh"
#include "sgt/backend/cuda/attention.cuh"
#include "sgt/backend/cuda/backend.cuh"
#include "sgt/backend/cuda/cross_entropy.cuh"
#include "sgt/backend/cuda/decode.cuh"
#include "sgt/backend/cuda/decode_pass.cuh"
#include "sgt/backend/cuda/decode_products.cuh"
#include "sgt/backend/cuda/dropout.cuh"
#include "sgt/backend/cuda/embedding.cuh"
#include "sgt/backend/cuda/gates.cuh"
#include "sgt/backend/cuda/heads.cuh"
#include "sgt/backend/cuda/matmul.cuh"
#include "sgt/backend/cuda/rmsnorm.cuh"
#include "sgt/backend/cuda/rope.cuh"
#include "sgt/backend/cuda/subspace.cuh"
#include "sgt/backend/cuda/swiglu.cuh"

namespace sgt {

#define SGT_CUDA_INSTANTIATE(T)                                                                                   \
    template void add<T>(cuda, T*, const T*, const T*, std::int64_t);                                            \
    template void accumulate<T>(cuda, T*, const T*, std::int64_t);                                               \
    template void scale<T>(cuda, T*, std::int64_t, double);                                                      \
    template double sum_squares<T>(cuda, const T*, std::int64_t);                                                \
    template void sum_squares<T>(cuda, const T*, std::int64_t, double*);                                         \
    template bool all_finite<T>(cuda, const T*, std::int64_t);                                                   \
    template void matmul_forward<T>(cuda, T*, const T*, const T*, int, int, int, bool, const T*);               \
    template void matmul_backward<T>(cuda, T*, T*, const T*, const T*, const T*, int, int, int, overwrite);      \
    template void embedding_forward<T>(cuda, T*, const std::int32_t*, const T*, int, int);                       \
    template void embedding_backward<T>(cuda, T*, const T*, const std::int32_t*, int, int);                      \
    template void rmsnorm_forward<T>(cuda, T*, T*, const T*, const T*, int, int, double);                        \
    template void rmsnorm_backward<T>(cuda, T*, T*, const T*, const T*, const T*, const T*, int, int);           \
    template void rope_forward<T>(cuda, T*, const accum_t<T>*, const accum_t<T>*, int, int, int, int, std::int64_t); \
    template void rope_backward<T>(cuda, T*, const accum_t<T>*, const accum_t<T>*, int, int, int, int, std::int64_t); \
    template void attention_forward<T>(cuda, T*, T*, double*, const T*, int, int, int, int);                     \
    template void attention_backward<T>(cuda, T*, const T*, const T*, const T*, int, int, int, int);             \
    template void gather_head_rows<T>(cuda, T*, const T*, std::span<const int>, int, int);                       \
    template void scatter_add_head_rows<T>(cuda, T*, const T*, std::span<const int>, int, int);                  \
    template void gather_head_cols<T>(cuda, T*, const T*, std::span<const int>, int, int, int);                  \
    template void scatter_add_head_cols<T>(cuda, T*, const T*, std::span<const int>, int, int, int);             \
    template void head_gain_forward<T>(cuda, T*, const T*, std::int64_t, int, int, bool);                        \
    template void head_gain_backward<T>(cuda, T*, T*, const T*, const T*, std::int64_t, int, int, bool);         \
    template void gate_forward<T>(cuda, T*, T*, const T*, const T*, const T*, int, int, int, int, int, double, bool); \
    template void gate_forward_at<T>(cuda, T*, T*, accum_t<T>*, const T*, const T*, const T*, const std::int32_t*,  \
                                     const std::int32_t*, int, int, int, int, int, double, bool);                 \
    template void gate_backward<T>(cuda, T*, T*, T*, const T*, const T*, const T*, const T*, int, int, int, int, int, \
                                   double);                                                                      \
    template void swiglu_forward<T>(cuda, T*, const T*, const T*, int, int, std::int64_t);                       \
    template void swiglu_backward<T>(cuda, T*, T*, const T*, const T*, const T*, int, int, std::int64_t);        \
    template loss_sum cross_entropy_forward<T>(cuda, const T*, const std::int32_t*, int, int, accum_t<T>*);      \
    template void cross_entropy_forward<T>(cuda, const T*, const std::int32_t*, int, int, accum_t<T>*, double*); \
    template void cross_entropy_forward_backward<T>(cuda, T*, const std::int32_t*, int, int, double, double*);    \
    template void cross_entropy_backward<T>(cuda, T*, const T*, const std::int32_t*, int, int, double,        \
                                          const accum_t<T>*);                                                    \
    template void dropout_forward<T>(cuda, T*, T*, std::int64_t, double, rng&);                                  \
    template void dropout_backward<T>(cuda, T*, const T*, std::int64_t);                                          \
    template void kv_cache_write<T>(cuda, T*, T*, const T*, const std::int32_t*, int, int, int, int, int);        \
    template void rope_kv_write_at<T>(cuda, T*, T*, T*, const accum_t<T>*, const accum_t<T>*, const std::int32_t*, \
                                      int, int, int, int, int);                                                  \
    template void decode_attention<T>(cuda, T*, const T*, const T*, const T*, const std::int32_t*, int, int, int, int, \
                                      accum_t<T>*, const T*);                                                    \
    template void normed_matmul_forward<T>(cuda, T*, T*, T*, const T*, const T*, const T*, int, int, int, double, \
                                           bool);                                                                \
    template void normed_swiglu_forward<T>(cuda, T*, T*, T*, T*, T*, const T*, const T*, const T*, const T*, int, \
                                           int, int, double);                                                    \
    template void normed_qkv_write_at<T>(cuda, T*, T*, T*, T*, T*, const T*, const T*, const T*, const accum_t<T>*, \
                                         const accum_t<T>*, const std::int32_t*, int, int, int, int, int, double); \
    template void decode_passes<T>(cuda, T*, T*, T*, T*, T*, std::span<const decode_slot<T>>, const T*, const T*, \
                                   const T*, const accum_t<T>*, const accum_t<T>*, const std::int32_t*, int, int, int, \
                                   int, int, double, accum_t<T>*);                                            \
    template bool decode_passes_one_kernel<T>(cuda, int, int, int, int);                                       \
    template bool few_rows_on_tensor_cores<T>(cuda, int, int, std::int64_t);                                   \
    template void row_sum_squares<T>(cuda, accum_t<T>*, const T*, int, int);                                     \
    template void row_sum_squares_backward<T>(cuda, T*, const accum_t<T>*, const T*, int, int);                  \
    template void subspace_step_forward<T>(cuda, T*, accum_t<T>*, T*, const T*, int, int, int, double,            \
                                           rope_rows<accum_t<T>>, subspace_prev<T>);                            \
    template void subspace_step_backward<T>(cuda, accum_t<T>*, T*, T*, const T*, const accum_t<T>*, const T*, int,  \
                                            int, int, double, rope_rows<accum_t<T>>, bool, subspace_prev_grad<T>); \
    template void gather_run_weights<T>(cuda, T*, T*, T*, attention_weights<T>, std::span<const int>, int, int, int); \
    template void scatter_run_grads<T>(cuda, attention_grads<T>, T*, T*, const T*, const T*, std::span<const int>, int, \
                                       int, int);

SGT_CUDA_INSTANTIATE(float)
SGT_CUDA_INSTANTIATE(double)
SGT_CUDA_INSTANTIATE(__nv_bfloat16)
#undef SGT_CUDA_INSTANTIATE

template void rope_tables<float>(cuda, float*, float*, int, int, double);
template void rope_tables<double>(cuda, double*, double*, int, int, double);
template void adamw_update<float>(cuda, float*, const float*, float*, float*, std::span<const adamw_run>,
                                  const adamw_hyper&, const adamw_step_values*, const double*, int);
template void adamw_update<double>(cuda, double*, const double*, double*, double*, std::span<const adamw_run>,
                                   const adamw_hyper&, const adamw_step_values*, const double*, int);
template void adamw_update<__nv_bfloat16, float>(cuda, __nv_bfloat16*, const __nv_bfloat16*, float*, float*, float*,
                                                 std::span<const adamw_run>, const adamw_hyper&,
                                                 const adamw_step_values*, const double*, int);
template void convert<float, __nv_bfloat16>(cuda, float*, const __nv_bfloat16*, std::int64_t);
template void convert<__nv_bfloat16, float>(cuda, __nv_bfloat16*, const float*, std::int64_t);

}  // namespace sgt
