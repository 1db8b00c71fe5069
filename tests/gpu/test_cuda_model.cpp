// The whole model on the GPU against the CPU backend, from the same templates: the tiny model with loops
// (K = 1..3, |S| = 2 and all heads, a fade step) and with Block Loop. Loss, every gradient and the entropies in
// fp32; a 10-step trajectory with growth under Algorithm 1; two GPU runs identical; no device allocation in a
// step once its structure has run; bf16 mixed precision close to fp32 and learning; exact resume from a
// checkpoint in fp32 and in bf16 (whose checkpoint holds the fp32 master weights); data parallelism over NCCL.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>

#include "../../examples/variants/loop_gain.hpp"
#if __has_include(<nccl.h>)
#include "sgt/dist/nccl.hpp"
#endif
#include "../resume.hpp"
#include "../support.hpp"
#include "support.hpp"

using namespace sgt;
using test::bf16;

namespace {
using test::tiny_bytes;
template <class T, class Backend>
using tiny_model = model<T, tiny_bytes, Backend>;
constexpr int B = 3, T_ = 29;  // odd sizes

batch random_batch(std::uint64_t seed) { return test::random_batch_some_ignored(B, T_, tiny_bytes.shape.vocab, seed); }

loop_plan loops(int k, std::vector<int> heads, double fade = 0.0) {
    loop_plan p = loop_plan::vanilla(4);
    for (int l = 1; l < 4; ++l) p.layers[l] = layer_loop{k, heads, fade, 1};
    return p;
}

std::vector<double> as_double(const std::vector<float>& x) { return {x.begin(), x.end()}; }
}  // namespace

TEST_CASE("the tiny model on the GPU matches the CPU in fp32: loss, every gradient and the entropies") {
    struct named_plan {
        const char* name;
        loop_plan plan;
    };
    loop_plan block = loop_plan::vanilla(4);
    block.layers[2].block_repeat = 2;
    block.layers[3].block_repeat = 2;
    block.layers[3].k = 1;
    block.layers[3].heads = {0, 2};
    const std::vector<named_plan> plans{
        {"vanilla", loop_plan::vanilla(4)},        {"K=1 |S|=2", loops(1, {1, 3})},
        {"K=2 |S|=2", loops(2, {0, 2})},           {"K=3 |S|=2", loops(3, {2, 3})},
        {"K=3 |S|=all", loops(3, {0, 1, 2, 3})},   {"K=2 |S|=2 fade 0.3", loops(2, {1, 2}, 0.3)},
        {"K=3 |S|=1", loops(3, {2})},              {"K=3 |S|=1 fade 0.3", loops(3, {1}, 0.3)},
        {"Block Loop (+ a loop)", block},
    };
    const batch b = random_batch(1);
    for (const auto& [name, plan] : plans) {
        tiny_model<float, cpu> mc(B, T_, 7);
        tiny_model<float, cuda> mg(B, T_, 7);
        mg.set_loop_subspace(false);  // the steps one by one here; the runs below
        REQUIRE(mg.parameters_to_host() == mc.parameters_to_host());  // the same initial weights
        const double lc = mc.forward(b, plan), lg = mg.forward(b, plan);
        const auto logits_c = mc.logits(), logits_g = mg.logits();
        const std::vector<double> lgc(logits_c.begin(), logits_c.end()), lgg(logits_g.begin(), logits_g.end());
        mc.backward();
        mg.backward();
        const double loss_err = std::abs(lg - lc) / std::abs(lc);
        const auto gc = mc.gradients_to_host(), gg = mg.gradients_to_host();
        double worst = 0.0;
        std::string worst_name;
        for (const auto& e : mc.parameter_table()) {
            const std::vector<double> c(gc.begin() + e.offset, gc.begin() + e.offset + e.numel());
            const std::vector<double> g(gg.begin() + e.offset, gg.begin() + e.offset + e.numel());
            const double err = test::rel_error(g, c);
            CHECK_MESSAGE(err <= 1e-4, name << ": gradient of " << e.name << " differs by " << err);
            if (err >= worst) worst = err, worst_name = e.name;
        }
        double ent = 0.0;
        const auto& ec = mc.entropies();
        const auto& eg = mg.entropies();
        for (std::size_t i = 0; i < ec.first_pass.size(); ++i) {
            ent = std::max(ent, std::abs(ec.first_pass[i] - eg.first_pass[i]));
            CHECK(std::isnan(ec.last_loop[i]) == std::isnan(eg.last_loop[i]));
            if (!std::isnan(ec.last_loop[i])) ent = std::max(ent, std::abs(ec.last_loop[i] - eg.last_loop[i]));
        }
        std::printf("  %-24s loss %.8f  rel error %.2e | worst gradient %.2e (%s) | entropy max abs %.2e\n", name, lg,
                    loss_err, worst, worst_name.c_str(), ent);
        CHECK(loss_err <= 1e-5);
        CHECK(ent <= 1e-5);
        CHECK(test::rel_error(lgg, lgc) <= 1e-5);

        // The loop steps in the subspace (loop_subspace.hpp; on by default on both backends): the same runs taken
        // on the GPU, the same loss and gradients.
        {
            tiny_model<float, cuda> ms(B, T_, 7);
            ms.set_loop_subspace(true);
            const double ls = ms.forward(b, plan);
            ms.backward();
            CHECK(ms.subspace_runs() == mc.subspace_runs());
            CHECK(ms.subspace_runs() == (std::string(name).starts_with("K=3 |S|=1") ? 3 : 0));  // one head: 3m ≤ C
            CHECK(mg.subspace_runs() == 0);
            const auto gs = ms.gradients_to_host();
            const double sub_err = test::rel_error(std::vector<double>(gs.begin(), gs.end()),
                                                   std::vector<double>(gc.begin(), gc.end()));
            std::printf("  %-24s %d subspace runs: loss rel error %.2e, gradients %.2e\n", name, ms.subspace_runs(),
                        std::abs(ls - lc) / std::abs(lc), sub_err);
            CHECK(std::abs(ls - lc) / std::abs(lc) <= 1e-5);
            CHECK_MESSAGE(sub_err <= 1e-4, name << ": gradients with subspace runs differ by " << sub_err);
        }

        // A training step's forward, whose cross-entropy writes its gradient in the same pass as the loss: the
        // rows whole (0: one chunk at this size), then in chunks of 10 of the 87 (the last one 7), where the LM
        // head's backward runs within the forward chunk by chunk.
        const double scale = 1.0 / double(mc.last_loss().count);
        for (const std::int64_t rows : {0, 10}) {
            tiny_model<float, cuda> mf(B, T_, 7);
            mf.set_logits_chunk(rows);
            const double lf = mf.forward(b, plan, scale);
            mf.backward(scale);
            CHECK(std::abs(lf - lc) / std::abs(lc) <= 1e-5);
            const auto gf = mf.gradients_to_host();
            const double fused_err = test::rel_error(std::vector<double>(gf.begin(), gf.end()),
                                                     std::vector<double>(gc.begin(), gc.end()));
            CHECK_MESSAGE(fused_err <= 1e-4, name << ": the fused cross-entropy's gradients (chunks of " << rows
                                                  << " rows) differ by " << fused_err);
            const auto logits_f = mf.logits();  // formed again, chunk by chunk, after the backward
            CHECK(test::rel_error(std::vector<double>(logits_f.begin(), logits_f.end()), lgc) <= 1e-5);
        }
    }
}

