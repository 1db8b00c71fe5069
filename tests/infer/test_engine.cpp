// Cached inference (infer/): prefill + decode give the logits of an uncached forward at every position, for
// every kind of loop structure; greedy decoding is the argmax of the full forward; the cache holds exactly the
// head vectors of spec Sec. 7; sampling is reproducible and stays inside its top-k / top-p set; bad input is
// refused with messages that say what was expected.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <set>

#include "sgt/infer/load.hpp"
#include "sgt/sgt.hpp"
#include "../support.hpp"

namespace {

using namespace sgt;
constexpr model_config cfg = presets::tiny;
using tiny_model = model<double, cfg>;
using tiny_inference = inference<double, cfg>;
constexpr int V = tiny_model::V, NL = tiny_model::NL, NH = tiny_model::NH;

// Weights large enough that logits are O(1) and every pass matters (the N(0, 0.02) init makes them tiny).
std::vector<double> strong_weights(std::uint64_t seed) {
    rng r(seed);
    std::vector<double> w(std::size_t(cfg.shape.total_params()));
    for (const auto& e : parameter_table::llama(cfg.shape)) {
        const double sd = e.decay ? 1.0 / std::sqrt(double(e.shape.back())) : 0.0;
        for (std::int64_t i = 0; i < e.numel(); ++i) w[std::size_t(e.offset + i)] = e.decay ? sd * r.normal() : 1.0 + 0.2 * r.normal();
    }
    return w;
}

std::vector<std::int32_t> random_tokens(rng& r, int n) {
    std::vector<std::int32_t> t(static_cast<std::size_t>(n));
    for (auto& x : t) x = std::int32_t(r.below(V));
    return t;
}

// (T, V) logits of an uncached forward of one sequence.
std::vector<double> full_logits(tiny_model& m, const std::vector<std::int32_t>& seq, const loop_plan& plan) {
    const int T = int(seq.size());
    batch b{1, T, seq, std::vector<std::int32_t>(std::size_t(T), 0)};
    m.forward(b, plan);
    const auto l = m.logits();
    return {l.begin(), l.end()};
}

loop_plan sgt_plan(int k, double fade) {
    loop_plan p = loop_plan::vanilla(NL);
    for (int l = 1; l < NL; ++l) {
        p.layers[l].k = std::min(k, l);  // depths 1..k over the layers
        p.layers[l].heads = l == 2 ? std::vector<int>{1, 3} : std::vector<int>{0, 2};
        p.layers[l].fade = l == 3 ? fade : 0.0;
    }
    return p;
}

std::map<std::string, loop_plan> plans() {
    std::map<std::string, loop_plan> p;
    p["vanilla"] = loop_plan::vanilla(NL);
    for (int k = 1; k <= 3; ++k) {
        p["sgt K=" + std::to_string(k)] = sgt_plan(k, 0.0);
        p["sgt K=" + std::to_string(k) + " fade"] = sgt_plan(k, 0.35);
    }
    loop_plan a = loop_plan::vanilla(NL);
    a.layers[NL - 1] = {.k = 2, .heads = {0, 1, 2, 3}};
    p["attention loop"] = a;
    loop_plan bl = loop_plan::vanilla(NL);
    bl.layers[1].block_repeat = 2;
    bl.layers[3].block_repeat = 2;
    p["block loop"] = bl;
    loop_plan mixed = sgt_plan(2, 0.5);
    mixed.layers[1].block_repeat = 2;  // a repeated block that also loops
    p["block loop with loops"] = mixed;
    return p;
}

double max_abs_diff(std::span<const double> a, std::span<const double> b) {
    REQUIRE(a.size() == b.size());
    double d = 0.0;
    for (std::size_t i = 0; i < a.size(); ++i) d = std::max(d, std::abs(a[i] - b[i]));
    return d;
}

// The logits of every prompt position after prefill(prompts, true), one vector per prompt.
template <class Inference>
std::vector<std::vector<double>> prefill_logits_per_prompt(const Inference& inf,
                                                           const std::vector<std::vector<std::int32_t>>& prompts) {
    std::vector<std::vector<double>> out(prompts.size());
    std::size_t row = 0;
    for (std::size_t b = 0; b < prompts.size(); ++b) {
        const std::size_t n = prompts[b].size() * V;
        out[b].assign(inf.all_prefill_logits().begin() + row, inf.all_prefill_logits().begin() + row + n);
        row += n;
    }
    return out;
}

}  // namespace

