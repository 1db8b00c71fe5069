// sgt/core/row_entropy.hpp: the length-normalised entropy of one attention row (spec Sec. 2, Eq. 4), the one
// formula every backend's attention kernel measures; entropy.hpp aggregates it over heads and layers.
#pragma once

#include <cmath>
#include <span>

namespace sgt {

// Length-normalised entropy of one probability row over n = p.size() entries (0 log 0 = 0). A row of one
// entry (a one-token sequence) has no uncertainty: its entropy is 0.
template <class T>
double row_entropy(std::span<const T> p) {
    if (p.size() < 2) return 0.0;
    double s = 0.0;
    for (T v : p)
        if (v > T(0)) s -= double(v) * std::log(double(v));
    return s / std::log(double(p.size()));
}

}  // namespace sgt