TEST_CASE("a model variant (the learned loop gain of examples/variants) on the GPU matches the CPU in fp32") {
    using loop_gain_example::loop_gain_variant;
    loop_plan plan = loops(2, {1, 3}, 0.4);
    plan.layers[2].block_repeat = 2;
    const batch b = random_batch(5);
    model<float, tiny_bytes, cpu, loop_gain_variant> mc(B, T_, 7);
    model<float, tiny_bytes, cuda, loop_gain_variant> mg(B, T_, 7);
    // Gains away from 1, the same on both.
    auto params = mc.parameters_to_host();
    rng r(3);
    for (int l = 0; l < 4; ++l) {
        const auto& e = mc.entry(loop_gain_variant::gain_name(l));
        for (std::int64_t i = 0; i < e.numel(); ++i) params[std::size_t(e.offset + i)] = float(1.0 + 0.4 * r.normal());
    }
    mc.parameters_from_host(params);
    mg.parameters_from_host(params);
    const double lc = mc.forward(b, plan), lg = mg.forward(b, plan);
    mc.backward();
    mg.backward();
    CHECK(std::abs(lg - lc) / std::abs(lc) <= 1e-5);
    const auto gc = mc.gradients_to_host(), gg = mg.gradients_to_host();
    for (const auto& e : mc.parameter_table()) {
        const std::vector<double> c(gc.begin() + e.offset, gc.begin() + e.offset + e.numel());
        const std::vector<double> g(gg.begin() + e.offset, gg.begin() + e.offset + e.numel());
        const double err = test::rel_error(g, c);  // outside the message (see support.hpp's rel_error)
        CHECK_MESSAGE(err <= 1e-4, "gradient of " << e.name << " differs by " << err);
    }
    CHECK(mg.step_flops(B, T_, plan) == mc.step_flops(B, T_, plan));
}

