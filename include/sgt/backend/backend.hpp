// sgt/backend/backend.hpp: the backend contract, written once: what a backend must provide for the model,
// trainer and optimizer templates to run on it (DESIGN.md, "Extension points").
//
// A backend is a tag type B with
//   B::name, B::host_memory       a name for messages; whether its buffers are host memory
//   B::buffer<U>                  a growable array in its memory: data(), size(), resize(n)
// and free functions taking the tag first, found by argument-dependent lookup: the leaf ops below, with the
// parameter lists of backend/cpu/ (shapes are documented there). Gradients accumulate (+=) into outputs, except
// where an op says it overwrites them (swiglu_backward, cross_entropy_backward, matmul_backward under `overwrite`).
//
// `sgt::backend<B>` is the concept; `check_backend<B>()` asserts it one op at a time, so that a backend missing
// an op (or with a misspelled one) fails to compile with a message naming that op. The model asserts it.
// Ops are checked for float; the mixed-precision ones (adamw_update with master weights, convert) for bf16
// models only, where the optimizer calls them.
#pragma once

#include <concepts>
#include <cstdint>
#include <span>

#include "sgt/backend/common.hpp"
#include "sgt/core/precision.hpp"
#include "sgt/core/rng.hpp"

namespace sgt {

namespace detail::backend_ops {

using T = float;
using A = accum_t<float>;
using i64 = std::int64_t;

template <class B>
concept has_buffer = requires(typename B::template buffer<T> b, std::size_t n) {
    { B::name } -> std::convertible_to<const char*>;
    { B::host_memory } -> std::convertible_to<bool>;
    { b.data() } -> std::same_as<T*>;
    { b.size() } -> std::convertible_to<std::size_t>;
    b.resize(n);
};

// One concept per leaf op, so that each can be named when it is missing.
#define SGT_BACKEND_OP(op, ...) \
    template <class B>          \
    concept has_##op = requires(T* x, const T* c, A* a, const A* ca, double* e, const std::int32_t* tok, \
                                std::span<const int> heads, rng& r, const adamw_hyper& hyper, \
                                std::span<const adamw_run> runs, const adamw_step_values* step, const double* ce) { \
        __VA_ARGS__;                                                                                        \
    };

SGT_BACKEND_OP(fill_zero, fill_zero(B{}, x, i64{}))
SGT_BACKEND_OP(copy, copy(B{}, x, c, i64{}))
SGT_BACKEND_OP(copy_from_host, copy_from_host(B{}, x, c, i64{}))
SGT_BACKEND_OP(copy_to_host, copy_to_host(B{}, x, c, i64{}))
SGT_BACKEND_OP(add, add(B{}, x, c, c, i64{}))
SGT_BACKEND_OP(accumulate, accumulate(B{}, x, c, i64{}))
SGT_BACKEND_OP(scale, scale(B{}, x, i64{}, double{}))
SGT_BACKEND_OP(sum_squares, { sum_squares(B{}, c, i64{}) } -> std::convertible_to<double>; sum_squares(B{}, c, i64{}, e))
SGT_BACKEND_OP(all_finite, { all_finite(B{}, c, i64{}) } -> std::convertible_to<bool>)
SGT_BACKEND_OP(matmul_forward, matmul_forward(B{}, x, c, c, 1, 1, 1); matmul_forward(B{}, x, c, c, 1, 1, 1, false, c))
SGT_BACKEND_OP(matmul_backward, matmul_backward(B{}, x, x, c, c, c, 1, 1, 1);
               matmul_backward(B{}, x, x, c, c, c, 1, 1, 1, overwrite{}))
SGT_BACKEND_OP(embedding_forward, embedding_forward(B{}, x, tok, c, 1, 1))
SGT_BACKEND_OP(embedding_backward, embedding_backward(B{}, x, c, tok, 1, 1))
SGT_BACKEND_OP(rmsnorm_forward, rmsnorm_forward(B{}, x, x, c, c, 1, 1, double{}))
SGT_BACKEND_OP(rmsnorm_backward, rmsnorm_backward(B{}, x, x, c, c, c, c, 1, 1))
SGT_BACKEND_OP(rope_tables, rope_tables(B{}, a, a, 1, 2, double{}))
SGT_BACKEND_OP(rope_forward, rope_forward(B{}, x, ca, ca, 1, 1, 1, 2, i64{}))
SGT_BACKEND_OP(rope_backward, rope_backward(B{}, x, ca, ca, 1, 1, 1, 2, i64{}))
SGT_BACKEND_OP(attention_saved_size, { attention_saved_size<T>(B{}, 1, 1, 1, 1) } -> std::convertible_to<i64>)
SGT_BACKEND_OP(attention_forward, attention_forward(B{}, x, x, e, c, 1, 1, 1, 1))
SGT_BACKEND_OP(attention_backward, attention_backward(B{}, x, c, c, c, 1, 1, 1, 1))
SGT_BACKEND_OP(gather_head_rows, gather_head_rows(B{}, x, c, heads, 1, 1))
SGT_BACKEND_OP(scatter_add_head_rows, scatter_add_head_rows(B{}, x, c, heads, 1, 1))
SGT_BACKEND_OP(gather_head_cols, gather_head_cols(B{}, x, c, heads, 1, 1, 1))
SGT_BACKEND_OP(scatter_add_head_cols, scatter_add_head_cols(B{}, x, c, heads, 1, 1, 1))
SGT_BACKEND_OP(head_gain_forward, head_gain_forward(B{}, x, c, i64{}, 1, 1, false))
SGT_BACKEND_OP(head_gain_backward, head_gain_backward(B{}, x, x, c, c, i64{}, 1, 1, false))
SGT_BACKEND_OP(gate_forward, gate_forward(B{}, x, x, c, c, c, 1, 1, 1, 1, 1, double{}, false))
SGT_BACKEND_OP(gate_backward, gate_backward(B{}, x, x, x, c, c, c, c, 1, 1, 1, 1, 1, double{}))
SGT_BACKEND_OP(swiglu_forward, swiglu_forward(B{}, x, c, c, 1, 1, i64{}))
SGT_BACKEND_OP(swiglu_backward, swiglu_backward(B{}, x, x, c, c, c, 1, 1, i64{}))
SGT_BACKEND_OP(cross_entropy_forward, { cross_entropy_forward(B{}, c, tok, 1, 1, a) } -> std::same_as<loss_sum>;
               cross_entropy_forward(B{}, c, tok, 1, 1, a, e))
SGT_BACKEND_OP(cross_entropy_forward_backward, cross_entropy_forward_backward(B{}, x, tok, 1, 1, double{}, e))
SGT_BACKEND_OP(cross_entropy_backward, cross_entropy_backward(B{}, x, c, tok, 1, 1, double{}, ca))
SGT_BACKEND_OP(dropout_forward, dropout_forward(B{}, x, x, i64{}, double{}, r))
SGT_BACKEND_OP(dropout_backward, dropout_backward(B{}, x, c, i64{}))
SGT_BACKEND_OP(adamw_update, adamw_update(B{}, x, c, x, x, runs, hyper, step, ce, 1))

#undef SGT_BACKEND_OP

}  // namespace detail::backend_ops

