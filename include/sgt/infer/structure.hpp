// sgt/infer/structure.hpp: the frozen structure of a model at inference (spec Sec. 7, Appendix D.4).
//
// After training the loop structure no longer changes: one loop_plan (a checkpoint's Θ at its saved step, its
// fade gain included, or any plan given) runs for every token of every sequence. frozen_structure unrolls it
// into the ordered list of stages a token goes through, exactly as model::forward runs them:
//
//     for each layer l, block_repeat times:  attention pass k = 0 (all heads), k = 1..K_l (S_l; the first one
//                                            over all heads with the fade gain when fading), then the FFN
//
// and gives every attention pass its KV-cache slot. Loop step k's keys and values are projections of H^(k-1),
// so each pass needs its own: per token the cache holds n_l·n_h + Σ_l K_l·|S_l| (key, value) head vectors
// (the fade step counts all heads; Block Loop adds one full set per repeated pass).
#pragma once

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "sgt/core/error.hpp"
#include "sgt/growth.hpp"
#include "sgt/loop_plan.hpp"
#include "sgt/schedule.hpp"
#include "sgt/variant.hpp"

namespace sgt {

// One attention pass of the frozen structure: the heads it computes, their gains, and its cache slot.
struct frozen_pass {
    int layer = 0;
    int repeat = 0;             // which application of the block (Block Loop), 0-based
    int step = 0;               // 0 = the first pass (all heads); 1..K = loop steps of Eq. 6
    std::vector<int> heads;     // R, ascending
    std::vector<double> gains;  // g_i per head of R (1, or the fade gain for heads outside S_l)
    std::int64_t slot_offset = 0;  // head vectors of the cache before this pass's slot (per token)

    int n() const { return int(heads.size()); }
    bool unit_gains() const {
        return std::all_of(gains.begin(), gains.end(), [](double g) { return g == 1.0; });
    }
};

// A stage a token goes through: an attention pass (index into passes) or layer `layer`'s FFN.
struct frozen_stage {
    enum kind_t { attention, ffn } kind;
    int layer;
    int pass;  // attention: index into frozen_structure::passes; ffn: -1
};

struct frozen_structure {
    loop_plan plan;
    std::vector<frozen_pass> passes;   // in execution order; one cache slot each
    std::vector<frozen_stage> stages;  // attention passes and FFNs in execution order
    std::int64_t heads_per_token = 0;  // (key, value) head vectors the cache holds per token

    // Unrolls `plan` (validated for n_layers x n_heads and the loop bound k_max); the heads and gains of each pass
    // are the variant's pass hook (variant.hpp), as in the model. Variants whose passes transform the head outputs
    // are not supported by cached decoding.
    template <class Variant = paper_variant>
    static frozen_structure of(const loop_plan& plan, int n_layers, int n_heads, int k_max, const Variant& v = {}) {
        validate_plan(plan, n_layers, n_heads, k_max);
        frozen_structure s;
        s.plan = plan;
        int last_layer = -1, last_repeat = -1;
        auto close_block = [&] {
            if (last_layer >= 0) s.stages.push_back({frozen_stage::ffn, last_layer, -1});
        };
        for_each_pass(v, plan, n_heads, [&](const pass_site& site, const layer_loop& lp, const pass_spec& spec) {
            require(!v.transforms(site, lp),
                    "structure: the variant transforms the head outputs of layer {} step {}, which cached decoding "
                    "does not support", site.layer, site.step);
            if (site.layer != last_layer || site.repeat != last_repeat) close_block();
            last_layer = site.layer;
            last_repeat = site.repeat;
            frozen_pass p{.layer = site.layer, .repeat = site.repeat, .step = site.step, .heads = spec.heads,
                          .gains = spec.gains, .slot_offset = s.heads_per_token};
            if (p.gains.empty()) p.gains.assign(p.heads.size(), 1.0);
            s.heads_per_token += p.n();
            s.stages.push_back({frozen_stage::attention, site.layer, int(s.passes.size())});
            s.passes.push_back(std::move(p));
        });
        close_block();
        return s;
    }

