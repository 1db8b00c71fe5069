// sgt/loop_plan.hpp: the run-time loop structure of a model at one training step.
//
// A loop_plan says, for every layer, how many head-sparse loop steps follow the first attention pass (K_l of
// Eq. 6), over which heads (S_l), whether the first loop step is in its `fade` transition (spec Sec. 4), and
// whether the whole block is repeated (the Block Loop baseline). The growth operator (growth.hpp) produces
// one per step; the model (model.hpp) executes it. Vanilla, Attention Loop, high/low-entropy loops, Block
// Loop and SGT are all just loop plans.
#pragma once

#include <limits>
#include <string>
#include <vector>

#include "sgt/config.hpp"
#include "sgt/core/error.hpp"

namespace sgt {

struct layer_loop {
    int k = 0;               // K_l: loop steps over S_l after the first attention pass (0 = no loop)
    std::vector<int> heads;  // S_l: the looped heads, ascending, 0-based
    // Fade transition: when fade > 0, loop step 1 runs ALL heads; the heads outside S_l contribute with gain
    // `fade` (in (0, 1]), those in S_l with gain 1. Loop steps 2..k run S_l only. fade = 0: S_l only.
    double fade = 0.0;
    int block_repeat = 1;    // Block Loop: the whole block (attention + FFN) is applied this many times

    bool operator==(const layer_loop&) const = default;
};

struct loop_plan {
    std::vector<layer_loop> layers;  // (NL)

    static loop_plan vanilla(int n_layers) { return loop_plan{std::vector<layer_loop>(n_layers)}; }
    bool operator==(const loop_plan&) const = default;
};

// Throws sgt::error unless `p` is a plan a model of n_layers x n_heads can run: K ≥ 0, block_repeat ≥ 1,
// fade in [0, 1], S ascending, unique, in range, and not empty where K > 0, and K ≤ k_max (the compile-time
// loop budget of the model that runs it).
inline void validate_plan(const loop_plan& p, int n_layers, int n_heads, int k_max = std::numeric_limits<int>::max()) {
    require(static_cast<int>(p.layers.size()) == n_layers, "loop plan: expected {} layers, found {}", n_layers,
            p.layers.size());
    for (int l = 0; l < n_layers; ++l) {
        const auto& x = p.layers[l];
        require(x.k >= 0, "loop plan: layer {} has K = {}, expected K ≥ 0", l, x.k);
        require(x.k <= k_max, "loop plan: layer {} has K = {}, expected K ≤ K_max = {}", l, x.k, k_max);
        require(x.block_repeat >= 1, "loop plan: layer {} has block_repeat = {}, expected ≥ 1", l, x.block_repeat);
        require(x.fade >= 0.0 && x.fade <= 1.0, "loop plan: layer {} has fade = {}, expected [0, 1]", l, x.fade);
        require(x.k == 0 || !x.heads.empty(), "loop plan: layer {} loops K = {} times over no heads", l, x.k);
        for (std::size_t i = 0; i < x.heads.size(); ++i) {
            require(x.heads[i] >= 0 && x.heads[i] < n_heads, "loop plan: layer {} loops head {}, out of range [0, {})",
                    l, x.heads[i], n_heads);
            require(i == 0 || x.heads[i - 1] < x.heads[i], "loop plan: layer {} heads must be ascending and unique",
                    l);
        }
    }
}

// As above, and within a model's compile-time loop budget: K ≤ K_max, block_repeat ≤ K_max + 1 (a repeated
// block counts as loop depth), and at most L layers that loop (K > 0 or block_repeat > 1). These bound the passes,
// and so the buffers that model::reserve(model::budget_plan()) sizes. The budget's h is not a bound here: every
// pass is sized for all heads (the fade step and the Attention Loop baseline run all of them); it bounds the
// head sets that SGT's growth operator chooses, where those plans are made.
inline void validate_plan(const loop_plan& p, int n_layers, int n_heads, const loop_budget& b) {
    validate_plan(p, n_layers, n_heads, b.k_max);
    std::string looping;
    int count = 0;
    for (int l = 0; l < n_layers; ++l) {
        const auto& x = p.layers[l];
        require(x.block_repeat <= b.k_max + 1,
                "loop plan: layer {} has block_repeat = {}, expected ≤ K_max + 1 = {} (the model's loop budget)", l,
                x.block_repeat, b.k_max + 1);
        if (x.k > 0 || x.block_repeat > 1) {
            looping += (count ? ", " : "") + std::to_string(l);
            ++count;
        }
    }
    require(count <= b.L, "loop plan: {} layers loop ({}), expected at most L = {} (the model's loop budget)", count,
            looping, b.L);
}

}  // namespace sgt
