// sgt/loop_plan.hpp: the run-time loop structure of a model at one training step.
//
// A loop_plan says, for every layer, how many head-sparse loop steps follow the first attention pass (K_l of
// Eq. 6), over which heads (S_l), whether the first loop step is in its `fade` transition (spec Sec. 4), and
// whether the whole block is repeated (the Block Loop baseline). The growth operator (growth.hpp) produces
// one per step; the model (model.hpp) executes it. Vanilla, Attention Loop, high/low-entropy loops, Block
// Loop and SGT are all just loop plans.
#pragma once

#include <vector>

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

}  // namespace sgt
