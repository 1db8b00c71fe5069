// tests/support.hpp: small helpers shared by the tests.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "sgt/config.hpp"
#include "sgt/core/error.hpp"
#include "sgt/core/rng.hpp"
#include "sgt/data/batch.hpp"
#include "sgt/entropy.hpp"

namespace sgt::test {

// The error message of `f`, or "" when it does not throw sgt::error.
template <class F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const sgt::error& e) {
        return e.what();
    }
    return "";
}

inline bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// Runs body(rank) on `world` threads (the ranks of a data-parallel test) and returns each rank's error message
// ("" where none).
inline std::vector<std::string> on_ranks(int world, const std::function<void(int)>& body) {
    std::vector<std::string> errors(static_cast<std::size_t>(world));
    std::vector<std::thread> threads;
    for (int r = 0; r < world; ++r)
        threads.emplace_back([&, r] { errors[std::size_t(r)] = error_of([&] { body(r); }); });
    for (auto& t : threads) t.join();
    return errors;
}

// A path for one test's files (a checkpoint directory, rendezvous files), named after the test and the process;
// nothing is there (a leftover of an earlier run is removed).
inline std::filesystem::path fresh_dir(const std::string& name) {
    const auto d = std::filesystem::temp_directory_path() / ("sgt_test_" + name + "_" + std::to_string(::getpid()));
    std::filesystem::remove_all(d);
    return d;
}

// The tiny shape with a byte-sized vocabulary, for the k-hop task's ASCII tokens.
inline constexpr model_config tiny_bytes{
    .shape = {.layers = 4, .heads = 4, .head_dim = 8, .d_ff = 64, .vocab = 128, .max_seq = 32},
    .loops = presets::tiny.loops};

// B x T uniformly random tokens and targets in [0, V).
inline batch random_batch(int B, int T, int V, std::uint64_t seed) {
    rng r(seed);
    batch b{B, T, {}, {}};
    for (int i = 0; i < B * T; ++i) {
        b.inputs.push_back(std::int32_t(r.below(V)));
        b.targets.push_back(std::int32_t(r.below(V)));
    }
    return b;
}

// A scripted entropy report of 4 heads per layer in which layer l has mean entropy m[l]: its heads are
// m[l] + {+0.02, −0.02, +0.01, −0.01}, so the top-2 heads of every layer are {0, 2} and the bottom-2 {1, 3}.
inline entropy_report layer_report(const std::vector<double>& m) {
    const int n_layers = int(m.size()), n_heads = 4;
    entropy_report r(n_layers, n_heads);
    const double offset[] = {0.02, -0.02, 0.01, -0.01};
    for (int l = 0; l < n_layers; ++l)
        for (int i = 0; i < n_heads; ++i) r.first_pass[std::size_t(l) * n_heads + i] = m[l] + offset[i];
    return r;
}

}  // namespace sgt::test
