// examples/common.hpp: what the example programs share: run-time choice of preset, data and loop schedule,
// a progress bar, a JSONL log, and the training loop itself (train → evaluate at an interval → summary).
#pragma once

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unistd.h>
#include <vector>

#include "sgt/infer/engine.hpp"
#include "sgt/io/checkpoint.hpp"
#include "sgt/sgt.hpp"

namespace examples {

using namespace sgt;

// Calls f.template operator()<Cfg>() with the preset named `name`.
template <class F>
decltype(auto) with_preset(const std::string& name, F&& f) {
    if (name == "tiny") return f.template operator()<presets::tiny>();
    if (name == "char_mini") return f.template operator()<presets::char_mini>();
    if (name == "char_small") return f.template operator()<presets::char_small>();
    fail("unknown preset '{}': expected tiny, char_mini or char_small", name);
}


// Any dataset, chosen at run time.
class any_dataset {
public:
    template <dataset D>
    explicit any_dataset(D d) : p_(std::make_shared<impl<D>>(std::move(d))) {}
    batch train_batch(rng& r, int B, int T) { return p_->train_batch(r, B, T); }
    std::vector<batch> val_batches(int B, int T, int n) const { return p_->val_batches(B, T, n); }
    std::string describe() const { return p_->describe(); }
    int vocab() const { return p_->vocab(); }
    // The stream position of sequential data (llm.c shards), for checkpoints; null for randomly sampled data,
    // whose state is the caller's RNG.
    nlohmann::json position() const { return p_->position(); }
    void seek(const nlohmann::json& j) { p_->seek(j); }
    // Correct answers where the data defines them (the k-hop task), for a batch and argmax predictions.
    std::optional<answer_score> score(const batch& b, std::span<const std::int32_t> pred) const {
        return p_->score(b, pred);
    }

private:
    struct base {
        virtual ~base() = default;
        virtual batch train_batch(rng&, int, int) = 0;
        virtual std::vector<batch> val_batches(int, int, int) const = 0;
        virtual std::string describe() const = 0;
        virtual int vocab() const = 0;
        virtual nlohmann::json position() const = 0;
        virtual void seek(const nlohmann::json&) = 0;
        virtual std::optional<answer_score> score(const batch&, std::span<const std::int32_t>) const = 0;
    };
    template <class D>
    struct impl final : base {
        explicit impl(D d) : d(std::move(d)) {}
        batch train_batch(rng& r, int B, int T) override { return d.train_batch(r, B, T); }
        std::vector<batch> val_batches(int B, int T, int n) const override { return d.val_batches(B, T, n); }
        std::string describe() const override { return d.describe(); }
        int vocab() const override { return d.vocab(); }
        nlohmann::json position() const override {
            if constexpr (std::is_same_v<D, shard_dataset>)
                return {{"shard", d.position().shard}, {"offset", d.position().offset}};
            else
                return nullptr;
        }
        void seek(const nlohmann::json& j) override {
            if constexpr (std::is_same_v<D, shard_dataset>)
                d.seek(shard_position{j.at("shard").get<std::uint64_t>(), j.at("offset").get<std::uint64_t>()});
        }
        std::optional<answer_score> score(const batch& b, std::span<const std::int32_t> pred) const override {
            if constexpr (std::is_same_v<D, k_hop_dataset>)
                return k_hop_score(b, pred);
            else
                return std::nullopt;
        }
        D d;
    };
    std::shared_ptr<base> p_;
};

// A one-line progress bar on stderr: redrawn in place on a terminal, a line every 10% otherwise.
class progress_bar {
public:
    explicit progress_bar(int total, bool quiet = false)
        : total_(total), quiet_(quiet), tty_(isatty(fileno(stderr))), start_(std::chrono::steady_clock::now()) {}