namespace {
template <class T, class Backend>
struct run_result {
    std::vector<double> losses;
    std::vector<std::string> events;
    std::int64_t allocations_in_repeated_steps = -1;
    std::int64_t allocations_in_steps = -1;          // device allocations during all the steps
    std::int64_t allocations_after_first_step = -1;  // during steps 2.. (growth events included)
    int replayed_steps = 0;
    std::vector<T> weights;  // after the last step
};

// 10 AdamW steps of SGT growth (Algorithm 1 from step 3, Δt = 2) on the k-hop task; with `reserve`, the model
// sizes its buffers for the loop budget first.
// `graphs`: the trainer records steps and replays them (its default); `between(t)` runs after step t.
// Cfg: the model's configuration (its loop budget is the growth's).
template <class T, class Backend, model_config Cfg = tiny_bytes>
run_result<T, Backend> train(int steps = 10, bool reserve = false, bool graphs = true,
                             const std::function<void(int)>& between = {}, std::optional<bool> subspace = {}) {
    model<T, Cfg, Backend> m(4, 16, 11);
    if (subspace) m.set_loop_subspace(*subspace);
    if (reserve) m.reserve(m.budget_plan());
    growth_options o = growth_options::from_budget(Cfg.loops);
    o.t_start = 3;
    o.dt = 2;
    growth_operator<> g(Cfg.shape, o);
    trainer tr(m, g, cosine_schedule{.lr_max = 1e-2, .warmup = 2, .total = steps}, adamw_options{}, 4, 16);
    tr.set_graphs(graphs);
    k_hop_dataset data(k_hop_options{.symbols = 2});
    rng r(3);
    run_result<T, Backend> out;
    out.allocations_in_repeated_steps = 0;
    const auto before_steps = detail::device_allocations();
    loop_plan previous;
    for (int t = 0; t < steps; ++t) {
        const batch b = data.train_batch(r, 4, 16);
        const loop_plan plan = g.plan();
        const auto allocations = detail::device_allocations();
        const auto s = tr.step(b);
        // A step whose structure already ran (the plan of the step before) allocates nothing on the device.
        if (t > 0 && plan == previous) out.allocations_in_repeated_steps += detail::device_allocations() - allocations;
        previous = plan;
        out.losses.push_back(s.loss);
        for (const auto& e : s.events) out.events.push_back(to_string(e));
        if (t == 0) out.allocations_after_first_step = detail::device_allocations();
        if (between) between(t);
    }
    out.allocations_in_steps = detail::device_allocations() - before_steps;
    out.allocations_after_first_step = detail::device_allocations() - out.allocations_after_first_step;
    out.replayed_steps = tr.replayed_steps();
    out.weights = m.parameters_to_host();
    return out;
}
}  // namespace

TEST_CASE("10 steps with growth: the GPU follows the CPU, repeats itself exactly, and allocates nothing in a step") {
    const auto c = train<float, cpu>();
    const auto g1 = train<float, cuda>();
    const auto g2 = train<float, cuda>();
    REQUIRE(c.losses.size() == g1.losses.size());
    double worst = 0.0;
    for (std::size_t i = 0; i < c.losses.size(); ++i) {
        const double e = std::abs(g1.losses[i] - c.losses[i]) / std::abs(c.losses[i]);
        worst = std::max(worst, e);
        std::printf("  step %2zu  cpu %.7f  gpu %.7f  rel %.2e\n", i + 1, c.losses[i], g1.losses[i], e);
    }
    CHECK(worst <= 1e-4);
    CHECK(g1.events == c.events);  // the same growth decisions from the GPU's entropies
    CHECK(!g1.events.empty());
    CHECK(g1.losses == g2.losses);  // bit for bit: no atomics in the backward
    CHECK(g1.allocations_in_repeated_steps == 0);
    CHECK(g1.allocations_after_first_step > 0);  // without reserve, each new structure allocates its passes

    // Sized once for the loop budget: no step allocates, growth events included, and nothing else changes.
    const auto reserved = train<float, cuda>(10, true);
    std::printf("  allocations in 10 steps: %lld without reserve (%lld after step 1), %lld with reserve\n",
                (long long)g1.allocations_in_steps, (long long)g1.allocations_after_first_step,
                (long long)reserved.allocations_in_steps);
    CHECK(reserved.allocations_in_steps == 0);
    CHECK(reserved.losses == g1.losses);

    // With the loop steps in the subspace, which this width takes over one head (3m ≤ C): growth over h = 1 head,
    // the CPU against the GPU (runs are the default on both): the same decisions, losses close, bit for bit twice,
    // and reserve() sizes the runs as well.
    constexpr model_config one_head{.shape = tiny_bytes.shape, .loops = {.h = 1, .L = 3, .k_max = 3}};
    const auto cs = train<float, cpu, one_head>(10, true);
    const auto s1 = train<float, cuda, one_head>(10, true, true, {}, true);
    const auto s2 = train<float, cuda, one_head>(10, true, true, {}, true);
    REQUIRE(cs.losses.size() == s1.losses.size());
    double worst_sub = 0.0;
    for (std::size_t i = 0; i < cs.losses.size(); ++i)
        worst_sub = std::max(worst_sub, std::abs(s1.losses[i] - cs.losses[i]) / std::abs(cs.losses[i]));
    std::printf("  subspace runs on the GPU: worst loss rel error %.2e, allocations with reserve %lld\n", worst_sub,
                (long long)s1.allocations_in_steps);
    CHECK(worst_sub <= 1e-4);
    CHECK(s1.events == cs.events);
    CHECK(!s1.events.empty());
    CHECK(s1.losses == s2.losses);
    CHECK(s1.allocations_in_steps == 0);
}

