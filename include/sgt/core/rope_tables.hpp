// sgt/core/rope_tables.hpp: the angles of rotary position embedding (spec Sec. 1), computed on the host in double
// so that every backend rotates by exactly the same cos/sin values: pair j at position t turns by t·base^(−2j/HD).
#pragma once

#include <cmath>

namespace sgt::detail {

// cos_table, sin_table (T, HD/2), host memory.
template <class A>
void rope_tables_host(A* cos_table, A* sin_table, int T_, int HD, double base) {
    const int half = HD / 2;
    for (int t = 0; t < T_; ++t)
        for (int j = 0; j < half; ++j) {
            const double angle = t * std::pow(base, -2.0 * j / HD);
            cos_table[t * half + j] = A(std::cos(angle));
            sin_table[t * half + j] = A(std::sin(angle));
        }
}

}  // namespace sgt::detail
