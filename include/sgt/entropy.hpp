// sgt/entropy.hpp: attention entropy (spec Sec. 2, Eq. 4-5).
//
// For one head and one sequence, the attention row of the LAST query position (it sees all T keys) gives the
// length-normalised entropy E_b = -(1/log T) Σ_j p_j log p_j, in [0, 1]. The head entropy E^(l,i) is its
// mean over the batch (Eq. 4); the layer entropy Ē^(l) the mean over heads (Eq. 5); the intra-layer
// variance the variance over heads. The model takes these from the first attention pass of every layer, in
// the same pass that computes the attention, so it costs one row per head per sequence.
#pragma once

#include <cmath>
#include <limits>
#include <span>
#include <vector>

#include "sgt/core/error.hpp"
#include "sgt/core/row_entropy.hpp"

namespace sgt {

// Entropies measured in one forward pass.
struct entropy_report {
    int layers = 0;
    int heads = 0;
    std::vector<double> first_pass;  // (NL, NH): batch-mean last-row entropy of the first attention pass
    std::vector<double> last_loop;   // (NL, NH): the same for the last loop step of heads that looped, NaN else

    entropy_report() = default;
    entropy_report(int n_layers, int n_heads)
        : layers(n_layers), heads(n_heads), first_pass(std::size_t(n_layers) * n_heads, 0.0),
          last_loop(std::size_t(n_layers) * n_heads, std::numeric_limits<double>::quiet_NaN()) {}

    double head(int l, int i) const { return first_pass[std::size_t(l) * heads + i]; }
    std::span<const double> layer_heads(int l) const {
        return {first_pass.data() + std::size_t(l) * heads, std::size_t(heads)};
    }
    // Ē^(l): mean over heads (Eq. 5).
    double layer_mean(int l) const {
        double s = 0.0;
        for (double e : layer_heads(l)) s += e;
        return s / heads;
    }
    // Intra-layer variance over heads (population variance; Observation 2's maturation signal).
    double layer_variance(int l) const {
        const double m = layer_mean(l);
        double s = 0.0;
        for (double e : layer_heads(l)) s += (e - m) * (e - m);
        return s / heads;
    }
    std::vector<double> layer_means() const {
        std::vector<double> out(layers);
        for (int l = 0; l < layers; ++l) out[l] = layer_mean(l);
        return out;
    }
};

// Exponential moving average across steps: Ê_t = α Ê_{t-1} + (1-α) E_t; α = 0 is the instantaneous value.
// The first observation initialises the average.
class entropy_ema {
public:
    explicit entropy_ema(double alpha = 0.0) : alpha_(alpha) {
        require(alpha >= 0.0 && alpha < 1.0, "entropy EMA: expected alpha in [0, 1), found {}", alpha);
    }
    void update(std::span<const double> e) {
        if (value_.empty()) {
            value_.assign(e.begin(), e.end());
            return;
        }
        require(e.size() == value_.size(), "entropy EMA: expected {} values, found {}", value_.size(), e.size());
        for (std::size_t i = 0; i < e.size(); ++i) value_[i] = alpha_ * value_[i] + (1.0 - alpha_) * e[i];
    }
    const std::vector<double>& value() const { return value_; }
    bool empty() const { return value_.empty(); }
    double alpha() const { return alpha_; }
    void reset() { value_.clear(); }

private:
    double alpha_;
    std::vector<double> value_;
};

}  // namespace sgt
