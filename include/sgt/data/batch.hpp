// sgt/data/batch.hpp: one batch of token ids and next-token targets.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace sgt {

// A target below zero is ignored by the loss (it is not counted in the mean), as PyTorch's ignore_index.
inline constexpr std::int32_t ignore_target = -1;

struct batch {
    int B = 0;                          // sequences
    int T = 0;                          // tokens per sequence
    std::vector<std::int32_t> inputs;   // (B, T) token ids in [0, V)
    std::vector<std::int32_t> targets;  // (B, T) next-token ids in [0, V), or ignore_target
};

// Sequences [first, first + count) of b, as a batch of their own (the caller keeps them within b).
inline batch batch_rows(const batch& b, int first, int count) {
    const auto begin = std::ptrdiff_t(first) * b.T, end = begin + std::ptrdiff_t(count) * b.T;
    return {count, b.T, {b.inputs.begin() + begin, b.inputs.begin() + end},
            {b.targets.begin() + begin, b.targets.begin() + end}};
}

}  // namespace sgt
