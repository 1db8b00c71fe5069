// examples/variants/loop_gain.hpp: a looped-attention variant written against sgt's public API only (no edit
// to include/sgt): a learned, input-independent gain per layer l, loop step k and head i,
//
//     loop step k of layer l:   o_i ← g_{l,k,i} · o_i   before W_O,   g initialised to 1,
//
// so training can turn a loop step's heads up or down (the paper's loop steps all have gain 1). It uses the
// three hooks of sgt/variant.hpp: add_parameters (the tensors "model.layers.<l>.self_attn.loop_gain", shape
// (K_max, NH), not decayed, saved and resumed with the checkpoint), transforms / transform_forward /
// transform_backward (the gain and its gradient, through the backend's head_gain ops) and extra_flops.
// docs/EXTENDING.md walks through it.
#pragma once

#include <string>

#include <sgt/params.hpp>
#include <sgt/variant.hpp>

namespace loop_gain_example {

struct loop_gain_variant : sgt::paper_variant {
    static std::string gain_name(int layer) { return sgt::layer_param_name(layer, "self_attn.loop_gain"); }

    // One (K_max, NH) gain tensor per layer, all ones: the model starts as the paper's.
    void add_parameters(const sgt::model_config& c, sgt::parameter_table& table) const {
        if (c.loops.k_max == 0) return;
        for (int l = 0; l < c.shape.layers; ++l)
            table.add(gain_name(l), {c.loops.k_max, c.shape.heads}, false, sgt::param_init::constant(1.0));
    }

    // Loop steps only; the first pass of a layer is left as it is.
    bool transforms(const sgt::pass_site& site, const sgt::layer_loop&) const { return site.step > 0; }

    // o (N, n, HD) ← g ⊙ o, with g the gains of this loop step's heads R. Saved for the backward: the input o
    // and the gathered gains.
    template <class T, class Backend>
    double transform_forward(Backend be, sgt::pass_context<T, Backend>& c, T* o) {
        const std::int64_t N = c.d.tokens(), values = N * c.n() * c.d.HD;
        if (std::int64_t(c.saved->size()) < values + 2 * c.n()) c.saved->resize(std::size_t(values + 2 * c.n()));
        T* o_in = c.saved->data();
        T* g = o_in + values;
        const T* step_gains = c.weight(gain_name(c.site.layer)) + std::int64_t(c.site.step - 1) * c.d.NH;  // (NH)
        gather_head_rows(be, g, step_gains, c.heads, 1, 1);  // the n gains of R, in R's order
        copy(be, o_in, o, values);
        head_gain_forward(be, o, g, N, c.n(), c.d.HD, false);
        return 0.0;  // no loss term
    }

    // ∂L/∂o ← g ⊙ ∂L/∂o', and ∂L/∂g_i = Σ o_i · ∂L/∂o'_i scattered back into the (K_max, NH) tensor's gradient.
    template <class T, class Backend>
    bool transform_backward(Backend be, sgt::pass_context<T, Backend>& c, T* d_o, T* /*dqkv*/) {
        const std::int64_t N = c.d.tokens(), values = N * c.n() * c.d.HD;
        T* o_in = c.saved->data();
        T* g = o_in + values;
        T* dg = g + c.n();
        fill_zero(be, dg, c.n());
        head_gain_backward(be, dg, d_o, o_in, g, N, c.n(), c.d.HD, false);
        T* step_grads = c.grad(gain_name(c.site.layer)) + std::int64_t(c.site.step - 1) * c.d.NH;
        scatter_add_head_rows(be, step_grads, dg, c.heads, 1, 1);
        return false;  // no gradient of its own for q, k, v
    }

    // Per token: one multiply per head value in the forward, two in the backward (the scaling and the dot).
    double extra_flops(const sgt::model_shape& s, const sgt::pass_site& site, const sgt::pass_spec& p, int) const {
        return site.step > 0 ? 3.0 * double(p.heads.size()) * s.head_dim : 0.0;
    }
};

}  // namespace loop_gain_example
