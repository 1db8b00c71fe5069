// sgt/backend/cpu/embedding.hpp: token embedding lookup h = E[x], forward and backward.
#pragma once

#include <cstdint>

#include "sgt/backend/cpu/backend.hpp"

namespace sgt {

// out (N, C) = table[tokens] ; table (V, C). Tokens are validated by the caller.
template <class T>
void embedding_forward(cpu, T* out, const std::int32_t* tokens, const T* table, int N, int C) {
    for (int n = 0; n < N; ++n) std::copy_n(table + std::int64_t(tokens[n]) * C, C, out + std::int64_t(n) * C);
}

// dtable (V, C) += scatter of dout (N, C) by token.
template <class T>
void embedding_backward(cpu, T* dtable, const T* dout, const std::int32_t* tokens, int N, int C) {
    for (int n = 0; n < N; ++n) {
        T* row = dtable + std::int64_t(tokens[n]) * C;
        const T* g = dout + std::int64_t(n) * C;
        for (int c = 0; c < C; ++c) row[c] += g[c];
    }
}

}  // namespace sgt