TEST_CASE("prefill + decode give the logits of the uncached forward at every position (double, <= 1e-12)") {
    const auto weights = strong_weights(11);
    tiny_model m(1, cfg.shape.max_seq);
    m.parameters_from_host(weights);
    m.set_training(false);
    for (const auto& entry : plans()) {
        const std::string& name = entry.first;  // not a structured binding: lambdas (CAPTURE's too) read them
        const loop_plan& plan = entry.second;
        CAPTURE(name);
        tiny_inference inf(3, 24, plan);
        inf.load(m);
        REQUIRE(inf.cache().used() == cache_heads_per_token(plan, NH));
        rng r(5);
        const std::vector<std::vector<std::int32_t>> prompts{random_tokens(r, 7), random_tokens(r, 12),
                                                             random_tokens(r, 1)};
        auto seqs = prompts;
        const auto last = inf.prefill(prompts, true);
        auto cached = prefill_logits_per_prompt(inf, prompts);
        for (int b = 0; b < 3; ++b) {
            const std::size_t n = prompts[b].size() * V;
            // The returned row is the prompt's last position (its product is of B rows, the per-position one of
            // all of them: OpenBLAS picks its kernels by the shape, and its small-matrix kernels on AVX-512 CPUs
            // round differently, so equal within double's rounding, not bit for bit).
            CHECK(max_abs_diff(last.subspan(std::size_t(b) * V, V),
                               std::span<const double>(cached[b]).subspan(n - V, V)) <= 1e-12);
        }
        for (int step = 0; step < 6; ++step) {
            const auto next = random_tokens(r, 3);
            const auto logits = inf.decode(next);
            for (int b = 0; b < 3; ++b) {
                seqs[b].push_back(next[b]);
                cached[b].insert(cached[b].end(), logits.begin() + b * V, logits.begin() + (b + 1) * V);
                CHECK(inf.length(b) == int(seqs[b].size()));
            }
        }
        for (int b = 0; b < 3; ++b) {
            const auto full = full_logits(m, seqs[b], plan);
            const double d = max_abs_diff(cached[b], full);
            CAPTURE(b);
            CHECK(d <= 1e-12);
            // And the logits are not trivially small: the comparison means something.
            double spread = 0.0;
            for (double x : full) spread = std::max(spread, std::abs(x));
            CHECK(spread > 0.5);
        }
    }
}

TEST_CASE("the cache holds n_l·n_h + Σ K_l·|S_l| head vectors per token, and reports its bytes") {
    // SGT K=3 without fade: 4·4 + (1 + 2 + 2)·2 (layer l loops min(3, l) times over 2 heads).
    CHECK(cache_heads_per_token(sgt_plan(3, 0.0), NH) == 16 + (1 + 2 + 3) * 2);
    // The fade step runs all heads: layer 3's first loop step holds 4 instead of 2.
    CHECK(cache_heads_per_token(sgt_plan(3, 0.35), NH) == 16 + (1 + 2 + 3) * 2 + 2);
    loop_plan bl = loop_plan::vanilla(NL);
    bl.layers[1].block_repeat = 2;
    CHECK(cache_heads_per_token(bl, NH) == 16 + 4);
    tiny_inference inf(2, 20, sgt_plan(2, 0.0));
    const std::int64_t per_token = 16 + (1 + 2 + 2) * 2;
    CHECK(inf.cache().capacity() == per_token);
    CHECK(inf.cache_bytes() == 2 * per_token * 2 * 20 * cfg.shape.head_dim * std::int64_t(sizeof(double)));
    // A smaller plan fits the same cache; a larger one does not.
    inf.set_structure(loop_plan::vanilla(NL));
    CHECK(inf.cache().used() == 16);
    CHECK(test::error_of([&] { inf.set_structure(sgt_plan(3, 0.0)); }) ==
          "kv cache: the structure needs 28 (key, value) head vectors per token, the cache was built for 26");
    // The default capacity is the compile-time budget: every plan of the budget fits.
    tiny_inference budget(1, 8);
    CHECK(budget.cache().capacity() == 16 + 3 * 3 * 4);
    budget.set_structure(sgt_plan(3, 0.35));
}