namespace {
int scratch_moves = 0;  // how often the test below grew the CUB scratch: each time to a new largest size
}  // namespace

TEST_CASE_TEMPLATE("a training step replayed as a CUDA graph: the losses and weights of eager steps, bit for bit", T,
                   float, bf16) {
    // 24 steps of growth: new structures and fade steps run eagerly and are recorded once they repeat. After step
    // 12 the scratch the recorded step's CUB reductions use is grown (moved) by other work, so the trainer must
    // notice the allocation and record again rather than replay into freed memory (which compute-sanitizer's
    // memcheck, run on this test, would report).
    const auto move_scratch = [](int t) {
        if (t != 11) return;
        const auto before = detail::device_allocations();
        // Larger than ever asked for before in this process, so that it does move.
        detail::context().scratch<std::byte>(detail::slot_cub_temp, std::int64_t(1) << (26 + scratch_moves++));
        CHECK(detail::device_allocations() > before);
    };
    const auto eager = train<T, cuda>(24, false, false, move_scratch);
    const auto graphed = train<T, cuda>(24, false, true, move_scratch);
    std::printf("  %s: %d of 24 steps replayed\n", precision_name<T>::value, graphed.replayed_steps);
    CHECK(eager.replayed_steps == 0);
    CHECK(graphed.replayed_steps > 0);
    CHECK(graphed.losses == eager.losses);
    CHECK(graphed.events == eager.events);
    REQUIRE(graphed.weights.size() == eager.weights.size());
    CHECK(std::memcmp(graphed.weights.data(), eager.weights.data(), eager.weights.size() * sizeof(T)) == 0);
    CHECK(graphed.allocations_in_repeated_steps == eager.allocations_in_repeated_steps);
}

TEST_CASE("bf16 mixed precision: the loss is within 2e-2 of fp32, and training lowers it") {
    const batch b = random_batch(2);
    const loop_plan plan = loops(2, {0, 3});
    tiny_model<float, cuda> m32(B, T_, 5);
    tiny_model<bf16, cuda> m16(B, T_, 5);
    const double l32 = m32.forward(b, plan), l16 = m16.forward(b, plan);
    std::printf("  forward loss fp32 %.6f  bf16 %.6f\n", l32, l16);
    CHECK(std::abs(l16 - l32) / l32 <= 2e-2);
    // The loop steps in the subspace (over one head at this width), in bf16 against fp32 step by step.
    const loop_plan one = loops(3, {1});
    tiny_model<float, cuda> o32(B, T_, 5);
    tiny_model<bf16, cuda> s16(B, T_, 5);
    o32.set_loop_subspace(false);
    s16.set_loop_subspace(true);
    const double lo32 = o32.forward(b, one);
    o32.backward();
    const double ls16 = s16.forward(b, one, 1.0 / o32.last_loss().count);
    s16.backward(1.0 / o32.last_loss().count);
    std::printf("  bf16 with subspace runs (%d): loss %.6f (fp32 step by step %.6f)\n", s16.subspace_runs(), ls16, lo32);
    CHECK(s16.subspace_runs() == 3);
    CHECK(o32.subspace_runs() == 0);
    CHECK(std::abs(ls16 - lo32) / lo32 <= 2e-2);
    const auto g32 = o32.gradients_to_host();
    const auto g16 = s16.gradients_to_host();
    std::vector<double> a32(g32.begin(), g32.end()), a16;
    for (const auto& x : g16) a16.push_back(double(float(x)));
    const double gerr = test::rel_error(a16, a32);
    std::printf("  bf16 with subspace runs: gradients rel error %.2e against fp32\n", gerr);
    CHECK(gerr <= 5e-2);

    const auto r16 = train<bf16, cuda>(30);
    const auto r32 = train<float, cuda>(30);
    std::printf("  30 steps: bf16 loss %.4f -> %.4f, fp32 %.4f -> %.4f\n", r16.losses.front(), r16.losses.back(),
                r32.losses.front(), r32.losses.back());
    CHECK(r16.losses.back() < r16.losses.front() - 0.3);
    CHECK(std::abs(r16.losses.back() - r32.losses.back()) / r32.losses.back() <= 5e-2);
}

