// sgt/core/rng.hpp: a seeded, portable random number generator.
//
// xoshiro256** seeded through splitmix64. Unlike the std:: distributions, every draw here is defined bit for
// bit, so a run is reproducible on any machine and compiler, and the state (four words) goes into checkpoints.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <numbers>

namespace sgt {

class rng {
public:
    using state_type = std::array<std::uint64_t, 4>;

    explicit rng(std::uint64_t seed = 0) { reseed(seed); }

    void reseed(std::uint64_t seed) {
        for (auto& w : s_) {  // splitmix64: fills the state from one word, never all zero
            seed += 0x9E3779B97F4A7C15ull;
            std::uint64_t z = seed;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
            w = z ^ (z >> 31);
        }
    }

    std::uint64_t next_u64() {
        const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
        const std::uint64_t t = s_[1] << 17;
        s_[2] ^= s_[0];
        s_[3] ^= s_[1];
        s_[1] ^= s_[2];
        s_[0] ^= s_[3];
        s_[2] ^= t;
        s_[3] = rotl(s_[3], 45);
        return result;
    }

    // Uniform in [0, 1) with 53 random bits.
    double uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }

    // Uniform integer in [0, n), unbiased (rejection of the short last interval). n > 0.
    std::uint64_t below(std::uint64_t n) {
        const std::uint64_t limit = UINT64_MAX - UINT64_MAX % n;
        std::uint64_t x;
        do { x = next_u64(); } while (x >= limit);
        return x % n;
    }

    // Standard normal by Box-Muller (one draw per call; the pair's second value is discarded for simplicity
    // of the state, which stays four words).
    double normal() {
        double u1 = uniform();
        while (u1 <= 0.0) u1 = uniform();
        const double u2 = uniform();
        return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
    }

    // A new generator whose stream is independent of this one's (for a sub-task such as dropout).
    rng split() { return rng(next_u64()); }

    const state_type& state() const { return s_; }
    void set_state(const state_type& s) { s_ = s; }

private:
    static std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
    state_type s_{};
};

}  // namespace sgt
