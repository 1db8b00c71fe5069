// sgt/flops.hpp: the training cost model of spec Sec. 6 (the FLOPs column of the paper's Tables 1 and 2), and MFU.
//
// Per token, forward + backward, the convention of OLMo (the paper's framework):
//     vanilla                        6·P + 12·n_l·d·T        P = matrix_params(), both embeddings included;
//                                                            the second term is QKᵀ and AV
//     each extra block application   6·P_layer + 12·d·T      (Block Loop: block_repeat - 1 extra applications)
//     each head-sparse loop step     |heads run| / n_h · (6·4d² + 12·d·T)
// A loop step runs S_l, except loop step 1 of a layer in its fade window (layer_loop::fade > 0), which runs all
// n_h heads. With block_repeat r, each of the r applications includes the layer's loop steps. A model variant
// (variant.hpp) decides the heads of each pass, and its transforms report the FLOPs they add.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <utility>

#include "sgt/config.hpp"
#include "sgt/core/error.hpp"
#include "sgt/core/json.hpp"
#include "sgt/loop_plan.hpp"
#include "sgt/variant.hpp"

namespace sgt {

// Training FLOPs of one token of a sequence of length T under `plan`, forward and backward. The passes are
// those the model runs (variant.hpp's for_each_pass: the variant decides each pass's heads), plus what the
// variant's transforms add.
template <class Variant = paper_variant>
double token_flops(const model_shape& s, int T, const loop_plan& plan, const Variant& variant = Variant{}) {
    require(static_cast<int>(plan.layers.size()) == s.layers, "flops: expected a plan of {} layers, found {}",
            s.layers, plan.layers.size());
    require(T >= 1, "flops: sequence length must be positive, found {}", T);
    const double d = s.width();
    const double attention_cost = 12.0 * d * T;          // QKᵀ and AV of one layer, all heads
    const double all_head_loop = 6.0 * 4.0 * d * d + attention_cost;  // one loop step over all heads
    const double layer_cost = 6.0 * double(s.layer_matrix_params()) + attention_cost;
    double f = 6.0 * double(s.matrix_params()) + s.layers * attention_cost;
    for_each_pass(variant, plan, s.heads, [&](const pass_site& site, const layer_loop&, const pass_spec& p) {
        if (site.step > 0)
            f += double(p.heads.size()) / s.heads * all_head_loop;  // a loop step over |R| heads
        else if (site.repeat > 0)
            f += layer_cost;  // a repeated block application (its loop steps are counted above)
        f += variant.extra_flops(s, site, p, T);
    });
    return f;
}

// Training FLOPs of one step of B sequences of T tokens.
template <class Variant = paper_variant>
double step_flops(const model_shape& s, std::int64_t B, int T, const loop_plan& plan, const Variant& variant = Variant{}) {
    require(B >= 1, "flops: batch must be positive, found {}", B);
    return double(B) * T * token_flops(s, T, plan, variant);
}

// Accumulates the FLOPs of a run, step by step, next to what a vanilla model would have cost.
class flops_counter {
public:
    // The FLOPs of one step under a plan; the paper's model unless given (a model's step_flops, for a variant).
    using step_cost = std::function<double(std::int64_t batch, int seq, const loop_plan&)>;

    flops_counter(const model_shape& shape, std::int64_t batch, int seq, step_cost cost = {})
        : shape_(shape), batch_(batch), seq_(seq), cost_(std::move(cost)),
          vanilla_step_(step_flops(shape, batch, seq, loop_plan::vanilla(shape.layers))) {
        if (!cost_)
            cost_ = [s = shape_](std::int64_t B, int T, const loop_plan& p) { return step_flops(s, B, T, p); };
    }

    // Adds `steps` steps that run `plan`.
    void add(const loop_plan& plan, std::int64_t steps = 1) {
        require(steps >= 0, "flops counter: expected a non-negative step count, found {}", steps);
        total_ += double(steps) * cost_(batch_, seq_, plan);
        vanilla_ += double(steps) * vanilla_step_;
        steps_ += steps;
    }

    double total() const { return total_; }
    double vanilla_total() const { return vanilla_; }
    // total / vanilla - 1: the overhead the paper quotes as "+x%" (times 100).
    double overhead() const { return vanilla_ > 0.0 ? total_ / vanilla_ - 1.0 : 0.0; }
    std::int64_t steps() const { return steps_; }
    std::int64_t tokens() const { return steps_ * batch_ * seq_; }

    nlohmann::json to_json() const {
        return {{"steps", steps_}, {"tokens", tokens()}, {"flops", total_}, {"vanilla_flops", vanilla_},
                {"overhead", overhead()}};
    }
    // Restores the counts of to_json() (a resumed run goes on counting where it stopped). Validates first: a
    // malformed value throws sgt::error and changes nothing.
    void load_json(const nlohmann::json& j) {
        constexpr std::string_view where = "flops counter";
        const auto steps = json_get<std::int64_t>(j, "steps", where);
        const auto total = json_get<double>(j, "flops", where);
        const auto vanilla = json_get<double>(j, "vanilla_flops", where);
        require(steps >= 0 && total >= 0.0 && vanilla >= 0.0,
                "flops counter: expected non-negative counts, found steps {}, flops {}, vanilla_flops {}", steps, total,
                vanilla);
        steps_ = steps;
        total_ = total;
        vanilla_ = vanilla;
    }

private:
    model_shape shape_;
    std::int64_t batch_;
    int seq_;
    step_cost cost_;
    double vanilla_step_;
    double total_ = 0.0;
    double vanilla_ = 0.0;
    std::int64_t steps_ = 0;
};

// Peak dense throughputs from the vendors' data sheets, in FLOP/s, for MFU.
namespace peak_flops {
inline constexpr double h100_sxm_bf16 = 989.5e12;  // NVIDIA H100 SXM5, BF16 tensor core, dense (no sparsity)
inline constexpr double a100_bf16 = 312e12;        // NVIDIA A100 (SXM4/PCIe), BF16 tensor core, dense
}  // namespace peak_flops

// Model FLOPs utilisation: the fraction of the peak that `flops` done in `seconds` represent.
inline double mfu(double flops, double seconds, double peak) {
    require(seconds > 0.0, "mfu: seconds must be positive, found {}", seconds);
    require(peak > 0.0, "mfu: peak FLOP/s must be positive, found {}", peak);
    return flops / (seconds * peak);
}

}  // namespace sgt