    void update(int done, double loss, double tokens_per_s, const std::string& extra = {}) {
        if (quiet_) return;
        const int decile = done * 10 / total_;
        if (!tty_ && decile == last_decile_ && done != total_) return;
        last_decile_ = decile;
        const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
        const double eta = done > 0 ? elapsed * (total_ - done) / done : 0.0;
        constexpr int width = 24;
        const int fill = done * width / total_;
        const std::string bar = std::string(fill, '#') + std::string(width - fill, '.');
        fmt::print(stderr, "{}[{}] {:>5}/{} loss {:.4f} | {:>7.0f} tok/s | {} elapsed, ETA {}{}{}",
                   tty_ ? "\r" : "", bar, done, total_, loss, tokens_per_s, clock(elapsed), clock(eta),
                   extra.empty() ? "" : " | ", extra);
        fmt::print(stderr, "{}", tty_ ? "\x1b[K" : "\n");
        std::fflush(stderr);
    }
    void finish() {
        if (!quiet_ && tty_) fmt::print(stderr, "\n");
    }

private:
    static std::string clock(double s) {
        const int t = int(s + 0.5);
        return fmt::format("{}:{:02}", t / 60, t % 60);
    }
    int total_;
    bool quiet_, tty_;
    int last_decile_ = -1;
    std::chrono::steady_clock::time_point start_;
};

// One JSON object per line; nothing is written when no path is given.
class jsonl_log {
public:
    explicit jsonl_log(const std::string& path) {
        if (path.empty()) return;
        out_.open(path);
        require(bool(out_), "log: cannot open '{}' for writing", path);
    }
    void write(const nlohmann::json& j) {
        if (out_.is_open()) out_ << j.dump() << '\n' << std::flush;
    }

private:
    std::ofstream out_;
};

struct run_options {
    std::string preset = "char_mini";
    int steps = 300;
    int batch = 8;
    int seq = 64;
    cosine_schedule lr{.lr_max = 3e-3, .warmup = 25, .total = 300, .min_ratio = 0.1};
    adamw_options optim{};
    double dropout = 0.0;
    std::uint64_t seed = 1;
    int eval_interval = 50;
    int eval_batches = 8;
    bool quiet = false;
    std::string checkpoint_dir;  // where checkpoints go; none are written when empty
    int checkpoint_every = 0;    // steps between checkpoints (0: only the final one)
    int keep = 3;                // checkpoints kept
    std::string resume;          // a checkpoint (or directory of them) to continue from
    int sample_every = 0;        // steps between printed samples (0: none)
    int sample_tokens = 64;      // tokens per sample
    // The embedded task when no data is given: few symbols so that a 64-token sequence holds the mapping
    // and several queries.
    k_hop_options task{.symbols = 6, .min_hops = 1, .max_hops = 2};
};

// Set by SIGINT/SIGTERM while a run that writes checkpoints is in progress: the run saves and stops.
inline volatile std::sig_atomic_t stop_requested = 0;
inline void request_stop(int) { stop_requested = 1; }

struct run_result {
    std::string name;
    double final_val_loss = 0.0;
    std::optional<double> final_accuracy;
    double seconds = 0.0;        // training steps only, evaluation excluded
    double flops = 0.0;          // training FLOPs of the run (spec Sec. 6)
    double vanilla_flops = 0.0;  // the same run without loops
    std::int64_t params = 0;
    std::vector<growth_event> events;
    nlohmann::json final_structure;
    bool interrupted = false;  // stopped by SIGINT/SIGTERM after saving a checkpoint
};

inline std::vector<double> layer_variances(const entropy_report& e) {
    std::vector<double> v(e.layers);
    for (int l = 0; l < e.layers; ++l) v[l] = e.layer_variance(l);
    return v;
}

// Trains a model of preset Cfg on `data` under `schedule`; evaluates every eval_interval steps and at the end.
// T and Backend: the stored type and the backend (examples/train_cuda runs this on the GPU).
template <model_config Cfg, class T = float, class Backend = cpu>
run_result train_run(const run_options& o, any_dataset& data, any_schedule& schedule, jsonl_log& log) {
    using model_t = model<T, Cfg, Backend>;
    require(data.vocab() <= model_t::V, "data: tokens go up to {}, but the preset's vocabulary is {}", data.vocab(),
            model_t::V);
    model_t m(o.batch, o.seq, o.seed);
    m.set_dropout(o.dropout);
    trainer tr(m, schedule, o.lr, o.optim, o.batch, o.seq);
    rng data_rng(o.seed * 7919 + 17);
    const auto val = data.val_batches(o.batch, o.seq, o.eval_batches);

    run_result r;
    r.name = schedule.name();
    r.params = Cfg.shape.total_params();
    // Validation loss over all validation batches, dropout off; answer accuracy of the argmax where the data
    // defines answers (the k-hop task).
    auto evaluate = [&](int t) {
        std::optional<answer_score> score;
        std::vector<std::int32_t> pred;
        const double v = tr.evaluate(val, [&](const batch& vb, std::span<const T> lg) {
            pred.resize(std::size_t(vb.B) * vb.T);
            const auto less = [](const T& a, const T& b) { return float(a) < float(b); };
            for (std::size_t i = 0; i < pred.size(); ++i) {
                const T* row = lg.data() + i * model_t::V;
                pred[i] = std::int32_t(std::max_element(row, row + model_t::V, less) - row);
            }
            if (const auto sc = data.score(vb, pred)) {
                if (!score) score = answer_score{};
                *score += *sc;
            }
        });
        std::optional<double> acc;
        if (score && score->total > 0) acc = score->accuracy();
        nlohmann::json j{{"type", "eval"}, {"run", r.name}, {"step", t}, {"val_loss", v}};
        if (acc) j["accuracy"] = *acc;
        log.write(j);
        r.final_val_loss = v;
        r.final_accuracy = acc;
        return v;
    };

    // Checkpoints: the data state beside the trainer's is the data RNG and, for shards, the stream position.
    auto save = [&] {
        const auto& s = data_rng.state();
        const nlohmann::json state{{"rng", std::vector<std::uint64_t>(s.begin(), s.end())},
                                   {"position", data.position()}, {"batch", o.batch}, {"seq", o.seq}};
        const auto dir = save_checkpoint(o.checkpoint_dir, tr, state, o.keep);
        log.write({{"type", "checkpoint"}, {"run", r.name}, {"step", tr.steps()}, {"path", dir.string()}});
        if (!o.quiet) fmt::print(stderr, "\ncheckpoint: {}\n", dir.string());
    };
    if (!o.resume.empty()) {
        const nlohmann::json state = load_checkpoint(o.resume, tr);
        require(state.at("batch") == o.batch && state.at("seq") == o.seq,
                "resume: the checkpoint was trained with batch {} x {}, this run asks for {} x {}",
                state.at("batch").dump(), state.at("seq").dump(), o.batch, o.seq);
        const auto w = state.at("rng").get<std::vector<std::uint64_t>>();
        require(w.size() == 4, "resume: expected 4 words of data RNG state, found {}", w.size());
        data_rng.set_state({w[0], w[1], w[2], w[3]});
        if (!state.at("position").is_null()) data.seek(state.at("position"));
        fmt::print(stderr, "resumed from {} at step {}\n", resolve_checkpoint(o.resume).string(), tr.steps());
        log.write({{"type", "resume"}, {"run", r.name}, {"step", tr.steps()}, {"path", o.resume}});
    }
    if (!o.checkpoint_dir.empty()) {
        stop_requested = 0;
        std::signal(SIGINT, request_stop);
        std::signal(SIGTERM, request_stop);
    }

    // A short sample from the model as it is (--sample-every): the first tokens of the first validation sequence
    // as the prompt, the current loop plan frozen, a KV cache of the training sequence length.
    std::optional<inference<T, Cfg, Backend>> gen;
    auto sample = [&](int t) {
        const int prompt_len = std::min(8, o.seq / 2);
        const int n = std::max(1, std::min(o.sample_tokens, o.seq - prompt_len + 1));
        if (!gen) gen.emplace(1, prompt_len + n - 1, model_t::budget_plan());
        gen->set_structure(schedule.plan());
        gen->load(m);
        const std::vector<std::int32_t> prompt(val[0].inputs.begin(), val[0].inputs.begin() + prompt_len);
        const generation g = gen->generate({prompt}, {.max_new_tokens = n, .sampling = {.temperature = 0.8, .seed = o.seed}});
        std::string text;
        for (auto c : prompt) text += Cfg.shape.vocab == 256 ? std::string(1, char(c)) : fmt::format("{} ", c);
        text += Cfg.shape.vocab == 256 ? "|" : "| ";
        for (auto c : g.tokens[0]) text += Cfg.shape.vocab == 256 ? std::string(1, char(c)) : fmt::format("{} ", c);
        log.write({{"type", "sample"}, {"run", r.name}, {"step", t}, {"prompt", prompt}, {"tokens", g.tokens[0]}});
        if (!o.quiet) fmt::print(stderr, "\nsample at step {}: {}\n", t, text);
    };

    progress_bar bar(o.steps, o.quiet);
    double last_val = std::nan("");
    double smoothed = 0.0;
    const int first_step = tr.steps() + 1;
    const double resumed_seconds = tr.seconds();
    for (int t = first_step; t <= o.steps; ++t) {
        const batch b = data.train_batch(data_rng, o.batch, o.seq);
        const step_stats s = tr.step(b);
        smoothed = t == first_step ? s.loss : 0.9 * smoothed + 0.1 * s.loss;
        log.write({{"type", "step"}, {"run", r.name}, {"step", t}, {"loss", s.loss}, {"lr", s.lr},
                   {"grad_norm", s.grad_norm}, {"seconds", s.seconds}, {"flops", s.flops},
                   {"cumulative_flops", tr.flops().total()}, {"tokens_per_s", b.B * b.T / s.seconds}});
        for (const auto& e : s.events) {
            log.write({{"type", "growth"}, {"run", r.name}, {"event", e}});
            r.events.push_back(e);
        }
        if (t % o.eval_interval == 0 || t == o.steps) {
            const auto& ent = m.entropies();
            log.write({{"type", "entropy"}, {"run", r.name}, {"step", t}, {"layers", ent.layers}, {"heads", ent.heads},
                       {"first_pass", ent.first_pass}, {"layer_mean", ent.layer_means()},
                       {"layer_variance", layer_variances(ent)}});
            last_val = evaluate(t);
        }
        if (o.sample_every > 0 && t % o.sample_every == 0) sample(t);
        const double tok_s = double(t - first_step + 1) * b.B * b.T / (tr.seconds() - resumed_seconds);
        bar.update(t, smoothed, tok_s,
                   fmt::format("val {:.4f} | {:.2f} GFLOP", last_val, tr.flops().total() / 1e9));
        if (!o.checkpoint_dir.empty() && stop_requested) {
            bar.finish();
            save();
            r.interrupted = true;
            break;
        }
        if (!o.checkpoint_dir.empty() && o.checkpoint_every > 0 && t % o.checkpoint_every == 0 && t != o.steps)
            save();
    }
    bar.finish();
    if (!o.checkpoint_dir.empty() && !r.interrupted) save();
    r.seconds = tr.seconds();
    r.flops = tr.flops().total();
    r.vanilla_flops = tr.flops().vanilla_total();
    r.final_structure = schedule.to_json();
    log.write({{"type", "summary"}, {"run", r.name}, {"val_loss", r.final_val_loss}, {"seconds", r.seconds},
               {"flops", r.flops}, {"vanilla_flops", r.vanilla_flops}, {"schedule", r.final_structure}});
    return r;
}

// The embedded default: the k-hop pointer-chasing task (data/synthetic.hpp), no file needed.
// The text file at `path`, or the embedded k-hop task (data/synthetic.hpp) when there is none.
inline any_dataset text_or_task(const std::string& path, const k_hop_options& task) {
    return path.empty() ? any_dataset(k_hop_dataset(task)) : any_dataset(text_dataset(path));
}

inline std::string human_flops(double f) {
    if (f >= 1e15) return fmt::format("{:.2f} PFLOP", f / 1e15);
    if (f >= 1e12) return fmt::format("{:.2f} TFLOP", f / 1e12);
    return fmt::format("{:.2f} GFLOP", f / 1e9);
}

// Growth and baseline settings of the example programs (flags of the same names).
struct growth_flags {
    std::string variant = "sgt";
    int t_start = 25, dt = 25, L = -1, k_max = -1, h = -1;
    std::vector<int> excluded{0};
    std::string direction = "d2s", transition = "fade", fade = "linear";
    double ema = 0.0;
    bool release_rules = false;
    std::vector<int> block_layers;  // given Block Loop layers; empty: chosen by entropy at t_start
    int loop_layer = -1, loop_k = 1;
};

template <model_config Cfg>
any_schedule make_schedule(const growth_flags& g) {
    constexpr model_shape s = Cfg.shape;
    const int L = g.L >= 0 ? g.L : Cfg.loops.L;
    if (g.variant == "vanilla") return any_schedule(vanilla_schedule(s.layers));
    if (g.variant == "block")
        return g.block_layers.empty() ? any_schedule(block_loop_schedule::by_entropy(s.layers, L, g.t_start, g.excluded))
                                      : any_schedule(block_loop_schedule::given(s.layers, g.block_layers));
    if (g.variant == "attention")
        return any_schedule(head_loop_schedule<all_heads>(
            s.layers, s.heads,
            head_loop_options{.layer = g.loop_layer >= 0 ? g.loop_layer : s.layers - 1, .h = s.heads, .k = g.loop_k,
                              .t_start = g.t_start}));
    if (g.variant == "sgt") {
        growth_options o = growth_options::from_budget(Cfg.loops);
        o.t_start = g.t_start;
        o.dt = g.dt;
        o.L = L;
        if (g.k_max >= 0) o.k_max = g.k_max;
        if (g.h >= 0) o.h = g.h;
        o.excluded = g.excluded;
        o.direction = g.direction == "s2d" ? growth_direction::shallow_to_deep : growth_direction::deep_to_shallow;
        o.transition = g.transition == "hard" ? growth_transition::hard : growth_transition::fade;
        o.shape = g.fade == "cosine" ? fade_shape::cosine
                  : g.fade == "exponential" ? fade_shape::exponential : fade_shape::linear;
        o.ema_alpha = g.ema;
        o.release_rules = g.release_rules;
        return any_schedule(growth_operator<>(s, o));
    }
    fail("unknown variant '{}': expected vanilla, block, attention or sgt", g.variant);
}

// The flags both programs take; `data` and `log_path` receive --data and --log.
inline void add_common_options(CLI::App& app, run_options& o, growth_flags& g, std::string& data, std::string& log_path) {
    app.add_option("--preset", o.preset, "tiny, char_mini or char_small")->capture_default_str();
    app.add_option("--data", data, "a text file (byte-level, 90/10 split); default: the embedded k-hop task");
    app.add_option("--steps", o.steps, "training steps (of every run)")->capture_default_str();
    app.add_option("--batch", o.batch, "sequences per batch")->capture_default_str();
    app.add_option("--seq", o.seq, "tokens per sequence")->capture_default_str();
    app.add_option("--lr", o.lr.lr_max, "peak learning rate")->capture_default_str();
    app.add_option("--warmup", o.lr.warmup, "linear warm-up steps")->capture_default_str();
    app.add_option("--dropout", o.dropout, "dropout on embeddings and residual branches")->capture_default_str();
    app.add_option("--seed", o.seed, "seed of weights, data order and dropout")->capture_default_str();
    app.add_option("--t-start", g.t_start, "first growth decision (SGT) or layer choice (Block Loop) at this step")
        ->capture_default_str();
    app.add_option("--dt", g.dt, "steps between growth decisions (and the fade window)")->capture_default_str();
    app.add_option("--eval-interval", o.eval_interval, "steps between validations")->capture_default_str();
    app.add_option("--eval-batches", o.eval_batches, "validation batches")->capture_default_str();
    app.add_option("--log", log_path, "JSONL log: steps, evaluations, growth events, entropies");
    app.add_flag("--quiet", o.quiet, "no progress bar");
    app.add_option("--symbols", o.task.symbols, "k-hop task: symbols in the mapping")->capture_default_str();
    app.add_option("--min-hops", o.task.min_hops, "k-hop task: fewest hops of a query")->capture_default_str();
    app.add_option("--max-hops", o.task.max_hops, "k-hop task: most hops of a query")->capture_default_str();
}

// Checks the run options once parsed; the cosine schedule spans the run.
inline void finish_options(run_options& o) {
    o.lr.total = o.steps;
    require(o.steps > o.lr.warmup, "--steps ({}) must exceed --warmup ({})", o.steps, o.lr.warmup);
    require(o.eval_interval > 0, "--eval-interval must be positive, found {}", o.eval_interval);
}

}  // namespace examples