// The contract, as one concept.
template <class B>
concept backend =
    detail::backend_ops::has_buffer<B> &&
    detail::backend_ops::has_fill_zero<B> &&
    detail::backend_ops::has_copy<B> &&
    detail::backend_ops::has_copy_from_host<B> &&
    detail::backend_ops::has_copy_to_host<B> &&
    detail::backend_ops::has_add<B> &&
    detail::backend_ops::has_accumulate<B> &&
    detail::backend_ops::has_scale<B> &&
    detail::backend_ops::has_sum_squares<B> &&
    detail::backend_ops::has_all_finite<B> &&
    detail::backend_ops::has_matmul_forward<B> &&
    detail::backend_ops::has_matmul_backward<B> &&
    detail::backend_ops::has_embedding_forward<B> &&
    detail::backend_ops::has_embedding_backward<B> &&
    detail::backend_ops::has_rmsnorm_forward<B> &&
    detail::backend_ops::has_rmsnorm_backward<B> &&
    detail::backend_ops::has_rope_tables<B> &&
    detail::backend_ops::has_rope_forward<B> &&
    detail::backend_ops::has_rope_backward<B> &&
    detail::backend_ops::has_attention_saved_size<B> &&
    detail::backend_ops::has_attention_forward<B> &&
    detail::backend_ops::has_attention_backward<B> &&
    detail::backend_ops::has_gather_head_rows<B> &&
    detail::backend_ops::has_scatter_add_head_rows<B> &&
    detail::backend_ops::has_gather_head_cols<B> &&
    detail::backend_ops::has_scatter_add_head_cols<B> &&
    detail::backend_ops::has_head_gain_forward<B> &&
    detail::backend_ops::has_head_gain_backward<B> &&
    detail::backend_ops::has_gate_forward<B> &&
    detail::backend_ops::has_gate_backward<B> &&
    detail::backend_ops::has_swiglu_forward<B> &&
    detail::backend_ops::has_swiglu_backward<B> &&
    detail::backend_ops::has_cross_entropy_forward<B> &&
    detail::backend_ops::has_cross_entropy_forward_backward<B> &&
    detail::backend_ops::has_cross_entropy_backward<B> &&
    detail::backend_ops::has_dropout_forward<B> &&
    detail::backend_ops::has_dropout_backward<B> &&
    detail::backend_ops::has_adamw_update<B>;

