// sgt/attention.hpp: one attention pass over a head subset, forward and backward (Eq. 1-3 and Eq. 6).
//
// A pass maps the residual stream H to
//     H' = H + Σ_{i∈R} g_i · W_O^(i) · softmax_causal(q_i k_iᵀ / √HD) v_i,   a = RMSNorm_attn(H),
//     q_i = RoPE(a W_Q^(i)), k_i = RoPE(a W_K^(i)), v_i = a W_V^(i).
// The first pass of a layer runs all heads with gains 1 (Eq. 1-3). A loop step of Eq. 6 is the same pass with
// R = S_l, reusing the layer's own W_Q, W_K, W_V, W_O and attention norm; in the `fade` transition R is all
// heads and the heads outside S_l carry the fade gain (spec Sec. 4). Which heads and gains a pass has is the
// model variant's decision (variant.hpp), as is an optional transform of the head outputs before W_O (the
// `hook`). Only the heads in R are computed: their weights are packed (backend heads.hpp) so that each
// projection is a single matrix product; a pass over all heads uses the weights in place. Without dropout the
// residual H is added inside the W_O product. Backend-generic: every step is a leaf op called on the Backend tag.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <span>
#include <vector>

#include "sgt/backend/common.hpp"  // overwrite
#include "sgt/core/buffers.hpp"
#include "sgt/core/precision.hpp"
#include "sgt/core/rng.hpp"
#include "sgt/residual.hpp"

namespace sgt {

// attention_weights and attention_grads (a layer's attention weights and their gradients): backend/common.hpp

// What one pass keeps for its backward. Buffers only grow, so after the first step nothing is allocated.
template <class T, class Backend>
struct attention_record {
    template <class U>
    using buffer = typename Backend::template buffer<U>;

    std::vector<int> heads;     // R, ascending
    std::vector<double> gains;  // g_i per head of R, constant for this pass; empty = all 1 (no scaling)
    buffer<T> gain;             // (n)               the same gains as a tensor in the backend's memory
    std::vector<double> gain_held;  // what `gain` holds (it is uploaded only when the gains change)
    buffer<T> variant;          // the model variant's own record of this pass (variant.hpp)
    const T* in = nullptr;      // (B, T, C) the pass input H, owned by the previous stage (null for a loop step
                                //                   computed in a subspace run, loop_subspace.hpp, which keeps
                                //                   neither its input nor rstd nor out)
    buffer<T> rstd;             // (B, T)            of RMSNorm_attn(H) (its output is not kept: the backward
                                //                   recomputes it into the scratch)
    buffer<T> w_qkv;            // (3·n·HD, C)       packed rows of W_Q, W_K, W_V for R (gathered)
    buffer<T> w_o;              // (C, n·HD)         packed columns of W_O for R (gathered)
    bool all_heads = false;     // R is every head in order: the pass used the weights themselves, not copies
    // A loop's passes over the same heads of one layer share one packing (see attention_pass_forward):
    attention_record* packed_source = nullptr;  // set by the caller before the forward: the pass just before
                                                // this one when it is of the same layer, else null
    bool shares_previous = false;  // this pass used packed_source's packed weights
    bool shared_by_next = false;   // the next pass used this one's
    const T* wqkv = nullptr;    // the (3·n·HD, C) and (C, n·HD) weights the pass used: w_qkv and w_o, or the
    const T* wo = nullptr;      //                   model's own W_Q (with W_K, W_V after it) and W_O
    buffer<T> qkv;              // (B, T, 3, n, HD)  RoPE'd q, k and v
    buffer<T> probs;            // what the backend's backward needs: (B, n, T, T) attention matrices, or less
                                //                   (attention_saved_size)
    buffer<T> o;                // (B, T, n, HD)     head outputs, times their gains
    buffer<T> out;              // (B, T, C)         H'
    buffer<T> mask;             // (B, T, C)         dropout mask of the branch (when dropout is on)
    buffer<double> entropy;     // (B, n)            last-row entropy per sequence and head (Eq. 4)
    bool want_entropy = true;   // set by the caller before the forward: whether the pass computes `entropy`
                                // (the model asks only on the passes its entropy report takes)
    std::vector<double> entropy_host;  // (B, n)     its host copy, made by fetch_entropy

