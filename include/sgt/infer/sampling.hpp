// sgt/infer/sampling.hpp: choosing the next token from a row of logits: greedy, temperature, top-k, top-p
// (nucleus), with a seeded sgt::rng so that a generation is reproducible on any machine.
//
//     temperature 0          greedy: the argmax (ties to the lower token id)
//     temperature τ > 0      p ∝ exp(logit / τ), restricted to the top_k highest logits (top_k > 0) and then to
//                            the smallest set of highest-probability tokens whose mass reaches top_p (top_p < 1),
//                            renormalised; one uniform draw picks the token
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <span>
#include <type_traits>
#include <vector>

#include "sgt/core/error.hpp"
#include "sgt/core/rng.hpp"

namespace sgt {

struct sampling_options {
    double temperature = 1.0;  // 0: greedy
    int top_k = 0;             // 0: off
    double top_p = 1.0;        // in (0, 1]; 1: off
    std::uint64_t seed = 0;

    void validate() const {
        require(std::isfinite(temperature) && temperature >= 0.0,
                "sampling: expected a temperature >= 0 (0 = greedy), found {}", temperature);
        require(top_k >= 0, "sampling: expected top_k >= 0 (0 = off), found {}", top_k);
        require(top_p > 0.0 && top_p <= 1.0, "sampling: expected top_p in (0, 1], found {}", top_p);
    }
};

namespace detail {
template <class U>
double as_double(const U& x) {
    if constexpr (std::is_floating_point_v<U>)
        return double(x);
    else
        return double(float(x));  // bf16 and other storage types convert through float
}
}  // namespace detail

// The index of the largest value (the lowest index among equals).
template <class U>
int argmax(std::span<const U> logits) {
    int best = 0;
    for (int i = 1; i < int(logits.size()); ++i)
        if (detail::as_double(logits[i]) > detail::as_double(logits[best])) best = i;
    return best;
}

class sampler {
public:
    explicit sampler(sampling_options o) : o_(o), rng_(o.seed) { o_.validate(); }

    // The candidate tokens and their probabilities after temperature, top-k and top-p (for greedy: the argmax
    // with probability 1), highest first; what sample() draws from.
    template <class U>
    std::vector<std::pair<int, double>> distribution(std::span<const U> logits) const {
        require(!logits.empty(), "sampling: expected a row of logits, found an empty one");
        if (o_.temperature == 0.0) return {{argmax(logits), 1.0}};
        const int V = int(logits.size());
        std::vector<int> order(std::size_t(V), 0);
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
            return detail::as_double(logits[a]) > detail::as_double(logits[b]);
        });
        const int k = o_.top_k > 0 ? std::min(o_.top_k, V) : V;
        const double top = detail::as_double(logits[order[0]]);
        std::vector<std::pair<int, double>> d;
        double z = 0.0;
        for (int i = 0; i < k; ++i) {
            const double w = std::exp((detail::as_double(logits[order[i]]) - top) / o_.temperature);
            d.emplace_back(order[i], w);
            z += w;
        }
        double mass = 0.0;
        std::size_t keep = d.size();
        for (std::size_t i = 0; i < d.size(); ++i) {
            d[i].second /= z;
            mass += d[i].second;
            if (o_.top_p < 1.0 && mass >= o_.top_p && keep == d.size()) keep = i + 1;
        }
        d.resize(keep);
        const double kept = std::accumulate(d.begin(), d.end(), 0.0, [](double s, const auto& e) { return s + e.second; });
        for (auto& e : d) e.second /= kept;
        return d;
    }

    // Draws the next token from a row of logits (V).
    template <class U>
    int sample(std::span<const U> logits) {
        const auto d = distribution(logits);
        if (d.size() == 1) return d[0].first;
        const double u = rng_.uniform();
        double c = 0.0;
        for (const auto& [token, p] : d) {
            c += p;
            if (u < c) return token;
        }
        return d.back().first;  // u within rounding of 1
    }

    const sampling_options& options() const { return o_; }

private:
    sampling_options o_;
    rng rng_;
};

}  // namespace sgt