// The same contract, asserted op by op: each failure names the op and its expected parameters.
template <class B>
constexpr bool check_backend() {
    using namespace detail::backend_ops;
    static_assert(has_buffer<B>, "sgt::backend: expected B::name, B::host_memory and B::buffer<U> (data, size, resize)");
    static_assert(has_fill_zero<B>, "sgt::backend: missing leaf op fill_zero(B, T* x, int64 n)");
    static_assert(has_copy<B>, "sgt::backend: missing leaf op copy(B, T* dst, const T* src, int64 n)");
    static_assert(has_copy_from_host<B>, "sgt::backend: missing leaf op copy_from_host(B, T* dst, const T* host, int64 n)");
    static_assert(has_copy_to_host<B>, "sgt::backend: missing leaf op copy_to_host(B, T* host, const T* src, int64 n)");
    static_assert(has_add<B>, "sgt::backend: missing leaf op add(B, T* out, const T* a, const T* b, int64 n)");
    static_assert(has_accumulate<B>, "sgt::backend: missing leaf op accumulate(B, T* y, const T* x, int64 n)");
    static_assert(has_scale<B>, "sgt::backend: missing leaf op scale(B, T* x, int64 n, double s)");
    static_assert(has_sum_squares<B>, "sgt::backend: missing leaf op sum_squares(B, const T* x, int64 n) -> double, or its form sum_squares(B, const T* x, int64 n, double* out) into backend memory");
    static_assert(has_all_finite<B>, "sgt::backend: missing leaf op all_finite(B, const T* x, int64 n) -> bool");
    static_assert(has_matmul_forward<B>, "sgt::backend: missing leaf op matmul_forward(B, T* out, const T* in, const T* w, int N, int I, int O, bool accumulate = false, const T* add = nullptr)");
    static_assert(has_matmul_backward<B>, "sgt::backend: missing leaf op matmul_backward(B, T* din, T* dw, const T* dout, const T* in, const T* w, int N, int I, int O, overwrite ow = {})");
    static_assert(has_embedding_forward<B>, "sgt::backend: missing leaf op embedding_forward(B, T* out, const int32* tokens, const T* table, int N, int C)");
    static_assert(has_embedding_backward<B>, "sgt::backend: missing leaf op embedding_backward(B, T* dtable, const T* dout, const int32* tokens, int N, int C)");
    static_assert(has_rmsnorm_forward<B>, "sgt::backend: missing leaf op rmsnorm_forward(B, T* out, T* rstd, const T* in, const T* w, int N, int C, double eps)");
    static_assert(has_rmsnorm_backward<B>, "sgt::backend: missing leaf op rmsnorm_backward(B, T* din, T* dw, const T* dout, const T* in, const T* w, const T* rstd, int N, int C)");
    static_assert(has_rope_tables<B>, "sgt::backend: missing leaf op rope_tables(B, A* cos, A* sin, int T, int HD, double base)");
    static_assert(has_rope_forward<B>, "sgt::backend: missing leaf op rope_forward(B, T* x, const A* cos, const A* sin, int B, int T, int n_heads, int HD, int64 row_stride)");
    static_assert(has_rope_backward<B>, "sgt::backend: missing leaf op rope_backward(B, T* dx, const A* cos, const A* sin, int B, int T, int n_heads, int HD, int64 row_stride)");
    static_assert(has_attention_saved_size<B>, "sgt::backend: missing leaf op attention_saved_size<T>(B, int B, int T, int n, int HD) -> int64");
    static_assert(has_attention_forward<B>, "sgt::backend: missing leaf op attention_forward(B, T* out, T* saved, double* entropy, const T* qkv, int B, int T, int n, int HD)");
    static_assert(has_attention_backward<B>, "sgt::backend: missing leaf op attention_backward(B, T* dqkv, const T* dout, const T* qkv, const T* saved, int B, int T, int n, int HD)");
    static_assert(has_gather_head_rows<B>, "sgt::backend: missing leaf op gather_head_rows(B, T* dst, const T* src, span<const int> heads, int HD, int C)");
    static_assert(has_scatter_add_head_rows<B>, "sgt::backend: missing leaf op scatter_add_head_rows(B, T* dst, const T* src, span<const int> heads, int HD, int C)");
    static_assert(has_gather_head_cols<B>, "sgt::backend: missing leaf op gather_head_cols(B, T* dst, const T* src, span<const int> heads, int HD, int C, int NH)");
    static_assert(has_scatter_add_head_cols<B>, "sgt::backend: missing leaf op scatter_add_head_cols(B, T* dst, const T* src, span<const int> heads, int HD, int C, int NH)");
    static_assert(has_head_gain_forward<B>, "sgt::backend: missing leaf op head_gain_forward(B, T* x, const T* gains, int64 N, int n, int HD, bool per_position)");
    static_assert(has_head_gain_backward<B>, "sgt::backend: missing leaf op head_gain_backward(B, T* dgains, T* dy, const T* x, const T* gains, int64 N, int n, int HD, bool per_position)");
    static_assert(has_gate_forward<B>, "sgt::backend: missing leaf op gate_forward(B, T* s, T* g, const T* qkv, const T* w, const T* c, int B, int T, int n, int HD, int i0, double theta, bool hard)");
    static_assert(has_gate_backward<B>, "sgt::backend: missing leaf op gate_backward(B, T* dqkv, T* dw, T* dc, const T* ds, const T* s, const T* qkv, const T* w, int B, int T, int n, int HD, int i0, double ds_add)");
    static_assert(has_swiglu_forward<B>, "sgt::backend: missing leaf op swiglu_forward(B, T* out, const T* gate, const T* up, int rows, int F, int64 ld)");
    static_assert(has_swiglu_backward<B>, "sgt::backend: missing leaf op swiglu_backward(B, T* dgate, T* dup, const T* dout, const T* gate, const T* up, int rows, int F, int64 ld)");
    static_assert(has_cross_entropy_forward<B>, "sgt::backend: missing leaf op cross_entropy_forward(B, const T* logits, const int32* targets, int N, int V, A* lse = nullptr) -> loss_sum, or its form with a last argument double* sum");
    static_assert(has_cross_entropy_forward_backward<B>, "sgt::backend: missing leaf op cross_entropy_forward_backward(B, T* logits, const int32* targets, int N, int V, double scale, double* sum)");
    static_assert(has_cross_entropy_backward<B>, "sgt::backend: missing leaf op cross_entropy_backward(B, T* dlogits, const T* logits, const int32* targets, int N, int V, double scale, const A* lse = nullptr)");
    static_assert(has_dropout_forward<B>, "sgt::backend: missing leaf op dropout_forward(B, T* x, T* mask, int64 n, double p, rng& r)");
    static_assert(has_dropout_backward<B>, "sgt::backend: missing leaf op dropout_backward(B, T* dx, const T* mask, int64 n)");
    static_assert(has_adamw_update<B>, "sgt::backend: missing leaf op adamw_update(B, T* param, const T* grad, T* m, T* v, span<const adamw_run> runs, const adamw_hyper& h, const adamw_step_values* s, const double* grad_sq, int parts)");
    return backend<B>;
}

}  // namespace sgt