TEST_CASE_TEMPLATE("exact resume on the GPU: 12 steps = 6, a checkpoint, fresh objects, 6 more", T, float, bf16) {
    growth_options o = growth_options::from_budget(tiny_bytes.loops);
    o.t_start = 3;
    o.dt = 2;
    test::check_exact_resume([&] { return test::resumable_run<tiny_model<T, cuda>>(o, 4, 16, 12, 2); }, 12,
                             fmt::format("gpu_{}", test::type_name<T>()));
}

// Each fused path the build has: our kernels, and cuDNN's in a build with SGT_CUDNN.
TEST_CASE("bf16 with fused attention (head size 32): close to fp32 in loss and gradients, and deterministic") {
    constexpr model_config wide_heads{
        .shape = {.layers = 3, .heads = 2, .head_dim = 32, .d_ff = 96, .vocab = 128, .max_seq = 160},
        .loops = {.h = 1, .L = 2, .k_max = 2}};
    rng r(21);
    batch b{2, 150, {}, {}};  // three key tiles, the last partial
    for (int i = 0; i < 300; ++i) {
        b.inputs.push_back(std::int32_t(r.next_u64() % 128));
        b.targets.push_back(std::int32_t(r.next_u64() % 128));
    }
    loop_plan plan = loop_plan::vanilla(3);
    plan.layers[2] = layer_loop{2, {1}, 0.5, 1};  // a fade step over both heads, then head 1 alone
    model<float, wide_heads, cuda> m32(2, 150, 4);
    const double l32 = m32.forward(b, plan);
    m32.backward();
    const auto g32 = m32.gradients_to_host();
    for (const auto kind : {attention_kernel::fused, attention_kernel::cudnn}) {
    if (kind == attention_kernel::cudnn && !detail::cudnn_built) continue;
    set_attention_kernel(cuda{}, kind);
    const auto path = kind == attention_kernel::cudnn ? detail::attention_path::cudnn : detail::attention_path::fused;
    REQUIRE(detail::attention_path_for<bf16>(150, wide_heads.shape.head_dim) == path);
    std::vector<std::vector<double>> grads;
    std::vector<double> losses;
    for (int run = 0; run < 2; ++run) {
        model<bf16, wide_heads, cuda> m16(2, 150, 4);
        losses.push_back(m16.forward(b, plan));
        m16.backward();
        const auto g = m16.gradients_to_host();
        grads.emplace_back();
        for (const auto& x : g) grads.back().push_back(double(static_cast<float>(x)));
    }
    const double grad_err = test::rel_error(grads[0], as_double(g32));
    std::printf("  fused bf16 (%s): loss %.6f (fp32 %.6f), gradient rel error %.3e\n",
                kind == attention_kernel::cudnn ? "cuDNN" : "ours", losses[0], l32, grad_err);
    CHECK(std::abs(losses[0] - l32) / l32 <= 2e-2);
    CHECK(grad_err <= 5e-2);
    CHECK(losses[0] == losses[1]);
    CHECK(grads[0] == grads[1]);
    }
    set_attention_kernel(cuda{}, attention_kernel::automatic);
}