TEST_CASE("greedy decoding emits the argmax of the full forward; seeded sampling is reproducible") {
    tiny_model m(1, cfg.shape.max_seq);
    m.parameters_from_host(strong_weights(3));
    const loop_plan plan = sgt_plan(2, 0.5);
    tiny_inference inf(2, 32, plan);
    inf.load(m);
    rng r(9);
    const std::vector<std::vector<std::int32_t>> prompts{random_tokens(r, 5), random_tokens(r, 9)};
    generation_options o{.max_new_tokens = 10, .sampling = {.temperature = 0.0}};
    std::vector<std::vector<std::int32_t>> streamed(2);
    const auto g = inf.generate(prompts, o, [&](int b, std::int32_t t) { streamed[b].push_back(t); });
    CHECK(streamed == g.tokens);
    CHECK(g.decode_tokens == 2 * 9);
    CHECK(g.prefill_tokens == 14);
    for (int b = 0; b < 2; ++b) {
        REQUIRE(g.tokens[b].size() == 10);
        auto seq = prompts[b];
        seq.insert(seq.end(), g.tokens[b].begin(), g.tokens[b].end() - 1);
        const auto full = full_logits(m, seq, plan);
        for (int i = 0; i < 10; ++i) {
            const std::size_t pos = prompts[b].size() - 1 + i;
            CHECK(g.tokens[b][i] == argmax(std::span<const double>(full).subspan(pos * V, V)));
        }
    }

    o.sampling = {.temperature = 1.0, .top_k = 20, .top_p = 0.95, .seed = 42};
    const auto s1 = inf.generate(prompts, o), s2 = inf.generate(prompts, o);
    CHECK(s1.tokens == s2.tokens);
    o.sampling.seed = 43;
    CHECK(inf.generate(prompts, o).tokens != s1.tokens);

    // A stop token ends its sequence: the other keeps going.
    o.sampling = {.temperature = 0.0};
    o.stop_token = g.tokens[0][2];
    const auto stopped = inf.generate(prompts, o);
    CHECK(stopped.tokens[0].back() == o.stop_token);
    CHECK(stopped.tokens[0].size() <= 3);
}

TEST_CASE("top-k and top-p never emit a token outside their set") {
    // Probabilities 0.4, 0.3, 0.2, 0.1 (then ~0) on tokens 3, 0, 7, 5.
    std::vector<double> logits(10, -50.0);
    logits[3] = std::log(0.4), logits[0] = std::log(0.3), logits[7] = std::log(0.2), logits[5] = std::log(0.1);
    auto draws = [&](sampling_options o) {
        sampler s(o);
        std::set<int> seen;
        for (int i = 0; i < 2000; ++i) seen.insert(s.sample(std::span<const double>(logits)));
        return seen;
    };
    CHECK(draws({.top_k = 2, .seed = 1}) == std::set<int>{3, 0});
    CHECK(draws({.top_k = 3, .seed = 2}) == std::set<int>{3, 0, 7});
    CHECK(draws({.top_p = 0.65, .seed = 3}) == std::set<int>{3, 0});       // 0.4 + 0.3 reaches 0.65
    CHECK(draws({.top_p = 0.75, .seed = 4}) == std::set<int>{3, 0, 7});    // 0.7 does not reach 0.75
    CHECK(draws({.top_p = 0.3, .seed = 5}) == std::set<int>{3});           // the top token alone reaches 0.3
    CHECK(draws({.top_k = 3, .top_p = 0.5, .seed = 6}) == std::set<int>{3, 0});
    CHECK(draws({.temperature = 0.0}) == std::set<int>{3});
    // The distribution sampled from, renormalised over the kept set.
    const auto d = sampler({.top_p = 0.65}).distribution(std::span<const double>(logits));
    REQUIRE(d.size() == 2);
    CHECK(d[0].first == 3);
    CHECK(d[0].second == doctest::Approx(0.4 / 0.7).epsilon(1e-9));
    // Seeded draws follow the probabilities: token 3 about 4/7 of the time.
    sampler s({.top_p = 0.65, .seed = 7});
    int threes = 0;
    for (int i = 0; i < 7000; ++i) threes += s.sample(std::span<const double>(logits)) == 3;
    CHECK(threes == doctest::Approx(4000).epsilon(0.05));
}

