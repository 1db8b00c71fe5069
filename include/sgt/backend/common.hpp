// sgt/backend/common.hpp: the plain types that every backend's leaf ops exchange with the templates: a loss
// summed over counted targets, and what an AdamW update reads; and a few helpers written once over any backend's
// ops (found by the backend tag). No backend code here, so that a backend (CPU or CUDA) includes only this and its
// own headers.
#pragma once

#include <cstdint>
#include <span>
#include <type_traits>
#include <vector>

#include "sgt/core/precision.hpp"

namespace sgt {

struct cpu;  // backend/cpu/backend.hpp: the default backend of the templates

// Σ −log p(target) over the counted positions of a batch, and their count (targets below zero are not counted).
struct loss_sum {
    double sum = 0.0;
    std::int64_t count = 0;
    double mean() const { return count ? sum / double(count) : 0.0; }
    loss_sum& operator+=(const loss_sum& o) {  // partial sums of blocks (CPU backend's parallel_sum)
        sum += o.sum;
        count += o.count;
        return *this;
    }
};

// One attention pass's cache slot in a run of decode passes (decode_passes): its keys and values (B, n, ctx, HD)
// and its head gains (n), or null where all are 1.
template <class T>
struct decode_slot {
    T* keys = nullptr;
    T* values = nullptr;
    const T* gains = nullptr;
};

// The rotary position embedding of rows (B·T, ·) of packed head vectors: the first `heads` vectors of HD values of
// row n (the q and k of a q, k, v row) are rotated at position n mod T, with the tables of rope_tables (T, HD/2) in
// the backend's accumulation type A. heads = 0: no rotation.
template <class A>
struct rope_rows {
    const A* cos = nullptr;
    const A* sin = nullptr;
    int T = 1, heads = 0, HD = 0;
};

// A layer's attention weights (W_Q, W_K, W_V: (NH·HD, C), rows = heads × HD; W_O: (C, NH·HD), columns = heads × HD;
// the norm's γ (C)), and their gradients.
template <class T>
struct attention_weights {
    const T* norm;  // (C)       RMSNorm_attn
    const T* wq;    // (C, C)    rows = heads × HD
    const T* wk;    // (C, C)
    const T* wv;    // (C, C)
    const T* wo;    // (C, C)    columns = heads × HD
};

template <class T>
struct attention_grads {
    T *norm, *wq, *wk, *wv, *wo;
};

namespace detail {
// The packed weights of a pass over `heads` (ascending) of a layer (NH heads of HD, width C): their rows of W_Q,
// W_K, W_V into w_qkv (3·n·HD, C), their columns of W_O into w_o (C, n·HD); through a backend's head ops.
template <class Backend, class T>
void gather_head_weights(Backend be, T* w_qkv, T* w_o, const attention_weights<T>& w, std::span<const int> heads,
                         int HD, int C, int NH) {
    const std::int64_t block = std::int64_t(heads.size()) * HD * C;
    gather_head_rows(be, w_qkv, w.wq, heads, HD, C);
    gather_head_rows(be, w_qkv + block, w.wk, heads, HD, C);
    gather_head_rows(be, w_qkv + 2 * block, w.wv, heads, HD, C);
    gather_head_cols(be, w_o, w.wo, heads, HD, C, NH);
}
// Their gradients in packed form, added to the rows and columns of those heads.
template <class Backend, class T>
void scatter_add_head_weights(Backend be, const attention_grads<T>& g, const T* dw_qkv, const T* dw_o,
                              std::span<const int> heads, int HD, int C, int NH) {
    const std::int64_t block = std::int64_t(heads.size()) * HD * C;
    scatter_add_head_rows(be, g.wq, dw_qkv, heads, HD, C);
    scatter_add_head_rows(be, g.wk, dw_qkv + block, heads, HD, C);
    scatter_add_head_rows(be, g.wv, dw_qkv + 2 * block, heads, HD, C);
    scatter_add_head_cols(be, g.wo, dw_o, heads, HD, C, NH);
}
}  // namespace detail

// The update that led to loop step k of a subspace run (loop_subspace.hpp), as a step's row ops read it; absent
// (o = nullptr) at the run's first step. Forward: s of step k is s_prev + Σ o ⊙ (u_prev + u), with u that of step k,
// and o (step k − 1's output o') is added into sum (copied into it where `first`).
template <class T>
struct subspace_prev {
    const accum_t<T>* s_prev = nullptr;  // (N)
    const T* u_prev = nullptr;           // (N, m)
    const T* o = nullptr;                // (N, m)
    T* sum = nullptr;                    // (N, m)
    bool first = false;
};
// Its backward: ∂L/∂o of step k − 1 written into d_o as d_sum + ∂L/∂s · (u_prev + u) (∂L/∂s of step k, final),
// and that ∂L/∂s times o added to ∂L/∂u of step k.
template <class T>
struct subspace_prev_grad {
    const T* u_prev = nullptr;  // (N, m)
    const T* u = nullptr;       // (N, m)
    const T* o = nullptr;       // (N, m)
    const T* d_sum = nullptr;   // (N, m)
    T* d_o = nullptr;           // (N, m)
};

// Which gradient outputs of matmul_backward are overwritten instead of accumulated into (+=): a scratch that
// would otherwise be zeroed first, e.g. `matmul_backward(be, dx, dw, ..., overwrite{.din = true})`.
struct overwrite {
    bool din = false;
    bool dw = false;
};

// AdamW's constant hyper-parameters; the learning rate changes every step and comes in adamw_step_values.
struct adamw_hyper {
    double beta1 = 0.9;
    double beta2 = 0.95;
    double eps = 1e-8;
    double clip = 0.0;  // bound on the global gradient norm; 0: no clipping
};

// What one AdamW step reads from backend memory, so that a recorded step (a CUDA graph) replays with each step's
// values: the rate and the bias corrections 1 − β1^t, 1 − β2^t of step t.
struct adamw_step_values {
    double lr = 0.0;
    double bias1 = 1.0;
    double bias2 = 1.0;
};

// The factor that clips gradients of global norm `norm` to `clip`, as torch.nn.utils.clip_grad_norm_ does:
// min(1, clip / (norm + 1e-6)); 1 when clip is 0.
constexpr double clip_factor(double norm, double clip) {
    return clip > 0.0 && clip / (norm + 1e-6) < 1.0 ? clip / (norm + 1e-6) : 1.0;
}

// Elements [offset, offset + n) of the parameter buffer, updated with weight decay `decay` (a run of adjacent
// tensors that decay alike).
struct adamw_run {
    std::int64_t offset = 0;
    std::int64_t n = 0;
    double decay = 0.0;
};

namespace detail {
// A host copy of backend memory (a plain copy on the CPU backend, a transfer on the GPU); the backend's
// copy_to_host is found by argument-dependent lookup on its tag.
template <class Backend, class U>
std::vector<std::remove_const_t<U>> to_host(Backend be, std::span<U> x) {
    std::vector<std::remove_const_t<U>> h(x.size());
    copy_to_host(be, h.data(), x.data(), std::int64_t(h.size()));
    return h;
}

// The host memory that results read back every step are copied into (inference's logits): a std::vector, or the
// vector a backend names by specialising host_copy (the CUDA backend's is page-locked: the copy needs no staging).
template <class Backend, class T>
struct host_copy {
    using type = std::vector<T>;
};
template <class Backend, class T>
using host_copy_t = typename host_copy<Backend, T>::type;

// n values of backend memory readable on the host: the memory itself on a host backend, else a copy made into
// `copy` (which the view then refers to).
template <class Backend, class T, class Allocator>
std::span<const T> host_view(Backend be, const T* x, std::size_t n, std::vector<T, Allocator>& copy) {
    if constexpr (Backend::host_memory) {
        return {x, n};
    } else {
        copy.resize(n);
        copy_to_host(be, copy.data(), x, std::int64_t(n));
        return copy;
    }
}

// A run of decode attention passes (decode_passes, backend/cpu/decode.hpp) as the composition of a backend's ops,
// one pass after the other: the CPU's decode_passes, and a backend's where its fused form does not fit. Tab is the
// type of the RoPE tables, which a backend keeps in its accumulation type.
template <class Backend, class T, class Tab>
void compose_decode_passes(Backend be, T* x, T* qkv, T* o, T* a, T* rstd, std::span<const decode_slot<T>> slots,
                           const T* norm, const T* w_qkv, const T* w_o, const Tab* cos_table, const Tab* sin_table,
                           const std::int32_t* start, int B, int C, int n, int HD, int ctx, double eps,
                           Tab* workspace) {
    for (const decode_slot<T>& s : slots) {
        normed_qkv_write_at(be, qkv, s.keys, s.values, a, rstd, x, norm, w_qkv, cos_table, sin_table, start, B, C, n,
                            HD, ctx, eps);
        decode_attention(be, o, qkv, s.keys, s.values, start, B, n, HD, ctx, workspace);
        if (s.gains) head_gain_forward(be, o, s.gains, std::int64_t(B), n, HD, false);
        normed_matmul_forward(be, x, a, rstd, o, static_cast<const T*>(nullptr), w_o, B, n * HD, C, 0.0, true);
    }
}
}  // namespace detail

}  // namespace sgt