// ---- Data parallelism over NCCL (dist/nccl.hpp) -------------------------------------------------------------
// One rank through NCCL is the plain trainer bit for bit (fp32, bf16, bf16 summed in fp32, buckets small enough
// that a backward fills several; the step replayed as a CUDA graph with its collectives, or eager). Two ranks
// sharing the one GPU, summing through the host, take the steps of one process over the global batch (fp32 within
// 1e-5 over 12 steps). Where the machine has two GPUs or more: 2 ranks (threads here, one GPU each) take the steps
// of one GPU over the global batch (fp32 within 1e-5 over 12 steps), with the same growth decisions on both ranks.
// Built where NCCL's header is (the library is loaded when the test runs).
#if __has_include(<nccl.h>)
namespace dp {
using test::tiny_bytes;

template <class T>
struct record {
    std::vector<double> losses;
    std::vector<std::string> plans;
    std::vector<T> weights;
    int replayed = 0;  // steps replayed as a recorded CUDA graph
};

// 12 steps of SGT growth (from step 3, Δt = 2) on global batches of 4 sequences, as rank `rank` of `world`.
// zero1: the optimizer sharded over the ranks; graphs: steps recorded and replayed where they can be.
template <class T>
record<T> train(int rank, int world, dist::gradient_sync<T, cuda>* sync, bool zero1 = false, bool graphs = true) {
    model<T, tiny_bytes, cuda> m(4 / world, 16, 11);
    growth_options o = growth_options::from_budget(tiny_bytes.loops);
    o.t_start = 3;
    o.dt = 2;
    growth_operator<> g(tiny_bytes.shape, o);
    trainer tr(m, g, cosine_schedule{.lr_max = 1e-2, .warmup = 2, .total = 12}, adamw_options{}, 4, 16);
    tr.set_data_parallel(sync, zero1);
    tr.set_graphs(graphs);
    k_hop_dataset data(k_hop_options{.symbols = 2});
    rng r(3);
    record<T> out;
    for (int t = 0; t < 12; ++t) {
        out.losses.push_back(tr.step(dist::rank_rows(data.train_batch(r, 4, 16), rank, world)).loss);
        out.plans.push_back(sgt::detail::plan_to_json(g.plan()).dump());
    }
    out.weights = m.parameters_to_host();
    out.replayed = tr.replayed_steps();
    return out;
}

// Sums over the ranks through host memory (the CPU's group sum): the CUDA trainer's data-parallel step (the
// backward's buckets, the gathers) with ranks that share one GPU, which NCCL does not allow.
class staged_sync final : public dist::gradient_sync<float, cuda> {
public:
    explicit staged_sync(dist::tcp_group& g) : g_(g) {}
    int rank() const override { return g_.rank(); }
    int world() const override { return g_.size(); }
    std::vector<double> all_gather(std::span<const double> mine) override { return g_.all_gather(mine); }
    void begin_backward(std::span<float> grads) override {
        grads_ = grads;
        buckets_.emplace(std::int64_t(grads.size()), 1024);
    }
    void ready(dist::param_range r) override {
        for (const auto& b : buckets_->ready(r)) reduce(b);
    }
    void end_backward() override {
        for (const auto& b : buckets_->finish()) reduce(b);
        buckets_.reset();
    }
    // ZeRO-1 through the host: the whole buffer down, the CPU's exchange, the whole buffer up.
    void share_ranges(void* data, std::size_t elem_bytes, std::span<const dist::param_range> ranges) override {
        std::size_t n = 0;
        for (const auto& r : ranges) n = std::max(n, std::size_t(r.end()));
        std::vector<std::byte> h(n * elem_bytes);
        SGT_CUDA_CHECK(cudaMemcpy(h.data(), data, h.size(), cudaMemcpyDeviceToHost));
        dist::share_host_ranges(g_, h.data(), elem_bytes, ranges);
        SGT_CUDA_CHECK(cudaMemcpy(data, h.data(), h.size(), cudaMemcpyHostToDevice));
        ++shares;
    }
    std::vector<std::byte> gather_to_root(std::span<const std::byte> mine) override { return g_.gather(mine); }
    int buckets = 0, shares = 0;

private:
    void reduce(dist::param_range b) {
        std::vector<float> h(std::size_t(b.count));
        copy_to_host(cuda{}, h.data(), grads_.data() + b.offset, b.count);
        g_.all_reduce_sum<float, double>(std::span<float>(h));
        copy_from_host(cuda{}, grads_.data() + b.offset, h.data(), b.count);
        ++buckets;
    }
    dist::tcp_group& g_;
    std::span<float> grads_;
    std::optional<dist::bucketer> buckets_;
};
}  // namespace dp

TEST_CASE("two ranks on one GPU (sums through the host): the steps of one process over the global batch, the same Θ") {
    const dp::record<float> one = dp::train<float>(0, 1, nullptr);
    const auto dir = test::fresh_dir("gpu_staged");
    std::filesystem::create_directories(dir);
    const auto where = dist::rendezvous::parse("file:" + (dir / "r").string());
    dp::record<float> ranks[2];
    int buckets[2] = {};
    const auto errors = test::on_ranks(2, [&](int r) {
        dist::tcp_group g(r, 2, where, {.timeout_s = 60});
        dp::staged_sync sync(g);
        ranks[r] = dp::train<float>(r, 2, &sync);
        buckets[r] = sync.buckets;
    });
    std::filesystem::remove_all(dir);
    CHECK(errors[0] == "");
    CHECK(errors[1] == "");
    std::printf("  2 ranks on one GPU: %d buckets in 12 steps\n", buckets[0]);
    CHECK(buckets[0] > 12);  // several per backward
    CHECK(ranks[0].replayed == 0);  // sums through host memory: every step eager
    CHECK(ranks[1].plans == ranks[0].plans);
    CHECK(ranks[1].losses == ranks[0].losses);
    CHECK(ranks[1].weights == ranks[0].weights);
    CHECK(ranks[0].plans == one.plans);
    double worst = 0.0;
    for (std::size_t i = 0; i < one.losses.size(); ++i)
        worst = std::max(worst, std::abs(ranks[0].losses[i] - one.losses[i]) / std::abs(one.losses[i]));
    std::printf("  largest relative loss difference against one process: %.3g\n", worst);
    CHECK(worst <= 1e-5);
}

