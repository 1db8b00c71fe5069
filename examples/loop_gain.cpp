// examples/loop_gain: trains SGT with a variant written outside the library (examples/variants/loop_gain.hpp,
// a learned gain per layer, loop step and head) on the embedded k-hop task, then prints the gains it learned and
// saves a checkpoint that holds them. Usage: loop_gain [--steps N] [--checkpoint-dir DIR]
#include <CLI/CLI.hpp>

#include <sgt/io/checkpoint.hpp>
#include <sgt/sgt.hpp>

#include "variants/loop_gain.hpp"

int main(int argc, char** argv) {
    using namespace sgt;
    using variant = loop_gain_example::loop_gain_variant;
    int steps = 300, batch = 16, seq = 96;
    std::string checkpoint_dir;
    CLI::App app{"SGT with a learned per-head loop gain (a model variant written against sgt's public API)"};
    app.add_option("--steps", steps, "training steps")->check(CLI::PositiveNumber);
    app.add_option("--checkpoint-dir", checkpoint_dir, "save a checkpoint (weights and gains) here at the end");
    CLI11_PARSE(app, argc, argv);
    try {
        model<float, presets::char_mini, cpu, variant> m(batch, seq, /*seed*/ 1);
        growth_operator<> grow(m.shape, growth_options{.t_start = steps / 6, .dt = steps / 12});
        trainer tr(m, grow, cosine_schedule{.lr_max = 3e-3, .warmup = steps / 10, .total = steps}, adamw_options{},
                   batch, seq);
        k_hop_dataset data;
        rng r(1);
        for (int t = 1; t <= steps; ++t) {
            const step_stats s = tr.step(data.train_batch(r, batch, seq));
            for (const auto& e : s.events) fmt::print("{}\n", to_string(e));
            if (t % 50 == 0 || t == steps) fmt::print("step {:4}  loss {:.4f}\n", t, s.loss);
        }
        fmt::print("val loss {:.4f}; FLOPs {:.3e} ({:+.2f}% over vanilla)\n", tr.evaluate(data.val_batches(batch, seq, 8)),
                   tr.flops().total(), 100.0 * tr.flops().overhead());
        const auto params = m.parameters_to_host();
        for (int l = 0; l < m.NL; ++l) {
            const auto& lp = grow.plan().layers[std::size_t(l)];
            if (lp.k == 0) continue;
            const auto& e = m.entry(variant::gain_name(l));
            for (int k = 1; k <= lp.k; ++k) {
                fmt::print("layer {} loop step {} gains:", l, k);
                for (int i : lp.heads) fmt::print(" head {} = {:.4f}", i, params[std::size_t(e.offset + (k - 1) * m.NH + i)]);
                fmt::print("\n");
            }
        }
        if (!checkpoint_dir.empty())
            fmt::print("checkpoint: {}\n", save_checkpoint(checkpoint_dir, tr, nlohmann::json::object()).string());
    } catch (const sgt::error& e) {
        fmt::print(stderr, "loop_gain: {}\n", e.what());
        return 1;
    }
}