    int n() const { return int(heads.size()); }
    bool has_gains() const {
        return !std::all_of(gains.begin(), gains.end(), [](double g) { return g == 1.0; });
    }
    // Brings the entropies of the last forward to the host (a transfer on a GPU backend).
    void fetch_entropy(Backend be, int B) {
        entropy_host.resize(std::size_t(B) * n());
        copy_to_host(be, entropy_host.data(), entropy.data(), std::int64_t(entropy_host.size()));
    }
    // Batch-mean entropy of the i-th head of R (after fetch_entropy).
    double head_entropy(int i, int B) const {
        double s = 0.0;
        for (int b = 0; b < B; ++b) s += entropy_host[std::size_t(b) * n() + i];
        return s / B;
    }
};

// Scratch shared by all passes (sized for n = NH): RMSNorm_attn(H) of the pass at hand (the forward's, then the
// backward's recomputation, so that no pass keeps its own), and the gradients.
template <class T, class Backend>
struct attention_scratch {
    template <class U>
    using buffer = typename Backend::template buffer<U>;
    buffer<T> a;  // (B, T, C)
    buffer<T> dy, da, dqkv, d_o, dw_qkv, dw_o;
    buffer<T> dqkv_hook;  // (B, T, 3, n, HD) a head-output transform's own ∂L/∂qkv (sized by the transform)
};

namespace detail {
inline bool is_all_heads(const std::vector<int>& heads, int NH) {
    if (int(heads.size()) != NH) return false;
    for (int i = 0; i < NH; ++i)
        if (heads[std::size_t(i)] != i) return false;
    return true;
}

// The hook of a pass without a head-output transform.
struct no_head_transform {
    template <class R>
    double forward(R&) {
        return 0.0;
    }
    template <class R, class T, class Buffer>
    bool backward(R&, T* /*d_o*/, Buffer& /*dqkv*/) {
        return false;
    }
};

// The buffers of a pass's core (below), grown for its heads.
template <class T, class Backend>
void grow_pass_core(Backend be, attention_record<T, Backend>& r, const pass_dims& d) {
    const int n = r.n();
    const std::int64_t N = d.tokens();
    grow(r.qkv, N * 3 * n * d.HD);
    grow(r.probs, attention_saved_size<T>(be, d.B, d.T, n, d.HD));
    grow(r.o, N * n * d.HD);
    grow(r.entropy, std::int64_t(d.B) * n);
    if (std::int64_t(r.gain.size()) < n) r.gain_held.clear();  // a growth forgets what `gain` held
    grow(r.gain, n);  // also when unused, so that model::reserve sizes it for a later fade
}

// The core of a pass, from r.qkv holding the projections (normed input) W_QKVᵀ: RoPE on q and k (unless the tables
// are null: q and k come rotated), the attention of Eq. 1-3 (and Eq. 4's entropy where r.want_entropy), the heads'
// gains. Leaves o' in r.o.
template <class T, class Backend>
void pass_core_forward(Backend be, attention_record<T, Backend>& r, const pass_dims& d, const accum_t<T>* rope_cos,
                       const accum_t<T>* rope_sin) {
    const int n = r.n(), nhd = n * d.HD;
    if (rope_cos)
        rope_forward(be, r.qkv.data(), rope_cos, rope_sin, d.B, d.T, 2 * n, d.HD, 3 * std::int64_t(nhd));  // q and k
    attention_forward(be, r.o.data(), r.probs.data(), r.want_entropy ? r.entropy.data() : nullptr, r.qkv.data(), d.B,
                      d.T, n, d.HD);
    if (r.has_gains()) {
        if (r.gain_held != r.gains) {
            const std::vector<T> g(r.gains.begin(), r.gains.end());
            copy_from_host(be, r.gain.data(), g.data(), n);
            r.gain_held = r.gains;
        }
        head_gain_forward(be, r.o.data(), r.gain.data(), d.tokens(), n, d.HD, false);
    }
}

// Its backward but for RoPE's: d_o (∂L/∂o', scaled in place by the gains) → dqkv = ∂L/∂ of the RoPE'd q, k, v
// (r.qkv), with `extra` (a head-output transform's own ∂L/∂qkv, or null) added. rope_backward(dqkv) follows.
template <class T, class Backend>
void pass_core_backward(Backend be, T* dqkv, T* d_o, attention_record<T, Backend>& r, const pass_dims& d,
                        const T* extra = nullptr) {
    const int n = r.n();
    if (r.has_gains())  // constant gains: ∂L/∂o scaled, no gain gradient
        head_gain_backward(be, static_cast<T*>(nullptr), d_o, static_cast<const T*>(nullptr), r.gain.data(),
                           d.tokens(), n, d.HD, false);
    attention_backward(be, dqkv, d_o, r.qkv.data(), r.probs.data(), d.B, d.T, n, d.HD);
    if (extra) accumulate(be, dqkv, extra, d.tokens() * 3 * n * d.HD);
}
}  // namespace detail

// Returns the loss term the hook's transform adds (0 without one). hook.forward(r) transforms r.o in place.
template <class T, class Backend, class Hook = detail::no_head_transform>
double attention_pass_forward(Backend be, attention_record<T, Backend>& r, attention_scratch<T, Backend>& s,
                              const attention_weights<T>& w, const T* in, const pass_dims& d,
                              const accum_t<T>* rope_cos, const accum_t<T>* rope_sin, double dropout, rng& dropout_rng,
                              Hook&& hook = {}) {
    const int n = r.n(), nhd = n * d.HD;
    const std::int64_t N = d.tokens();
    detail::grow(r.rstd, N);
    detail::grow(s.a, N * d.C);
    detail::grow(r.w_qkv, 3 * std::int64_t(nhd) * d.C);
    detail::grow(r.w_o, std::int64_t(d.C) * nhd);
    detail::grow_pass_core(be, r, d);
    detail::grow(r.out, N * d.C);
    r.in = in;

    // The packed weights of R: W_Q, W_K, W_V and W_O themselves when R is every head in order (the parameter
    // table keeps q, k and v adjacent, so that their rows are already one (3C, C) matrix); the packing of the pass
    // before, when it is a pass of the same layer over the same heads (a loop's steps k = 2..K reuse step 1's);
    // else gathered.
    r.all_heads = detail::is_all_heads(r.heads, d.NH) && w.wk == w.wq + std::int64_t(d.C) * d.C &&
                  w.wv == w.wk + std::int64_t(d.C) * d.C;
    r.shares_previous = r.shared_by_next = false;
    attention_record<T, Backend>* const prev = r.packed_source;
    r.packed_source = nullptr;
    if (r.all_heads) {
        r.wqkv = w.wq;
        r.wo = w.wo;
    } else if (prev && !prev->all_heads && prev->heads == r.heads) {
        r.wqkv = prev->wqkv;
        r.wo = prev->wo;
        r.shares_previous = prev->shared_by_next = true;
    } else {
        detail::gather_head_weights(be, r.w_qkv.data(), r.w_o.data(), w, r.heads, d.HD, d.C, d.NH);
        r.wqkv = r.w_qkv.data();
        r.wo = r.w_o.data();
    }

    rmsnorm_forward(be, s.a.data(), r.rstd.data(), in, w.norm, int(N), d.C, d.eps);
    matmul_forward(be, r.qkv.data(), s.a.data(), r.wqkv, int(N), d.C, 3 * nhd);
    detail::pass_core_forward(be, r, d, rope_cos, rope_sin);
    const double extra_loss = hook.forward(r);
    residual_branch_forward(be, r.out.data(), r.mask, r.o.data(), r.wo, in, int(N), nhd, d.C, dropout, dropout_rng);
    return extra_loss;
}

// dres (B, T, C): on entry ∂L/∂H', on exit ∂L/∂H (the identity path plus the branch). Weight gradients
// accumulate into g.
template <class T, class Backend, class Hook = detail::no_head_transform>
void attention_pass_backward(Backend be, T* dres, const attention_grads<T>& g, attention_record<T, Backend>& r,
                             const attention_weights<T>& w, attention_scratch<T, Backend>& s, const pass_dims& d,
                             const accum_t<T>* rope_cos, const accum_t<T>* rope_sin, double dropout,
                             Hook&& hook = {}) {
    const int n = r.n(), nhd = n * d.HD;
    const std::int64_t N = d.tokens();
    detail::grow(s.da, N * d.C);
    detail::grow(s.dqkv, N * 3 * std::int64_t(d.C));
    detail::grow(s.d_o, N * d.C);
    detail::grow(s.dw_qkv, 3 * std::int64_t(d.C) * d.C);
    detail::grow(s.dw_o, std::int64_t(d.C) * d.C);

    const T* dy = residual_branch_grad(be, static_cast<const T*>(dres), s.dy, r.mask.data(), N * d.C, dropout);
    // Weight gradients go straight into g when the pass used the weights themselves (all heads, in order);
    // otherwise into the scratch in packed form, then added to the rows and columns of R's heads. Passes that
    // share one packing (the backward meets them last to first) add up in the scratch, and the first of them
    // scatters the sum once.
    const bool direct = r.all_heads && g.wk == g.wq + std::int64_t(d.C) * d.C && g.wv == g.wk + std::int64_t(d.C) * d.C;
    const bool packed_first = !direct && !r.shared_by_next;  // the scratch is written, not added to
    matmul_backward(be, s.d_o.data(), direct ? g.wo : s.dw_o.data(), dy, r.o.data(), r.wo, int(N), nhd, d.C,
                    overwrite{.din = true, .dw = packed_first});
    const bool hook_dqkv = hook.backward(r, s.d_o.data(), s.dqkv_hook);
    detail::pass_core_backward(be, s.dqkv.data(), s.d_o.data(), r, d, hook_dqkv ? s.dqkv_hook.data() : nullptr);
    rope_backward(be, s.dqkv.data(), rope_cos, rope_sin, d.B, d.T, 2 * n, d.HD, 3 * std::int64_t(nhd));

    rmsnorm_forward(be, s.a.data(), r.rstd.data(), r.in, w.norm, int(N), d.C, d.eps);  // a again, bit for bit
    matmul_backward(be, s.da.data(), direct ? g.wq : s.dw_qkv.data(), s.dqkv.data(), s.a.data(), r.wqkv, int(N), d.C,
                    3 * nhd, overwrite{.din = true, .dw = packed_first});
    if (!direct && !r.shares_previous)
        detail::scatter_add_head_weights(be, g, s.dw_qkv.data(), s.dw_o.data(), r.heads, d.HD, d.C, d.NH);

    rmsnorm_backward(be, dres, g.norm, s.da.data(), r.in, w.norm, r.rstd.data(), int(N), d.C);
}

}  // namespace sgt
