// sgt/variant.hpp: the pass hook, through which a looped-attention variant changes what a pass computes
// without a copy of the model (DESIGN.md, "Extension points").
//
// The model (model.hpp) runs, for every layer, block application and pass (step 0 = the first pass over all
// heads, steps 1..K_l = the loop steps of Eq. 6), one attention pass (attention.hpp). Its Variant policy decides:
//
//   pass(site, lp, NH)        the heads R the pass computes and a constant gain per head (pass_spec)
//   add_parameters(c, table)  tensors of its own, appended to the model's parameter table: they are initialised,
//                             updated by AdamW, saved and loaded by checkpoints like the decoder's
//   transforms(site, lp)      whether the pass's head outputs go through its transform, which is
//   transform_forward         o (B, T, n, HD) → o', in place, between the attention core (and the gains) and
//                             W_O; may read the pass's q, k, v and its own parameters; returns a loss term
//                             added to the model's loss (0 for none)
//   transform_backward        ∂L/∂o' → ∂L/∂o in place; accumulates its parameters' gradients; may write
//                             ∂L/∂qkv of its own (returning true), which the pass adds to the attention core's
//   extra_flops(s, site, spec, T)  the training FLOPs per token (forward + backward) its transform adds
//
// paper_variant is the paper's model: R = all heads on the first pass, S_l on loop steps, and the fade transition
// of spec Sec. 4 (loop step 1 of a fading layer runs all heads, those outside S_l at gain `fade`) expressed as
// the pass's constant gains. A variant derives from it and redeclares what it changes (docs/EXTENDING.md).
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "sgt/config.hpp"
#include "sgt/core/buffers.hpp"
#include "sgt/loop_plan.hpp"
#include "sgt/params.hpp"

namespace sgt {

// Which pass: layer l, block application `repeat` (0-based; Block Loop repeats the whole block), and `step`
// (0 = the first attention pass of the application, k = its k-th loop step).
struct pass_site {
    int layer = 0;
    int repeat = 0;
    int step = 0;
};

// What one pass computes: the heads R (ascending) and a constant gain per head of R (empty: every gain is 1).
struct pass_spec {
    std::vector<int> heads;
    std::vector<double> gains;
};

// What a variant's transform sees of one pass. Pointers are the backend's memory.
template <class T, class Backend>
struct pass_context {
    template <class U>
    using buffer = typename Backend::template buffer<U>;

    pass_site site;
    std::span<const int> heads;  // R
    pass_dims d;
    const T* qkv = nullptr;      // (B, T, 3, n, HD): RoPE'd q, k and v of the heads of R
    buffer<T>* saved = nullptr;  // the variant's own record of this pass: it sizes it in the forward, reads it
                                 // in the backward (detail::grow keeps it allocated across steps)
    const parameter_table* table = nullptr;
    T* params = nullptr;         // the model's parameter and gradient buffers (table order)
    T* grads = nullptr;

    int n() const { return int(heads.size()); }
    T* weight(std::string_view name) const { return params + table->at(name).offset; }
    T* grad(std::string_view name) const { return grads + table->at(name).offset; }
};

// The paper's model; the default Variant of sgt::model, and the base of user variants.
struct paper_variant {
    void add_parameters(const model_config&, parameter_table&) const {}

    // Heads and gains of a pass (spec Sec. 1, 4; Eq. 6): the first pass runs all heads; loop step k runs S_l,
    // except loop step 1 of a fading layer, which runs all heads with gain `fade` on those outside S_l.
    pass_spec pass(const pass_site& site, const layer_loop& lp, int n_heads) const {
        pass_spec p;
        if (site.step == 0 || (site.step == 1 && lp.fade > 0.0)) {
            bool fading = false;
            for (int i = 0; i < n_heads; ++i) {
                p.heads.push_back(i);
                const bool selected = site.step == 0 || std::binary_search(lp.heads.begin(), lp.heads.end(), i);
                p.gains.push_back(selected ? 1.0 : lp.fade);
                fading = fading || !selected;
            }
            if (!fading) p.gains.clear();
        } else {
            p.heads = lp.heads;
        }
        return p;
    }

    bool transforms(const pass_site&, const layer_loop&) const { return false; }
    template <class T, class Backend>
    double transform_forward(Backend, pass_context<T, Backend>&, T* /*o*/) {
        return 0.0;
    }
    template <class T, class Backend>
    bool transform_backward(Backend, pass_context<T, Backend>&, T* /*d_o*/, T* /*dqkv*/) {
        return false;
    }
    double extra_flops(const model_shape&, const pass_site&, const pass_spec&, int /*T*/) const { return 0.0; }
};

// The passes a plan runs, in execution order, with what the variant makes of each: the one walk of a plan that
// the model, the FLOPs count and any analysis share. f(site, layer_loop, pass_spec).
template <class Variant, class F>
void for_each_pass(const Variant& v, const loop_plan& plan, int n_heads, F&& f) {
    for (int l = 0; l < static_cast<int>(plan.layers.size()); ++l) {
        const layer_loop& lp = plan.layers[l];
        for (int rep = 0; rep < lp.block_repeat; ++rep)
            for (int step = 0; step <= lp.k; ++step) {
                const pass_site site{l, rep, step};
                f(site, lp, v.pass(site, lp, n_heads));
            }
    }
}

}  // namespace sgt