TEST_CASE("bad input is refused with a message that says what was expected") {
    tiny_inference inf(2, 16, loop_plan::vanilla(NL));
    using test::error_of;
    CHECK(error_of([&] { inf.prefill({{1, 2}, {}}); }) == "inference: prompt 1 is empty; expected at least one token");
    CHECK(error_of([&] { inf.prefill({}); }) == "inference: expected 1 to 2 prompts (the cache's batch), found 0");
    CHECK(error_of([&] { inf.prefill({{1, 64}}); }) ==
          "inference: token 64 at position 1 of prompt 0 is outside the vocabulary [0, 64)");
    CHECK(error_of([&] { inf.prefill({std::vector<std::int32_t>(17, 1)}); }) ==
          "inference: prompt 0 has 17 tokens, beyond the context of 16 the cache was built for");
    CHECK(error_of([&] { inf.decode(std::vector<std::int32_t>{1}); }) == "inference: decode() needs a prefill() first");
    CHECK(error_of([&] { inf.generate({std::vector<std::int32_t>(10, 1)}, {.max_new_tokens = 8}); }) ==
          "inference: prompt 0 (10 tokens) plus 8 new tokens is beyond the context of 16 the cache was built for");
    inf.prefill({std::vector<std::int32_t>(15, 1)});
    inf.decode(std::vector<std::int32_t>{2});  // position 15, the last one
    CHECK(error_of([&] { inf.decode(std::vector<std::int32_t>{2}); }) ==
          "inference: sequence 0 would reach position 17, beyond the context of 16 the cache was built for");
    inf.prefill({{1}, {2}});
    CHECK(error_of([&] { inf.decode(std::vector<std::int32_t>{3, -1}); }) ==
          "inference: token -1 for sequence 1 is outside the vocabulary [0, 64)");
    CHECK(error_of([&] { inf.decode(std::vector<std::int32_t>{3}); }) ==
          "inference: expected one token for each of the 2 sequences, found 1");
    CHECK(error_of([&] { sampler({.top_p = 0.0}); }) == "sampling: expected top_p in (0, 1], found 0");
    CHECK(error_of([&] { sampler({.top_p = 1.5}); }) == "sampling: expected top_p in (0, 1], found 1.5");
    CHECK(error_of([&] { sampler({.temperature = -0.5}); }) ==
          "sampling: expected a temperature >= 0 (0 = greedy), found -0.5");
    CHECK(error_of([&] { inf.generate({{1}}, {.stop_token = 64}); }) ==
          "inference: stop token 64 is outside [0, 64) (or -1: none)");
    CHECK(error_of([&] { tiny_inference(1, 33); }) ==
          "inference: context 33 is outside [1, 32], the preset's maximum sequence");
}

TEST_CASE("a checkpoint loads with its frozen plan; one of another config is refused naming the difference") {
    namespace fs = std::filesystem;
    const fs::path dir = fs::temp_directory_path() / "sgt_infer_checkpoint_test";
    fs::remove_all(dir);
    // A short SGT run that activates a layer in fade (t_start 2, Δt 4): at step 4 the fade gain is 0.5.
    using float_model = model<float, cfg>;
    float_model m(2, 16, 3);
    growth_options go = growth_options::from_budget(cfg.loops);
    go.t_start = 2;
    go.dt = 4;
    growth_operator<> op(cfg.shape, go);
    trainer tr(m, op, cosine_schedule{.lr_max = 1e-3, .warmup = 1, .total = 10}, adamw_options{}, 2, 16);
    rng r(1);
    for (int t = 0; t < 4; ++t) {
        batch b{2, 16, random_tokens(r, 32), random_tokens(r, 32)};
        tr.step(b);
    }
    save_checkpoint(dir, tr, nlohmann::json::object());
    inference<float, cfg> inf(1, 16, float_model::budget_plan());
    const loop_plan plan = load_checkpoint_for_inference(dir, inf);
    CHECK(plan == op.plan());
    CHECK(inf.structure().plan == op.plan());
    bool fading = false;
    for (const auto& l : plan.layers) fading |= l.fade > 0.0 && l.k > 0;
    CHECK(fading);
    const auto host = m.parameters_to_host();
    std::vector<float> loaded(inf.parameters().begin(), inf.parameters().end());
    CHECK(loaded == host);

    inference<float, presets::char_mini> other(1, 16);
    const std::string e = test::error_of([&] { load_checkpoint_for_inference(dir, other); });
    CHECK(test::contains(e, "the checkpoint's model config"));
    CHECK(test::contains(e, "differs from this model's"));
    fs::remove_all(dir);
}