TEST_CASE("ZeRO-1, two ranks on one GPU (through the host): the unsharded ranks' steps, bit for bit") {
    const auto dir = test::fresh_dir("gpu_zero1");
    dp::record<float> ranks[2][2];  // [sharded][rank]
    int shares[2] = {};
    for (const bool zero1 : {false, true}) {
        std::filesystem::create_directories(dir);
        const auto where = dist::rendezvous::parse("file:" + (dir / (zero1 ? "s" : "p")).string());
        const auto errors = test::on_ranks(2, [&](int r) {
            dist::tcp_group g(r, 2, where, {.timeout_s = 60});
            dp::staged_sync sync(g);
            ranks[zero1][r] = dp::train<float>(r, 2, &sync, zero1);
            if (r == 0) shares[zero1] = sync.shares;
        });
        CHECK(errors[0] == "");
        CHECK(errors[1] == "");
    }
    std::filesystem::remove_all(dir);
    CHECK(shares[0] == 0);
    CHECK(shares[1] == 12);  // one exchange of the updated weights a step
    for (int r = 0; r < 2; ++r) {
        CHECK(ranks[1][r].losses == ranks[0][r].losses);
        CHECK(ranks[1][r].plans == ranks[0][r].plans);
        CHECK(ranks[1][r].weights == ranks[0][r].weights);
    }
}

TEST_CASE_TEMPLATE("ZeRO-1's optimizer on the GPU: two shares of one buffer update it as one optimizer, bit for bit", T,
                   float, bf16) {
    tiny_model<T, cuda> m(2, 16, 9);
    k_hop_dataset data(k_hop_options{.symbols = 2});
    rng r(5);
    m.zero_grad();
    m.forward(data.train_batch(r, 2, 16), loop_plan::vanilla(tiny_bytes.shape.layers), 1.0 / 30.0);
    m.backward(1.0 / 30.0);
    const std::int64_t n = std::int64_t(m.parameters().size());
    const std::span<const T> grads = m.gradients();
    device_buffer<T> whole(static_cast<std::size_t>(n)), split(static_cast<std::size_t>(n));
    SGT_CUDA_CHECK(cudaMemcpy(whole.data(), m.parameters().data(), n * sizeof(T), cudaMemcpyDeviceToDevice));
    SGT_CUDA_CHECK(cudaMemcpy(split.data(), m.parameters().data(), n * sizeof(T), cudaMemcpyDeviceToDevice));
    adamw<T, cuda> one(m.parameter_table(), n), a(m.parameter_table(), n), b(m.parameter_table(), n);
    const dist::param_range sa = dist::shard_of(n, 0, 2), sb = dist::shard_of(n, 1, 2);
    REQUIRE(sa.count > 0);
    REQUIRE(sb.count > 0);
    auto no_gather = [](std::span<const std::byte>) -> std::vector<std::byte> { fail("not gathered here"); };
    a.set_shard({sa.offset, sa.count, true, no_gather});
    b.set_shard({sb.offset, sb.count, false, no_gather});
    CHECK(a.first_moment().size() == std::size_t(sa.count));
    for (int t = 1; t <= 3; ++t) {
        one.step(std::span<T>(whole.data(), std::size_t(n)), grads, 1e-2);
        a.step(std::span<T>(split.data(), std::size_t(n)), grads, 1e-2);  // writes its share alone
        b.step(std::span<T>(split.data(), std::size_t(n)), grads, 1e-2);
        CHECK(a.grad_norm() == one.grad_norm());
    }
    std::vector<T> w1(static_cast<std::size_t>(n)), w2(static_cast<std::size_t>(n));
    copy_to_host(cuda{}, w1.data(), whole.data(), n);
    copy_to_host(cuda{}, w2.data(), split.data(), n);
    CHECK(std::memcmp(w1.data(), w2.data(), w1.size() * sizeof(T)) == 0);
    std::vector<T> w0 = m.parameters_to_host();
    CHECK(std::memcmp(w0.data(), w1.data(), w1.size() * sizeof(T)) != 0);  // the steps moved the weights
    const auto m1 = sgt::detail::to_host(cuda{}, one.first_moment());
    const auto ma = sgt::detail::to_host(cuda{}, a.first_moment()), mb = sgt::detail::to_host(cuda{}, b.first_moment());
    std::vector<accum_t<T>> joined(ma.begin(), ma.end());
    joined.insert(joined.end(), mb.begin(), mb.end());
    CHECK(joined == m1);
    if constexpr (adamw<T, cuda>::mixed_precision) {
        // A checkpoint's whole master weights into a share: the share kept, the working copy made from all of them.
        const auto master = one.state_to_host(std::span<const T>(whole.data(), std::size_t(n))).master;
        REQUIRE(master.size() == std::size_t(n));
        device_buffer<T> loaded(static_cast<std::size_t>(n));
        b.load_master_weights(master, std::span<T>(loaded.data(), std::size_t(n)));
        const auto kept = sgt::detail::to_host(cuda{}, b.master_weights(std::span<const T>(loaded.data(), std::size_t(n))));
        CHECK(kept == std::vector<float>(master.begin() + sb.offset, master.end()));
        std::vector<T> w3(static_cast<std::size_t>(n));
        copy_to_host(cuda{}, w3.data(), loaded.data(), n);
        CHECK(std::memcmp(w3.data(), w1.data(), w1.size() * sizeof(T)) == 0);
    }
}

