// tests/gradcheck.hpp: central finite differences (fourth order) in double, the oracle for every backward pass.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "sgt/core/rng.hpp"

namespace sgt::test {

struct grad_error {
    double max_rel = 0.0;   // max over entries of |a − n| / max(|a|, |n|), entries above the floor
    double max_abs = 0.0;   // max over all entries of |a − n|, relative to max |n|
    double scale = 0.0;     // max |n|
    int checked = 0;
};

// Compares `analytic` (∂f/∂x at x) with central differences of f at the listed indices of x (all when empty).
// Entries whose gradient is below 1e-4 of the largest are compared absolutely (max_abs), the rest relatively.
inline grad_error compare_gradient(std::span<double> x, std::span<const double> analytic,
                                   const std::function<double()>& f, std::vector<std::size_t> idx = {},
                                   double h = 1e-4) {
    if (idx.empty())
        for (std::size_t i = 0; i < x.size(); ++i) idx.push_back(i);
    std::vector<double> num(idx.size());
    for (std::size_t k = 0; k < idx.size(); ++k) {
        const double x0 = x[idx[k]];
        auto at = [&](double dx) {
            x[idx[k]] = x0 + dx;
            return f();
        };
        // Fourth-order central difference: truncation error O(h⁴) instead of O(h²).
        num[k] = (8.0 * (at(h) - at(-h)) - (at(2 * h) - at(-2 * h))) / (12.0 * h);
        x[idx[k]] = x0;
    }
    grad_error e;
    for (double v : num) e.scale = std::max(e.scale, std::abs(v));
    for (std::size_t k = 0; k < idx.size(); ++k) {
        const double a = analytic[idx[k]], n = num[k], diff = std::abs(a - n);
        e.max_abs = std::max(e.max_abs, diff / std::max(e.scale, 1e-300));
        if (std::max(std::abs(a), std::abs(n)) >= 1e-4 * e.scale)
            e.max_rel = std::max(e.max_rel, diff / std::max(std::abs(a), std::abs(n)));
        ++e.checked;
    }
    return e;
}

// `count` distinct random indices in [0, n) (all of them when count ≥ n).
inline std::vector<std::size_t> sample_indices(std::size_t n, std::size_t count, rng& r) {
    std::vector<std::size_t> all(n);
    for (std::size_t i = 0; i < n; ++i) all[i] = i;
    if (count >= n) return all;
    for (std::size_t i = 0; i < count; ++i) std::swap(all[i], all[i + r.below(n - i)]);
    all.resize(count);
    return all;
}

inline std::vector<double> random_vector(std::size_t n, rng& r, double scale = 1.0) {
    std::vector<double> v(n);
    for (auto& x : v) x = scale * r.normal();
    return v;
}

// The threshold of the issue: max relative error ≤ 1e-6 against central differences.
inline void check_gradient(const grad_error& e, const std::string& what) {
    INFO(what << ": max rel " << e.max_rel << ", max abs/scale " << e.max_abs << ", scale " << e.scale << ", "
              << e.checked << " entries");
    CHECK(e.checked > 0);
    CHECK(e.scale > 0.0);
    CHECK(e.max_rel <= 1e-6);
    CHECK(e.max_abs <= 1e-6);
}

// A model's gradients (forward + backward from zero) against central differences of its loss, on up to
// `per_tensor` entries (sampled with a fixed seed) of each tensor named in `names`, in that order.
template <class Model, class Batch, class Plan>
void check_named_gradients(Model& m, const Batch& b, const Plan& plan, const std::vector<std::string>& names,
                           const std::string& what, std::size_t per_tensor) {
    m.zero_grad();
    m.forward(b, plan);
    m.backward();
    const std::vector<double> analytic(m.gradients().begin(), m.gradients().end());
    rng r(5);
    std::vector<std::size_t> idx;
    for (const auto& name : names) {
        const auto& e = m.entry(name);
        for (auto i : sample_indices(std::size_t(e.numel()), per_tensor, r)) idx.push_back(std::size_t(e.offset) + i);
    }
    const auto err = compare_gradient(m.parameters(), analytic, [&] { return m.forward(b, plan); }, idx);
    check_gradient(err, what);
}

}  // namespace sgt::test