TEST_CASE("decoding with learned head gates: cached = uncached logits; closed heads skip their reads, counted") {
    // GATES.md Sec. 3.1 and 7: a straight-through gated model (its forward applies g = s·[s ≥ θ]) with gates away
    // from their init, so that a good share of (token, head) pairs is closed; one dense head per layer.
    using gated_model = model<double, cfg, cpu, gated_variant>;
    const gate_options go{.threshold = 0.5, .n_dense = 1};
    const auto dense = strong_weights(11);
    gated_model m(1, cfg.shape.max_seq, 0, gated_variant(go));
    const auto llama = parameter_table::llama(cfg.shape);
    rng r(21);
    for (const auto& e : m.parameter_table()) {
        auto w = m.parameter(e.name);
        if (e.name.find(".gate.") == std::string::npos)
            std::copy_n(dense.begin() + llama.at(e.name).offset, e.numel(), w.begin());
        else
            for (auto& x : w) x = e.name.ends_with("weight") ? 0.8 * r.normal() : r.normal();
    }
    m.set_training(false);
    const int ng = NH - go.n_dense;
    for (const auto& entry : plans()) {
        const std::string& name = entry.first;  // not a structured binding: lambdas (CAPTURE's too) read them
        const loop_plan& plan = entry.second;
        CAPTURE(name);
        tiny_inference inf(2, 24, plan);
        inf.set_gates(go);
        inf.load(m);
        const std::vector<std::vector<std::int32_t>> prompts{random_tokens(r, 9), random_tokens(r, 4)};
        auto seqs = prompts;
        inf.prefill(prompts, true);
        auto cached = prefill_logits_per_prompt(inf, prompts);
        const int steps = 8;
        for (int step = 0; step < steps; ++step) {
            const auto next = random_tokens(r, 2);
            const auto logits = inf.decode(next);
            for (int b = 0; b < 2; ++b) {
                seqs[b].push_back(next[b]);
                cached[b].insert(cached[b].end(), logits.begin() + b * V, logits.begin() + (b + 1) * V);
            }
        }
        // The gated passes: the first pass of every block application (every layer is gated).
        int gated_passes = 0;
        for (const auto& p : inf.structure().passes) gated_passes += p.step == 0 ? 1 : 0;
        // Closed (token, gated head) pairs of the decoded tokens, from the model's own gate report: the closed
        // fraction over a whole sequence, less that over its prompt (the gates are causal).
        auto closed_pairs = [&](const std::vector<std::int32_t>& seq) {
            const int T = int(seq.size());
            batch bt{1, T, seq, std::vector<std::int32_t>(std::size_t(T), 0)};
            m.forward(bt, plan);
            return std::llround(m.variant().report().sparsity * double(T) * ng * gated_passes);
        };
        std::int64_t expected_skips = 0, expected_kv = 0;
        for (int b = 0; b < 2; ++b) {
            CAPTURE(b);
            batch full{1, int(seqs[b].size()), seqs[b], std::vector<std::int32_t>(seqs[b].size(), 0)};
            m.forward(full, plan);
            const auto l = m.logits();
            CHECK(max_abs_diff(cached[b], std::span<const double>(l.data(), l.size())) <= 1e-12);
            expected_skips += closed_pairs(seqs[b]) - closed_pairs(prompts[b]);
            for (int step = 0; step < steps; ++step) expected_kv += std::int64_t(prompts[b].size()) + step + 1;
        }
        const gate_decode_stats& st = inf.gate_stats();
        CHECK(st.head_reads == std::int64_t(steps) * 2 * ng * gated_passes);
        CHECK(st.kv_vectors == expected_kv * ng * gated_passes);
        CHECK(st.head_reads_skipped == expected_skips);
        CHECK(st.head_reads_skipped > st.head_reads / 10);  // the gates really close heads here
        CHECK(st.head_reads_skipped < st.head_reads);
        CHECK(st.kv_vectors_skipped > 0);
        CHECK(st.kv_vectors_skipped < st.kv_vectors);
    }
}

