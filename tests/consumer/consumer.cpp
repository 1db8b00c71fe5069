// A consumer of the installed or add_subdirectory'd library: a few SGT training steps on the k-hop task.
#include <sgt/sgt.hpp>

int main() {
    using namespace sgt;
    constexpr model_config cfg{.shape = {.layers = 3, .heads = 2, .head_dim = 8, .d_ff = 32, .vocab = 128,
                                         .max_seq = 32},
                               .loops = {.h = 1, .L = 2, .k_max = 2}};
    model<float, cfg> m(2, 32, 1);
    growth_operator<> grow(m.shape, growth_options{.t_start = 2, .dt = 2, .L = 2, .k_max = 2, .h = 1});
    trainer tr(m, grow, cosine_schedule{.lr_max = 1e-3, .warmup = 1, .total = 6}, adamw_options{}, 2, 32);
    k_hop_dataset data(k_hop_options{.symbols = 4});
    rng r(1);
    double loss = 0;
    for (int t = 1; t <= 6; ++t) loss = tr.step(data.train_batch(r, 2, 32)).loss;
    fmt::print("consumer: loss {:.4f} after 6 steps, {}\n", loss, grow.to_string());
    return std::isfinite(loss) && grow.state().active.size() == 2 ? 0 : 1;
}