    // Attention passes per token (the first passes included).
    int attention_passes() const { return int(passes.size()); }
};

// (key, value) head vectors per token that `plan` needs in the cache: n_l·n_h + Σ_l (loop heads), Block Loop's
// repeated passes included.
inline std::int64_t cache_heads_per_token(const loop_plan& plan, int n_heads) {
    std::int64_t n = 0;
    for (const auto& lp : plan.layers) {
        std::int64_t per_repeat = n_heads;
        for (int step = 1; step <= lp.k; ++step)
            per_repeat += (step == 1 && lp.fade > 0.0) ? n_heads : std::int64_t(lp.heads.size());
        n += per_repeat * lp.block_repeat;
    }
    return n;
}

// A short description of a plan: "vanilla", or its looping layers ("layer 3 K=2 S={0,2} fade 0.40; layer 5 x2").
inline std::string describe_plan(const loop_plan& p) {
    std::string out;
    for (std::size_t l = 0; l < p.layers.size(); ++l) {
        const layer_loop& x = p.layers[l];
        if (x.k == 0 && x.block_repeat == 1) continue;
        if (!out.empty()) out += "; ";
        out += "layer " + std::to_string(l);
        if (x.k > 0) {
            out += " K=" + std::to_string(x.k) + " S={";
            for (std::size_t i = 0; i < x.heads.size(); ++i) out += (i ? "," : "") + std::to_string(x.heads[i]);
            out += "}";
            if (x.fade > 0.0) out += fmt::format(" fade {:.2f}", x.fade);
        }
        if (x.block_repeat > 1) out += " x" + std::to_string(x.block_repeat);
    }
    return out.empty() ? "vanilla" : out;
}

// The plan a schedule runs at the step after its saved state (a checkpoint's "schedule" metadata): vanilla,
// static, Block Loop, head loop or SGT (Θ and the fade gain of that step).
inline loop_plan plan_of_schedule(const nlohmann::json& schedule, int n_layers, int n_heads) {
    const std::string kind = schedule.value("schedule", std::string("none"));
    loop_plan p;
    try {
        if (kind == "vanilla") {
            p = loop_plan::vanilla(n_layers);
        } else if (kind == "static") {
            p = detail::plan_from_json(schedule.at("plan"));
        } else if (kind == "block_loop") {
            p = loop_plan::vanilla(n_layers);
            const int repeat = schedule.at("repeat").get<int>();
            for (int l : schedule.at("looped").get<std::vector<int>>()) {
                require(l >= 0 && l < n_layers, "structure: Block Loop layer {} is out of range [0, {})", l, n_layers);
                p.layers[l].block_repeat = repeat;
            }
        } else if (kind == "head_loop") {
            p = loop_plan::vanilla(n_layers);
            const int layer = schedule.at("layer").get<int>();
            require(layer >= 0 && layer < n_layers, "structure: head loop layer {} is out of range [0, {})", layer,
                    n_layers);
            auto selected = schedule.at("selected").get<std::vector<int>>();
            if (selected.empty() && schedule.at("before").get<std::string>() == "all_heads")
                for (int i = 0; i < n_heads; ++i) selected.push_back(i);
            if (!selected.empty()) {
                p.layers[layer].k = schedule.at("k").get<int>();
                p.layers[layer].heads = selected;
            }
        } else if (kind == "sgt") {
            // Θ holds S_l of every active layer; the allocation policy only matters for later activations, so
            // any policy rebuilds the plan.
            nlohmann::json j = schedule;
            j["policy"] = {{"name", "top_h"}};
            p = growth_operator<top_h>::from_json(j).plan();
        } else {
            fail("structure: expected a schedule of kind vanilla, static, block_loop, head_loop or sgt, found \"{}\"",
                 kind);
        }
    } catch (const nlohmann::json::exception& e) {
        fail("structure: the saved {} schedule is malformed: {}", kind, e.what());
    }
    validate_plan(p, n_layers, n_heads);
    return p;
}

}  // namespace sgt