TEST_CASE("a gated model's checkpoint decodes with its gates; without set_gates its weights are refused") {
    namespace fs = std::filesystem;
    using gated_model = model<double, cfg, cpu, gated_variant>;
    const gate_options go{.threshold = 0.4, .n_dense = 2, .layers = {1, 3}};
    gated_model m(2, 16, 3, gated_variant(go));
    static_schedule sched(loop_plan::vanilla(NL), NH, "vanilla");
    trainer tr(m, sched, cosine_schedule{.lr_max = 1e-3, .warmup = 1, .total = 4}, adamw_options{}, 2, 16);
    rng r(2);
    for (int t = 0; t < 2; ++t) tr.step(batch{2, 16, random_tokens(r, 32), random_tokens(r, 32)});
    const fs::path dir = fs::temp_directory_path() / "sgt_infer_gated_checkpoint_test";
    fs::remove_all(dir);
    save_checkpoint(dir, tr, nlohmann::json::object());
    tiny_inference plain(1, 16);
    CHECK(test::contains(test::error_of([&] { plain.load(m); }), "a gated model needs set_gates()"));
    tiny_inference inf(1, 16);
    load_checkpoint_for_inference(dir, inf);
    REQUIRE(inf.gates().has_value());
    CHECK(inf.gates()->threshold == 0.4);
    CHECK(inf.gates()->n_dense == 2);
    CHECK(inf.gates()->layers == std::vector<int>{1, 3});
    // Every tensor arrived, the gates' included.
    const std::vector<double> loaded(inf.parameters().begin(), inf.parameters().end());
    CHECK(loaded == m.parameters_to_host());
    fs::remove_all(dir);
}

TEST_CASE("a σReparam model decodes with the weights it runs on, Ŵ = (γ/σ) W, from the model or its checkpoint") {
    namespace fs = std::filesystem;
    tiny_model m(2, 16, 5, paper_variant{}, sigma_reparam_options{.enabled = true});
    static_schedule sched(loop_plan::vanilla(NL), NH, "vanilla");
    trainer tr(m, sched, cosine_schedule{.lr_max = 3e-2, .warmup = 1, .total = 4}, adamw_options{}, 2, 16);
    rng r(7);
    for (int t = 0; t < 3; ++t) tr.step(batch{2, 16, random_tokens(r, 32), random_tokens(r, 32)});  // W, γ, u, v move
    const loop_plan plan = sgt_plan(2, 0.0);
    const auto seq = random_tokens(r, 14);
    m.set_training(false);
    const auto full = full_logits(m, seq, plan);  // an evaluation forward: no power-iteration step
    tiny_inference inf(1, 16, plan);
    inf.load(m);
    inf.prefill({seq}, true);
    CHECK(max_abs_diff(inf.all_prefill_logits(), full) <= 1e-12);
    // The folded weights differ from W (γ/σ ≠ 1 after training), so the comparison above is not trivially met.
    const auto raw = m.parameters_to_host();
    const std::vector<double> folded(inf.parameters().begin(), inf.parameters().end());
    const auto& q = parameter_table::llama(cfg.shape).at("model.layers.1.self_attn.q_proj.weight");
    CHECK(std::abs(folded[std::size_t(q.offset)] - raw[std::size_t(q.offset)]) > 1e-9);

    const fs::path dir = fs::temp_directory_path() / "sgt_infer_sigma_checkpoint_test";
    fs::remove_all(dir);
    save_checkpoint(dir, tr, nlohmann::json::object());
    tiny_inference from_disk(1, 16);
    load_checkpoint_for_inference(dir, from_disk);
    const std::vector<double> loaded(from_disk.parameters().begin(), from_disk.parameters().end());
    CHECK(loaded == folded);
    fs::remove_all(dir);
}
