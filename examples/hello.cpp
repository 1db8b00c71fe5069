// examples/hello: the README's example, compiled so that it stays true. Usage: hello FILE.txt
#include <sgt/sgt.hpp>

int main(int argc, char** argv) {
    using namespace sgt;
    if (argc < 2) return fmt::print(stderr, "usage: hello FILE.txt\n"), 2;
    model<float, presets::char_mini> m(/*batch*/ 8, /*seq*/ 64, /*seed*/ 1);
    growth_operator<> grow(m.shape, growth_options{.t_start = 50, .dt = 25});  // Algorithm 1, top-h heads
    trainer tr(m, grow, cosine_schedule{.lr_max = 3e-3, .warmup = 25, .total = 300}, adamw_options{}, 8, 64);
    text_dataset data(argv[1]);  // or k_hop_dataset{}, shard_dataset{...}
    rng r(1);
    for (int t = 1; t <= 300; ++t) {
        step_stats s = tr.step(data.train_batch(r, 8, 64));  // forward, backward, AdamW, growth
        for (auto& e : s.events) fmt::print("{}\n", to_string(e));
    }
    fmt::print("val loss {:.4f}, {}\n", tr.evaluate(data.val_batches(8, 64, 16)), grow.to_string());
}