// The NCCL step is recorded into the step's graph and replayed like a plain one; eager, it gives the same bits.
TEST_CASE_TEMPLATE("one rank through NCCL is the plain trainer, bit for bit, replayed or eager", T, float, bf16) {
    const dp::record<T> plain = dp::train<T>(0, 1, nullptr);
    REQUIRE(plain.plans.front() != plain.plans.back());  // the loops grow
    REQUIRE(plain.replayed > 0);
    dist::tcp_group g(0, 1, {});
    for (const bool fp32_reduce : {false, true}) {
        for (const std::int64_t bucket : {std::int64_t(25) << 20, std::int64_t(4096)}) {
            for (const bool graphs : {true, false}) {
                CAPTURE(fp32_reduce);
                CAPTURE(bucket);
                CAPTURE(graphs);
                dist::nccl_data_parallel<T> sync(g, {.fp32_reduce = fp32_reduce, .bucket_bytes = bucket});
                if (!fp32_reduce && bucket > 4096 && graphs)
                    std::printf("  %s: NCCL %d loaded\n", precision_name<T>::value, sync.nccl_version());
                const dp::record<T> one = dp::train<T>(0, 1, &sync, false, graphs);
                CHECK(one.replayed == (graphs ? plain.replayed : 0));
                CHECK(one.losses == plain.losses);
                CHECK(one.plans == plain.plans);
                REQUIRE(one.weights.size() == plain.weights.size());
                CHECK(std::memcmp(one.weights.data(), plain.weights.data(), plain.weights.size() * sizeof(T)) == 0);
            }
        }
    }
}

TEST_CASE("two GPUs: two ranks take the steps of one GPU over the global batch (fp32), with the same Θ") {
    int devices = 0;
    SGT_CUDA_CHECK(cudaGetDeviceCount(&devices));
    if (devices < 2) {
        std::printf("  one GPU: the two-rank test is skipped\n");
        return;
    }
    const dp::record<float> one = dp::train<float>(0, 1, nullptr);
    const auto dir = test::fresh_dir("gpu_nccl");
    std::filesystem::create_directories(dir);
    const auto where = dist::rendezvous::parse("file:" + (dir / "r").string());
    dp::record<float> ranks[2], sharded[2], eager[2];
    const auto errors = test::on_ranks(2, [&](int r) {
        dist::select_device(cuda{}, {.rank = r, .world = 2, .local_rank = r});
        dist::tcp_group g(r, 2, where, {.timeout_s = 60});
        dist::nccl_data_parallel<float> sync(g, {.bucket_bytes = 4096});
        ranks[r] = dp::train<float>(r, 2, &sync);
        sharded[r] = dp::train<float>(r, 2, &sync, true);  // ZeRO-1 over NCCL: the same steps, bit for bit
        eager[r] = dp::train<float>(r, 2, &sync, false, false);  // no graph: the same steps, bit for bit
    });
    std::filesystem::remove_all(dir);
    CHECK(errors[0] == "");
    CHECK(errors[1] == "");
    CHECK(ranks[1].plans == ranks[0].plans);
    CHECK(ranks[1].losses == ranks[0].losses);
    CHECK(ranks[0].plans == one.plans);
    CHECK(ranks[0].replayed == one.replayed);  // the steps with the exchanges were replayed as graphs
    CHECK(sharded[0].replayed == one.replayed);
    CHECK(eager[0].replayed == 0);
    for (int r = 0; r < 2; ++r) {
        CHECK(sharded[r].losses == ranks[r].losses);
        CHECK(sharded[r].weights == ranks[r].weights);
        CHECK(eager[r].losses == ranks[r].losses);
        CHECK(eager[r].weights == ranks[r].weights);
    }
    for (std::size_t i = 0; i < one.losses.size(); ++i)
        CHECK(std::abs(ranks[0].losses[i] - one.losses[i]) <= 1e-5 * std::abs(one.losses[i]));
}
#endif  // __has_include(<nccl.h>)
