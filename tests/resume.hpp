// tests/resume.hpp: a checkpointable training run (SGT growth on the k-hop task, dropout on) and the exact-resume
// check: `total` steps straight against `total / 2` steps, a checkpoint, fresh objects loaded from it, and the
// rest; losses, weights, the growth state Θ and the FLOPs must agree bit for bit. Any backend and precision.
#pragma once

#include <doctest/doctest.h>

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "sgt/io/checkpoint.hpp"
#include "sgt/sgt.hpp"
#include "support.hpp"

namespace sgt::test {

template <class Model>
struct resumable_run {
    Model m;
    growth_operator<> g;
    trainer<Model, growth_operator<>> tr;
    k_hop_dataset data;
    rng data_rng{11};
    int batch, seq;

    resumable_run(growth_options o, int batch_, int seq_, int total_steps, int symbols)
        : m(batch_, seq_, 3), g(Model::shape, o),
          tr(m, g, cosine_schedule{.lr_max = 5e-3, .warmup = 3, .total = total_steps}, adamw_options{}, batch_, seq_),
          data(k_hop_options{.symbols = symbols}), batch(batch_), seq(seq_) {
        m.set_dropout(0.1);
    }
    std::vector<double> steps(int n) {
        std::vector<double> losses;
        for (int i = 0; i < n; ++i) losses.push_back(tr.step(data.train_batch(data_rng, batch, seq)).loss);
        return losses;
    }
    nlohmann::json data_state() const {
        const auto& s = data_rng.state();
        return {{"rng", std::vector<std::uint64_t>(s.begin(), s.end())}};
    }
    void load_data_state(const nlohmann::json& j) {
        const auto w = j.at("rng").get<std::vector<std::uint64_t>>();
        data_rng.set_state({w[0], w[1], w[2], w[3]});
    }
};

// make() builds a fresh run; the check runs three of them (straight, first half, second half).
template <class Make>
void check_exact_resume(Make make, int total, const std::string& name) {
    CAPTURE(name);
    auto straight = make();
    const auto all = straight.steps(total);

    const auto dir = fresh_dir(name);
    std::vector<double> resumed;
    {
        auto first = make();
        resumed = first.steps(total / 2);
        save_checkpoint(dir, first.tr, first.data_state());
    }
    auto second = make();  // fresh objects: everything comes from the checkpoint
    second.load_data_state(load_checkpoint(dir, second.tr));
    CHECK(second.tr.steps() == total / 2);
    const auto rest = second.steps(total - total / 2);
    resumed.insert(resumed.end(), rest.begin(), rest.end());

    CHECK(resumed == all);  // bit-identical, not approximately equal
    const auto a = straight.m.parameters_to_host(), b = second.m.parameters_to_host();
    REQUIRE(a.size() == b.size());
    CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(a[0])) == 0);  // the same bits
    CHECK(straight.g.to_json() == second.g.to_json());
    CHECK(straight.tr.flops().total() == second.tr.flops().total());
    std::filesystem::remove_all(dir);
}

}  // namespace sgt::test
