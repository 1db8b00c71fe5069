// bench/plans.hpp: the loop structures every benchmark compares (the same as bench/torch_step.py's), and the
// batch they run on.
#pragma once

#include <chrono>
#include <cstdint>
#include <exception>
#include <string>
#include <type_traits>
#include <vector>

#include "sgt/core/error.hpp"
#include "sgt/config.hpp"
#include "sgt/core/rng.hpp"
#include "sgt/data/batch.hpp"
#include "sgt/loop_plan.hpp"

namespace sgt_bench {

// The structures benchmarked: vanilla; SGT at its full budget (L = 3 deepest non-first layers, h = 2 heads,
// K = K_max = 3); Block Loop over the same 3 layers.
inline sgt::loop_plan make_plan(const std::string& name, const sgt::model_shape& s, const sgt::loop_budget& b) {
    sgt::loop_plan p = sgt::loop_plan::vanilla(s.layers);
    if (name == "vanilla") return p;
    for (int i = 0; i < b.L; ++i) {
        auto& l = p.layers[s.layers - 1 - i];
        if (name == "sgt") {
            l.k = b.k_max;
            for (int h = 0; h < b.h; ++h) l.heads.push_back(h);
        } else if (name == "block") {
            l.block_repeat = 2;
        } else {
            sgt::fail("unknown plan '{}': expected vanilla, sgt or block", name);
        }
    }
    return p;
}

// B x T random tokens and targets below `vocab` (never all zeros, which would time a different computation).
inline sgt::batch random_batch(int B, int T, int vocab, std::uint64_t seed) {
    sgt::rng r(seed);
    sgt::batch b{B, T, {}, {}};
    for (int i = 0; i < B * T; ++i) {
        b.inputs.push_back(std::int32_t(r.below(vocab)));
        b.targets.push_back(std::int32_t(r.below(vocab)));
    }
    return b;
}

// The models the inference benchmarks (bench_infer, bench_infer_cpu) decode with: a 4096-token context.
inline constexpr sgt::model_config gpt2_infer = sgt::with_max_seq(sgt::presets::gpt2, 4096);
inline constexpr sgt::model_config char_small_infer = sgt::with_max_seq(sgt::presets::char_small, 4096);

// run.template operator()<Cfg>() for the inference model named `model` (gpt2 or char_small).
template <class Run>
auto with_infer_model(const std::string& model, Run&& run) {
    if (model == "gpt2") return run.template operator()<gpt2_infer>();
    if (model != "char_small") sgt::fail("--models: expected gpt2 or char_small, found '{}'", model);
    return run.template operator()<char_small_infer>();
}

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// One element of an option's list as a number (int, std::int64_t or double), or an sgt::error that names the
// option and what it found.
template <class N>
N parse_number(const std::string& x, const char* what) {
    std::size_t used = 0;
    N v{};
    try {
        if constexpr (std::is_same_v<N, int>) v = std::stoi(x, &used);
        else if constexpr (std::is_same_v<N, std::int64_t>) v = std::stoll(x, &used);
        else v = std::stod(x, &used);
    } catch (const std::exception&) {
        used = 0;
    }
    if (x.empty() || used != x.size()) sgt::fail("{}: expected a number, found '{}'", what, x);
    return v;
}

// "a,b,,c" -> {"a", "b", "c"}: the benchmarks' comma-separated option lists.
inline std::vector<std::string> split_list(const std::string& s) {
    std::vector<std::string> out;
    std::string cur;
    for (char c : s + ",") {
        if (c == ',') {
            if (!cur.empty()) out.push_back(cur);
            cur.clear();
        } else {
            cur += c;
        }
    }
    return out;
}

}  // namespace sgt_bench
