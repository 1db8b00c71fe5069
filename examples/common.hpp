// examples/common.hpp: what the example programs share: run-time choice of preset, data and loop schedule,
// a progress bar, a JSONL log, and the training loop itself (train → evaluate at an interval → summary).
#pragma once

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <unistd.h>
#include <vector>

#include "sgt/dist/data_parallel.hpp"
#include "sgt/infer/engine.hpp"
#include "sgt/io/checkpoint.hpp"
#include "sgt/io/file.hpp"
#include "sgt/io/hugging_face.hpp"
#include "sgt/sgt.hpp"

namespace examples {

using namespace sgt;

// The presets the programs offer (config.hpp): their names, and a line for --help.
inline const std::vector<std::string>& preset_names() {
    static const std::vector<std::string> names{"tiny",     "char_micro", "char_mini", "char_small", "char_7m",
                                                "char_12l", "gpt2_12l",   "gpt2",      "p275m"};
    return names;
}
inline constexpr const char* preset_help =
    "tiny, char_micro (the demo's), char_mini, char_small, char_7m (the gates report's 7M; train and train_cuda "
    "only), char_12l (12 layers, bytes), gpt2_12l (12 layers, GPT-2 vocabulary 50304, for llm.c GPT-2 shards), gpt2 "
    "(GPT-2 small's size, the GPU benchmarks'; train and train_cuda only) or p275m (the paper's 275M)";

// Calls f.template operator()<Cfg>() with the preset named `name`. char_7m, which only the isoFLOP comparison
// (scripts/isoflop.sh) trains, and gpt2, which the data-parallel scaling (scripts/multi_gpu.sh) trains, are
// instantiated by the training programs alone (Training = true), to keep the other programs' build time.
template <bool Training = false, class F>
decltype(auto) with_preset(const std::string& name, F&& f) {
    if (name == "tiny") return f.template operator()<presets::tiny>();
    if (name == "char_micro") return f.template operator()<presets::char_micro>();
    if (name == "char_mini") return f.template operator()<presets::char_mini>();
    if (name == "char_small") return f.template operator()<presets::char_small>();
    if constexpr (Training) {
        if (name == "char_7m") return f.template operator()<presets::char_7m>();
        if (name == "gpt2") return f.template operator()<presets::gpt2>();
    }
    if (name == "char_12l") return f.template operator()<presets::char_12l>();
    if (name == "gpt2_12l") return f.template operator()<presets::gpt2_12l>();
    if (name == "p275m") return f.template operator()<presets::p275m>();
    fail("unknown preset '{}'{}: expected {}", name, name == "char_7m" || name == "gpt2" ? " for this program" : "",
         preset_help);
}

// The stored types a program offers for --precision (the first is the default), the one chosen, and the call of
// run.template operator()<T>() with it.
template <class... Precisions>
struct precision_choice {
    std::string value = precision_name<std::tuple_element_t<0, std::tuple<Precisions...>>>::value;
    std::vector<std::string> offered{precision_name<Precisions>::value...};

    std::string listed() const { return fmt::format("{}", fmt::join(offered, ", ")); }
    template <class Run>
    int dispatch(Run&& run) const {
        int rc = 0;
        (void)((value == precision_name<Precisions>::value ? (rc = run.template operator()<Precisions>(), true)
                                                            : false) ||
               ...);
        return rc;
    }
};

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
    bool scores_answers() const { return p_->scores_answers(); }

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
        virtual bool scores_answers() const = 0;
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
        static constexpr bool answers = std::is_same_v<D, k_hop_dataset>;  // the k-hop task scores its answers
        std::optional<answer_score> score(const batch& b, std::span<const std::int32_t> pred) const override {
            if constexpr (answers)
                return k_hop_score(b, pred);
            else
                return std::nullopt;
        }
        bool scores_answers() const override { return answers; }
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

// One JSON object per line; nothing is written when no path is given. Every record is one checked write (a full
// disk is an sgt::error, and the file is cut back so that no half record stays); close() flushes it to the disk.
// A resumed run appends to the log of the run it continues instead of replacing it.
class jsonl_log {
public:
    enum class mode { replace, append };
    explicit jsonl_log(const std::string& path, mode m = mode::replace) {
        if (path.empty()) return;
        try {
            out_.emplace(path, m == mode::append ? io::output_file::mode::append : io::output_file::mode::truncate);
        } catch (const sgt::error& e) {
            fail("log: {}", e.what());
        }
    }
    void write(const nlohmann::json& j) {
        if (!out_) return;
        try {
            out_->write(j.dump() + "\n");
        } catch (const sgt::error& e) {
            fail("log: {}", e.what());
        }
    }
    void close() {
        if (!out_) return;
        try {
            out_->sync();
            out_->close();
        } catch (const sgt::error& e) {
            fail("log: {}", e.what());
        }
        out_.reset();
    }

private:
    std::optional<io::output_file> out_;
};

// The defaults are the README's demo (examples/compare on the embedded k-hop task; `train` with no argument
// trains its SGT K_max = 3 run): learned to about 70% answer accuracy in 400 steps, tuned on 2 shared cores.
struct run_options {
    std::string preset = "char_micro";
    int steps = 400;
    int batch = 16;
    int seq = 32;
    int grad_accum = 1;  // micro-batches of `batch` sequences per optimizer step
    cosine_schedule lr{.lr_max = 2e-3, .warmup = 20, .total = 400, .min_ratio = 0.1};
    adamw_options optim{};
    double dropout = 0.0;
    std::int64_t logits_chunk = 0;  // rows of logits at a time (model::set_logits_chunk; 0: automatic)
    std::string loop_subspace = "auto";  // model::set_loop_subspace: on, off, or the backend's default
    std::uint64_t seed = 1;
    int eval_interval = 100;
    std::string run_name;   // the "run" field of the log's records (default: the schedule's name)
    int entropy_every = 0;  // steps between entropy records in the log (0: at evaluations only)
    bool log_flow = false;  // log the last token's attention contribution flow at evaluations (analysis.hpp)
    int eval_batches = 8;
    bool quiet = false;
    std::string checkpoint_dir;  // where checkpoints go; none are written when empty
    int checkpoint_every = 0;    // steps between checkpoints (0: only the final one)
    int keep = 3;                // checkpoints kept
    std::string resume;          // a checkpoint (or directory of them) to continue from
    // The flags that shape the run (see run_flags), saved in checkpoints and compared on resume; a resume that
    // changes one is refused unless allow_flag_changes, and then each change is logged.
    nlohmann::json flags = nlohmann::json::object();
    bool allow_flag_changes = false;
    int sample_every = 0;        // steps between printed samples (0: none)
    int sample_tokens = 64;      // tokens per sample
    // The embedded task when no data is given: 6 symbols (chance 1/6), 1-2 hops, in the compact format (one token
    // per mapping entry), which the demo's model learns in a few hundred steps; the text format is not learned
    // in that budget.
    k_hop_options task{.symbols = 6, .min_hops = 1, .max_hops = 2, .format = k_hop_format::compact};
    std::string task_format = "compact";
    // Learned head gates (sgt/gates.hpp, GATES.md): --gates and its options.
    bool gated = false;
    gate_options gates{};
    // Self-distillation of the gates (GATES.md Sec. 4): a dense run's checkpoint to start from; only the gates
    // train, against the dense model's own head importance.
    std::string distill_from;
    // σReparam on every linear layer (sgt/sigma_reparam.hpp, GATES.md Sec. 5): --sigma-reparam.
    bool sigma_reparam = false;
    // A Hugging Face LlamaForCausalLM directory of the preset's shape whose weights a new run starts from
    // (io/hugging_face.hpp): --init-hugging-face.
    std::string init_hugging_face;
    // Data parallelism (sgt/dist/): this process's place in the run (one process when not launched as a rank).
    // `batch` is then the global batch of a step, split over the ranks; rank 0 alone writes the log and the
    // checkpoints, evaluates and prints.
    dist::launch_env launch;
    bool fp32_reduce = false;  // bf16 gradients on GPUs: summed in fp32 (--fp32-reduce)
    bool zero1 = false;        // the optimizer state sharded over the ranks (--zero1; one process: no effect)
};

// Set by SIGINT/SIGTERM while a run that writes checkpoints is in progress: the run saves and stops.
inline volatile std::sig_atomic_t stop_requested = 0;
inline void request_stop(int) { stop_requested = 1; }

struct run_result {
    std::string name;
    double final_val_loss = 0.0;
    std::optional<double> final_accuracy;
    double seconds = 0.0;        // training steps only, evaluation excluded
    std::vector<double> step_seconds;  // of each step this process trained
    double flops = 0.0;          // training FLOPs of the run (spec Sec. 6)
    double vanilla_flops = 0.0;  // the same run without loops
    std::int64_t params = 0;
    std::vector<growth_event> events;
    nlohmann::json final_structure;
    bool interrupted = false;  // stopped by SIGINT/SIGTERM after saving a checkpoint
    std::optional<double> gate_sparsity;  // with --gates: the closed fraction at θ of the last step
    // With --distill-gates: the distillation loss BCE(s, τ) of the first and the last step this process trained,
    // and the validation LM loss of the dense model and of the gated one (thresholded at θ) before and after.
    struct distill_result {
        double first_loss = 0, last_loss = 0, first_sparsity = 0, dense_val = 0, gated_val_before = 0;
        bool resumed = false;
    };
    std::optional<distill_result> distill;
    // The mean first-pass attention entropy (over layers and heads, Eq. 4) of the first and the last step this
    // process trained, and its lowest over those steps: entropy collapse shows as a fall towards 0.
    double first_entropy = 0.0, last_entropy = 0.0, min_entropy = 0.0;
};

// The mean over layers and heads of the first-pass attention entropies.
inline double mean_entropy(const entropy_report& e) {
    double s = 0.0;
    for (double v : e.first_pass) s += v;
    return e.first_pass.empty() ? 0.0 : s / double(e.first_pass.size());
}

inline std::vector<double> layer_variances(const entropy_report& e) {
    std::vector<double> v(e.layers);
    for (int l = 0; l < e.layers; ++l) v[l] = e.layer_variance(l);
    return v;
}

// Timing noise of a run: the standard error of its total time, from the spread of its step times (the total
// itself when there are fewer than 2 steps: nothing to judge the spread by).
inline double total_time_error(const std::vector<double>& step_seconds) {
    const std::size_t n = step_seconds.size();
    double total = 0.0;
    for (double x : step_seconds) total += x;
    if (n < 2) return total;
    const double mean = total / double(n);
    double var = 0.0;
    for (double x : step_seconds) var += (x - mean) * (x - mean) / double(n - 1);
    return std::sqrt(var * double(n));
}

// True when the total times of two runs differ by at least 2 standard errors of the difference: a wall-time
// comparison that this many steps resolve.
inline bool wall_difference_resolved(const std::vector<double>& a, const std::vector<double>& b) {
    double ta = 0.0, tb = 0.0;
    for (double x : a) ta += x;
    for (double x : b) tb += x;
    return std::abs(ta - tb) >= 2.0 * std::hypot(total_time_error(a), total_time_error(b));
}

// The flags of run_flags that a resume may change, when the user allows it with --allow-flag-changes: the length
// and the optimiser's settings. Every other flag of run_flags is fixed by the checkpoint (its growth state, data
// position and shapes follow from it).
inline const std::vector<std::string>& changeable_flags() {
    static const std::vector<std::string> names{"steps", "lr", "warmup", "dropout", "weight-decay", "clip"};
    return names;
}

// "--lr 0.003", as a message shows a flag.
inline std::string flag_text(const std::string& name, const nlohmann::json& v) {
    return fmt::format("--{} {}", name, v.is_string() ? v.get<std::string>() : v.dump());
}

// The changes from the flags a checkpoint's run had (`saved`) to this run's (`given`), as (name, saved, given).
// A change of a fixed flag is refused; a change of a changeable one unless `allow`.
inline std::vector<std::tuple<std::string, nlohmann::json, nlohmann::json>> check_flag_changes(
    const nlohmann::json& saved, const nlohmann::json& given, bool allow) {
    std::vector<std::tuple<std::string, nlohmann::json, nlohmann::json>> changes;
    std::string refused_saved, refused_given;
    for (const auto& [name, value] : given.items()) {
        const auto it = saved.find(name);
        const nlohmann::json before = it == saved.end() ? nlohmann::json() : *it;
        if (before == value) continue;
        const bool changeable =
            std::find(changeable_flags().begin(), changeable_flags().end(), name) != changeable_flags().end();
        require(changeable, "resume: the checkpoint's run had {}, this run gives {}; --{} cannot change on resume (the "
                            "checkpoint's growth state, data position and shapes follow from it)",
                it == saved.end() ? fmt::format("no --{}", name) : flag_text(name, before), flag_text(name, value),
                name);
        changes.emplace_back(name, before, value);
        refused_saved += fmt::format("{}{}", refused_saved.empty() ? "" : ", ", flag_text(name, before));
        refused_given += fmt::format("{}{}", refused_given.empty() ? "" : ", ", flag_text(name, value));
    }
    require(allow || changes.empty(),
            "resume: the checkpoint's run had {}, this run gives {}; pass --allow-flag-changes to continue it with the "
            "new values",
            refused_saved, refused_given);
    return changes;
}

// Validates the data state a checkpoint of train_run holds (see its save), before anything is loaded.
inline void check_data_state(const nlohmann::json& j) {
    constexpr std::string_view where = "resume: the checkpoint's data state";
    detail::rng_state_from_json(j.contains("rng") ? j.at("rng") : nlohmann::json(), fmt::format("{} \"rng\"", where));
    json_get<int>(j, "batch", where);
    json_get<int>(j, "seq", where);
    require(j.contains("position"), "{}: expected a field \"position\", found none", where);
    if (!j.at("position").is_null()) {
        json_get<std::uint64_t>(j.at("position"), "shard", fmt::format("{} \"position\"", where));
        json_get<std::uint64_t>(j.at("position"), "offset", fmt::format("{} \"position\"", where));
    }
    if (j.contains("flags"))
        require(j.at("flags").is_object(), "{}: expected \"flags\" to be an object, found {}", where,
                detail::describe(j.at("flags")));
}

// Trains a model of preset Cfg on `data` under `schedule`; evaluates every eval_interval steps and at the end.
// T and Backend: the stored type and the backend (examples/train_cuda runs this on the GPU).
// Variant: the model variant (gated_variant with --gates); `gate_scores`, when given, is pointed at the model's
// gates (the gate allocation of --allocation gate reads them).
template <model_config Cfg, class T = float, class Backend = cpu, class Variant = paper_variant>
run_result train_run(const run_options& o, any_dataset& data, any_schedule& schedule, jsonl_log& log,
                     Variant variant = {}, gate_allocation::source gate_scores = nullptr) {
    using model_t = model<T, Cfg, Backend, Variant>;
    constexpr bool gated = std::is_same_v<Variant, gated_variant>;
    require(data.vocab() <= model_t::V, "data: tokens go up to {}, but the preset's vocabulary is {}", data.vocab(),
            model_t::V);
    // Data parallelism: the group of all ranks (every rank waits here for the others, so that a rank failing after
    // it makes the others fail at once), then this rank's device and the gradient sync.
    const int rank = o.launch.rank, world = o.launch.world;
    require(o.batch % world == 0,
            "--batch {} is the global batch of a step and must split evenly over the {} processes; give a multiple of "
            "{}",
            o.batch, world, world);
    const int local_batch = o.batch / world;
    std::optional<dist::tcp_group> group;
    if (o.launch.distributed()) group.emplace(o.launch);
    constexpr double rank_zero_wait_s = 7 * 24 * 3600.0;  // the others wait this long for rank 0's evaluation or save
    dist::select_device(Backend{}, o.launch);
    std::unique_ptr<dist::gradient_sync<T, Backend>> sync;
    if (group) sync = make_gradient_sync<T>(Backend{}, *group, dist::sync_options{.fp32_reduce = o.fp32_reduce});
    {  // a lower bound of the first step's activations (logits and their gradient, each layer's buffers)
        constexpr auto s = Cfg.shape;
        const double tokens = double(local_batch) * o.seq;
        const double need = tokens * double(sizeof(T)) * (2.0 * s.vocab + s.layers * (6.0 * s.width() + 3.0 * s.d_ff));
        const double have = double(::sysconf(_SC_PHYS_PAGES)) * double(::sysconf(_SC_PAGESIZE));
        require(have <= 0 || need <= have,
                "model: a batch of {} x {} tokens needs at least {} of activations, more than this machine's {} of "
                "memory",
                local_batch, o.seq, io::human_bytes(need), io::human_bytes(have));
    }
    model_t m(local_batch, o.seq, o.seed, std::move(variant), sigma_reparam_options{.enabled = o.sigma_reparam});
    if constexpr (gated) {
        if (gate_scores) *gate_scores = &m.variant();
    }
    if (!o.init_hugging_face.empty() && o.resume.empty()) {  // before the trainer takes its master weights
        load_hugging_face(o.init_hugging_face, m);
        if (!o.quiet) fmt::print(stderr, "init: weights from the Hugging Face model in {}\n", o.init_hugging_face);
    }
    m.set_dropout(o.dropout);
    m.set_logits_chunk(o.logits_chunk);
    if (o.loop_subspace != "auto") m.set_loop_subspace(o.loop_subspace == "on");
    try {  // the first step's activations, so that a batch too large for the memory is refused before anything else
        m.reserve(schedule.plan());
    } catch (const sgt::error& e) {
        fail("model: cannot hold the activations of a batch of {} x {} tokens: {}", local_batch, o.seq, e.what());
    }
    trainer tr(m, schedule, o.lr, o.optim, o.batch * o.grad_accum, o.seq, sync.get(), o.zero1 && sync);
    rng data_rng(o.seed * 7919 + 17);
    if constexpr (gated) {
        if (!o.distill_from.empty()) {  // GATES.md Sec. 4: the dense model's weights, frozen; the gates train
            if (o.resume.empty()) {
                load_weights_subset(o.distill_from, m, gated_variant::is_gate_parameter);
                if (!o.quiet) fmt::print(stderr, "distill: dense weights from {}\n", o.distill_from);
            }
            m.variant().set_distilling(true);
            tr.optimizer().set_trainable(gated_variant::is_gate_parameter);
        }
    }

    run_result r;
    r.name = o.run_name.empty() ? schedule.name() : o.run_name;
    r.params = Cfg.shape.total_params();

    // Checkpoints: the data state beside the trainer's is the data RNG and, for shards, the stream position, with
    // the batch shape and the run's flags (compared on resume).
    auto save = [&] {
        // The ranks' states are the same: rank 0 writes them. With --zero1 every rank sends its share of the
        // optimizer state (save_checkpoint gathers it) and rank 0 writes.
        if (rank != 0 && !tr.optimizer().sharded()) return;
        const auto& s = data_rng.state();
        const nlohmann::json state{{"rng", std::vector<std::uint64_t>(s.begin(), s.end())},
                                   {"position", data.position()}, {"batch", o.batch}, {"seq", o.seq},
                                   {"flags", o.flags}};
        const auto dir = save_checkpoint(o.checkpoint_dir, tr, state, o.keep);
        if (rank != 0) return;
        log.write({{"type", "checkpoint"}, {"run", r.name}, {"step", tr.steps()}, {"path", dir.string()}});
        if (!o.quiet) fmt::print(stderr, "\ncheckpoint: {}\n", dir.string());
    };
    std::vector<std::tuple<std::string, nlohmann::json, nlohmann::json>> changes;
    std::string resumed_from;
    if (!o.resume.empty()) {
        // Everything the resume needs is checked before anything is loaded or written.
        std::string note;
        const fs::path dir = resolve_checkpoint(o.resume, &note);
        if (!note.empty()) fmt::print(stderr, "resume: {}\n", note);
        const nlohmann::json state = load_checkpoint(dir, tr, [&](const nlohmann::json& j) {
            check_data_state(j);
            require(j.at("batch") == o.batch && j.at("seq") == o.seq,
                    "resume: the checkpoint was trained with batch {} x {}, this run asks for {} x {}",
                    j.at("batch").dump(), j.at("seq").dump(), o.batch, o.seq);
            if (j.contains("flags"))
                changes = check_flag_changes(j.at("flags"), o.flags, o.allow_flag_changes);
            else
                fmt::print(stderr, "resume: the checkpoint does not record its run's flags; they are not compared\n");
        });
        require(tr.steps() < o.steps,
                "resume: the checkpoint '{}' is at step {} and --steps is {}: the run is finished (to train it "
                "further, give a larger --steps with --allow-flag-changes)",
                dir.string(), tr.steps(), o.steps);
        const auto w = state.at("rng").get<std::vector<std::uint64_t>>();
        data_rng.set_state({w[0], w[1], w[2], w[3]});
        if (!state.at("position").is_null()) data.seek(state.at("position"));
        resumed_from = dir.string();
    } else if (!o.checkpoint_dir.empty() && rank == 0) {
        std::error_code ec;
        const bool used = fs::exists(fs::path(o.checkpoint_dir) / "latest", ec) ||
                          !detail::step_dirs(o.checkpoint_dir).empty();
        require(!used,
                "checkpoint: '{}' already holds checkpoints of a run; continue it with --resume {}, or give another "
                "--checkpoint-dir",
                o.checkpoint_dir, o.checkpoint_dir);
    }
    if (!o.checkpoint_dir.empty() && rank == 0) {
        // Before step 1: the directory must take a checkpoint (as large as the newest there, if larger).
        std::int64_t bytes = checkpoint_bytes(tr);
        if (const auto newest = detail::newest_complete(o.checkpoint_dir)) {
            std::int64_t on_disk = 0;
            std::error_code ec;
            for (const auto& f : fs::directory_iterator(*newest, ec))
                if (f.is_regular_file(ec)) on_disk += std::int64_t(f.file_size(ec));
            bytes = std::max(bytes, on_disk);
        }
        probe_checkpoint_dir(o.checkpoint_dir, bytes);
    }
    log.write({{"type", "config"}, {"run", r.name}, {"preset", o.preset}, {"schedule", schedule.to_json()},
               {"data", data.describe()}, {"steps", o.steps}, {"batch", o.batch}, {"seq", o.seq},
               {"grad_accum", o.grad_accum}, {"lr", o.lr.lr_max}, {"warmup", o.lr.warmup}, {"dropout", o.dropout},
               {"seed", o.seed}, {"backend", Backend::name}, {"precision", precision_name<T>::value},
               {"params", Cfg.shape.total_params()}, {"flags", o.flags}, {"threads", threads()}, {"processes", world},
               {"zero1", tr.optimizer().sharded()}});
    if (!resumed_from.empty()) {
        if (rank == 0) fmt::print(stderr, "resumed from {} at step {}\n", resumed_from, tr.steps());
        log.write({{"type", "resume"}, {"run", r.name}, {"step", tr.steps()}, {"path", resumed_from}});
        for (const auto& [name, before, after] : changes) {
            fmt::print(stderr, "resume: {} replaces the checkpoint's {} (--allow-flag-changes)\n",
                       flag_text(name, after), flag_text(name, before));
            log.write({{"type", "flag_change"}, {"run", r.name}, {"step", tr.steps()}, {"flag", name},
                       {"checkpoint", before}, {"now", after}});
        }
    }
    // The validation batches of one process, cut into pieces of at most this rank's batch (the model's capacity):
    // with several processes rank 0 evaluates the same sequences alone.
    std::vector<batch> val;
    for (const batch& vb : data.val_batches(o.batch, o.seq, o.eval_batches))
        for (int first = 0; first < vb.B; first += local_batch)
            val.push_back(batch_rows(vb, first, std::min(local_batch, vb.B - first)));

    // Validation loss over all validation batches, dropout off; answer accuracy of the argmax where the data
    // defines answers (the k-hop task).
    auto evaluate = [&](int t) {
        std::optional<answer_score> score;
        std::vector<std::int32_t> pred;
        const bool distilling = gated && !o.distill_from.empty();
        if constexpr (gated) {
            m.variant().set_thresholding(true);  // a soft-trained model is evaluated thresholded
            m.variant().set_distilling(false);   // a distilled model is evaluated with its gates acting
        }
        // The logits reach the host only where answers are scored (model::logits forms them again).
        const auto score_batch = [&](const batch& vb, std::span<const T> lg) {
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
        };
        const double v = data.scores_answers() ? tr.evaluate(val, score_batch) : tr.evaluate(val);
        if constexpr (gated) {
            m.variant().set_thresholding(false);
            m.variant().set_distilling(distilling);
        }
        std::optional<double> acc;
        if (score && score->total > 0) acc = score->accuracy();
        nlohmann::json j{{"type", "eval"}, {"run", r.name}, {"step", t}, {"val_loss", v},
                         {"cumulative_flops", tr.flops().total()}};
        if (acc) j["accuracy"] = *acc;
        log.write(j);
        r.final_val_loss = v;
        r.final_accuracy = acc;
        return v;
    };

    // The contribution flow (analysis.hpp) of the last validation batch's first sequence, for the heads that loop,
    // in every pass of their layer: one record per (layer, repeat, pass, head), with the input tokens.
    auto log_flow = [&](int t) {
        const loop_plan& plan = schedule.plan();
        const auto looped = [&](int l, int, int h) {
            const auto& lp = plan.layers[std::size_t(l)];
            return lp.k > 0 && std::binary_search(lp.heads.begin(), lp.heads.end(), h);
        };
        const auto rows = last_token_contributions(m, 0, looped);
        if (rows.empty()) return;
        const batch& vb = val.back();
        const std::vector<std::int32_t> tokens(vb.inputs.begin(), vb.inputs.begin() + vb.T);
        for (const auto& c : rows)
            log.write({{"type", "flow"}, {"run", r.name}, {"step", t}, {"layer", c.layer}, {"repeat", c.repeat},
                       {"pass", c.pass}, {"head", c.head}, {"gain", c.gain}, {"tokens", tokens},
                       {"attention", c.attention}, {"value_norm", c.value_norm}, {"contribution", c.contribution}});
    };

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
        if (!gen) {
            gen.emplace(1, prompt_len + n - 1, model_t::budget_plan());
            if constexpr (gated) gen->set_gates(m.variant().options());  // decoded with its gates (GATES.md Sec. 3.1)
        }
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

    if constexpr (gated) {
        if (!o.distill_from.empty()) {  // the LM loss before distilling: dense (the teacher) and gated at θ
            run_result::distill_result d;
            d.resumed = !resumed_from.empty();
            d.dense_val = tr.evaluate(val);  // distilling: the passes are not gated
            m.variant().set_distilling(false);
            m.variant().set_thresholding(true);
            d.gated_val_before = tr.evaluate(val);
            m.variant().set_thresholding(false);
            m.variant().set_distilling(true);
            log.write({{"type", "distill"}, {"run", r.name}, {"step", tr.steps()}, {"dense_val_loss", d.dense_val},
                       {"gated_val_loss", d.gated_val_before}});
            r.distill = d;
        }
    }

    progress_bar bar(o.steps, o.quiet);
    std::optional<double> last_val;  // the latest validation loss; none before the run's first evaluation
    double smoothed = 0.0;
    const int first_step = tr.steps() + 1;
    const double resumed_seconds = tr.seconds();
    std::vector<batch> micro(std::size_t(o.grad_accum));
    const double tokens_per_step = double(o.batch) * o.seq * o.grad_accum;
    for (int t = first_step; t <= o.steps; ++t) {
        // Every rank draws the same global batch and trains on its rows of it (dist/data_parallel.hpp).
        for (auto& b : micro) b = dist::rank_rows(data.train_batch(data_rng, o.batch, o.seq), rank, world);
        const step_stats s = tr.step(std::span<const batch>(micro));
        r.step_seconds.push_back(s.seconds);
        smoothed = t == first_step ? s.loss : 0.9 * smoothed + 0.1 * s.loss;
        nlohmann::json step_log{{"type", "step"}, {"run", r.name}, {"step", t}, {"loss", s.loss}, {"lr", s.lr},
                                {"grad_norm", s.grad_norm}, {"seconds", s.seconds}, {"flops", s.flops},
                                {"cumulative_flops", tr.flops().total()}, {"tokens_per_s", tokens_per_step / s.seconds}};
        const double entropy = mean_entropy(tr.entropies());
        step_log["attention_entropy"] = entropy;
        if (t == first_step) r.first_entropy = r.min_entropy = entropy;
        r.last_entropy = entropy;
        r.min_entropy = std::min(r.min_entropy, entropy);
        if constexpr (gated) {
            const gate_report gr = m.variant().report();
            step_log["gate_sparsity"] = gr.sparsity;
            step_log["gate_mean_score"] = gr.mean_score;
            step_log["gate_loss"] = m.extra_loss();
            r.gate_sparsity = gr.sparsity;
            if (r.distill) {
                if (t == first_step) {
                    r.distill->first_loss = m.extra_loss();
                    r.distill->first_sparsity = gr.sparsity;
                }
                r.distill->last_loss = m.extra_loss();
            }
        }
        log.write(step_log);
        for (const auto& e : s.events) {
            log.write({{"type", "growth"}, {"run", r.name}, {"event", e}});
            r.events.push_back(e);
        }
        const bool eval_step = t % o.eval_interval == 0 || t == o.steps;
        if (eval_step || (o.entropy_every > 0 && t % o.entropy_every == 0)) {
            // The entropies the schedule saw at this step (averaged over its micro-batches), and the structure
            // from the next step on (with the growth decided at this one).
            const auto& ent = tr.entropies();
            log.write({{"type", "entropy"}, {"run", r.name}, {"step", t}, {"layers", ent.layers}, {"heads", ent.heads},
                       {"first_pass", ent.first_pass}, {"last_loop", ent.last_loop},
                       {"layer_mean", ent.layer_means()}, {"layer_variance", layer_variances(ent)},
                       {"plan", detail::plan_to_json(schedule.plan())}});
        }
        if (eval_step && rank == 0) {
            last_val = evaluate(t);
            if (o.log_flow) log_flow(t);
        }
        const bool sample_step = o.sample_every > 0 && t % o.sample_every == 0;
        if (sample_step && rank == 0) sample(t);
        const double tok_s = double(t - first_step + 1) * tokens_per_step / (tr.seconds() - resumed_seconds);
        bar.update(t, smoothed, tok_s,
                   fmt::format("val {} | {:.2f} GFLOP | entropy {:.3f}",
                               last_val ? fmt::format("{:.4f}", *last_val) : std::string("–"), tr.flops().total() / 1e9,
                               r.last_entropy));
        // Several processes: they stop at the same step (a signal may reach them apart), and wait for rank 0's own
        // work of this step (evaluation, sample, checkpoint) without the group's timeout, which is for a rank that
        // hangs in a collective.
        bool stop = stop_requested != 0;
        if (!o.checkpoint_dir.empty() && world > 1) {
            const int mine = stop ? 1 : 0;
            const auto all = group->all_gather(std::span<const int>(&mine, 1));
            stop = std::find(all.begin(), all.end(), 1) != all.end();
        }
        const bool save_step = !o.checkpoint_dir.empty() &&
                               (stop || (o.checkpoint_every > 0 && t % o.checkpoint_every == 0 && t != o.steps));
        if (save_step) save();
        if (world > 1 && (eval_step || sample_step || save_step)) group->barrier(rank_zero_wait_s);
        if (!o.checkpoint_dir.empty() && stop) {
            bar.finish();
            r.interrupted = true;
            break;
        }
    }
    bar.finish();
    if (!o.checkpoint_dir.empty() && !r.interrupted) save();
    if (world > 1) group->barrier(rank_zero_wait_s);  // the others exit once rank 0's final checkpoint is written
    r.seconds = tr.seconds();
    r.flops = tr.flops().total();
    r.vanilla_flops = tr.flops().vanilla_total();
    r.final_structure = schedule.to_json();
    nlohmann::json summary{
        {"type", "summary"}, {"run", r.name}, {"val_loss", r.final_val_loss}, {"seconds", r.seconds},
        {"flops", r.flops}, {"vanilla_flops", r.vanilla_flops}, {"schedule", r.final_structure},
        {"attention_entropy", {{"first", r.first_entropy}, {"last", r.last_entropy}, {"min", r.min_entropy}}}};
    if constexpr (requires { peak_device_bytes(Backend{}); })  // a GPU: rank 0's peak of device buffers
        summary["peak_device_mib"] = double(peak_device_bytes(Backend{})) / (1 << 20);
    log.write(summary);
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
    int t_start = 40, dt = 40, L = -1, k_max = -1, h = -1;
    std::vector<int> excluded{0};
    std::string direction = "d2s", transition = "fade", fade = "linear";
    double ema = 0.0;
    bool release_rules = false;
    std::vector<int> block_layers;  // given Block Loop layers; empty: chosen by entropy at t_start
    int loop_layer = -1, loop_k = 1;
    std::string allocation = "entropy";  // SGT's 𝒜: entropy (top_h, Eq. 7) or gate (GATES.md Sec. 3.2, needs --gates)
};

// The loop budget of a growth flag: the flag's value, or the preset's budget when it is not given (-1). Above the
// preset's compile-time budget is refused here, where the schedule is made, instead of at the first step that
// would exceed it: the model's buffers (model::budget_plan) and its plan check are sized by the budget.
inline int within_budget(int given, int budget, const char* flag, const char* what) {
    if (given < 0) return budget;
    require(given <= budget,
            "{} {}: the preset's compile-time loop budget allows {} = {} at most (its buffers are sized for it); give "
            "at most {}, or a preset with a larger budget",
            flag, given, what, budget, budget);
    return given;
}

// gate_scores: where --allocation gate reads the gates' scores (filled by train_run).
template <model_config Cfg>
any_schedule make_schedule(const growth_flags& g, gate_allocation::source gate_scores = nullptr) {
    constexpr model_shape s = Cfg.shape;
    const int L = within_budget(g.L, Cfg.loops.L, "--L", "L");
    if (g.variant == "vanilla") return any_schedule(vanilla_schedule(s.layers));
    if (g.variant == "block") {
        require(int(g.block_layers.size()) <= Cfg.loops.L,
                "--block-layers: {} layers given, but the preset's compile-time loop budget allows L = {} looping "
                "layers at most",
                g.block_layers.size(), Cfg.loops.L);
        return g.block_layers.empty() ? any_schedule(block_loop_schedule::by_entropy(s.layers, L, g.t_start, g.excluded))
                                      : any_schedule(block_loop_schedule::given(s.layers, g.block_layers));
    }
    if (g.variant == "attention") {
        within_budget(g.loop_k, Cfg.loops.k_max, "--loop-k", "K_max");
        return any_schedule(head_loop_schedule<all_heads>(
            s.layers, s.heads,
            head_loop_options{.layer = g.loop_layer >= 0 ? g.loop_layer : s.layers - 1, .h = s.heads, .k = g.loop_k,
                              .t_start = g.t_start}));
    }
    if (g.variant == "high" || g.variant == "low") {  // Table 2's high-/low-entropy loop on one layer
        const head_loop_options ho{.layer = g.loop_layer >= 0 ? g.loop_layer : s.layers - 1,
                                   .h = within_budget(g.h, Cfg.loops.h, "--h", "h"),
                                   .k = within_budget(g.loop_k, Cfg.loops.k_max, "--loop-k", "K_max"),
                                   .t_start = g.t_start};
        if (g.variant == "high") return any_schedule(head_loop_schedule<top_h>(s.layers, s.heads, ho));
        return any_schedule(head_loop_schedule<bottom_h>(s.layers, s.heads, ho));
    }
    if (g.variant == "sgt") {
        growth_options o = growth_options::from_budget(Cfg.loops);
        o.t_start = g.t_start;
        o.dt = g.dt;
        o.L = L;
        o.k_max = within_budget(g.k_max, Cfg.loops.k_max, "--k-max", "K_max");
        o.h = within_budget(g.h, Cfg.loops.h, "--h", "h");
        o.excluded = g.excluded;
        o.direction = g.direction == "s2d" ? growth_direction::shallow_to_deep : growth_direction::deep_to_shallow;
        o.transition = g.transition == "hard" ? growth_transition::hard : growth_transition::fade;
        o.shape = g.fade == "cosine" ? fade_shape::cosine
                  : g.fade == "exponential" ? fade_shape::exponential : fade_shape::linear;
        o.ema_alpha = g.ema;
        o.release_rules = g.release_rules;
        if (g.allocation == "gate") {
            require(gate_scores != nullptr, "--allocation gate: expected --gates (the scores come from the gates)");
            return any_schedule(growth_operator<gate_allocation>(s, o, gate_allocation(std::move(gate_scores))));
        }
        require(g.allocation == "entropy", "--allocation: expected entropy or gate, found '{}'", g.allocation);
        return any_schedule(growth_operator<>(s, o));
    }
    fail("unknown variant '{}': expected vanilla, block, attention, high, low or sgt", g.variant);
}

// The flags both programs take; `data` and `log_path` receive --data and --log. Numbers are range-checked and
// names checked against their choices by CLI11 while parsing.
inline void add_common_options(CLI::App& app, run_options& o, growth_flags& g, std::string& data, std::string& log_path) {
    app.add_option("--preset", o.preset, preset_help)->check(CLI::IsMember(preset_names()))->capture_default_str();
    app.add_option("--data", data, "a text file (byte-level, 90/10 split); default: the embedded k-hop task")
        ->check([](const std::string& v) { return v.empty() ? std::string("expected a file name, found ''") : ""; });
    app.add_option("--steps", o.steps, "training steps (of every run)")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    app.add_option("--batch", o.batch, "sequences per batch")->check(CLI::PositiveNumber)->capture_default_str();
    app.add_option("--seq", o.seq, "tokens per sequence")->check(CLI::PositiveNumber)->capture_default_str();
    app.add_option("--lr", o.lr.lr_max, "peak learning rate")->check(CLI::PositiveNumber)->capture_default_str();
    app.add_option("--warmup", o.lr.warmup, "linear warm-up steps")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    app.add_option("--dropout", o.dropout, "dropout on embeddings and residual branches")
        ->check(CLI::Range(0.0, 0.99))
        ->capture_default_str();
    app.add_option("--seed", o.seed, "seed of weights, data order and dropout")->capture_default_str();
    app.add_option("--logits-chunk", o.logits_chunk,
                   "rows of logits the LM head and cross-entropy form at a time (0: as many as fit in 1 GiB)")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    app.add_option("--loop-subspace", o.loop_subspace,
                   "loop steps over the same heads computed in their subspace (loop_subspace.hpp): on, off, or auto "
                   "(on where the backend has the ops: the CPU and the GPU)")
        ->check(CLI::IsMember({"auto", "on", "off"}))
        ->capture_default_str();
    app.add_option("--t-start", g.t_start, "first growth decision (SGT) or layer choice (Block Loop) at this step")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    app.add_option("--dt", g.dt, "steps between growth decisions (and the fade window)")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    app.add_option("--eval-interval", o.eval_interval, "steps between validations")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    app.add_option("--eval-batches", o.eval_batches, "validation batches")->check(CLI::PositiveNumber)->capture_default_str();
    app.add_option("--log", log_path, "JSONL log: steps, evaluations, growth events, entropies (appended to on --resume)");
    app.add_option("--grad-accum", o.grad_accum,
                   "micro-batches of --batch sequences per optimizer step (loss, gradients and entropies as of one "
                   "batch of grad-accum x batch)")
        ->capture_default_str();
    app.add_option("--run-name", o.run_name, "name of the run in the log (default: the schedule's name)");
    app.add_option("--entropy-every", o.entropy_every,
                   "log the entropies (layer x head) every N steps, besides every evaluation (0: evaluations only)")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    app.add_flag("--log-flow", o.log_flow,
                 "log the last token's attention contribution flow C_j = A_Tj |V_j| of the looping layers' selected "
                 "heads, every pass, at every evaluation (paper Fig. 6)");
    app.add_flag("--quiet", o.quiet, "no progress bar");
    app.add_option("--symbols", o.task.symbols, "k-hop task: symbols in the mapping")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    app.add_option("--min-hops", o.task.min_hops, "k-hop task: fewest hops of a query")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    app.add_option("--max-hops", o.task.max_hops, "k-hop task: most hops of a query")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    app.add_option("--task-format", o.task_format,
                   "k-hop task: compact (one token per mapping entry, queries 'k x') or text ('x>y;', '?xk=z;')")
        ->check(CLI::IsMember({"compact", "text"}))
        ->capture_default_str();
}

// The flags that shape a run of train (named as on the command line), with the values in effect: what a
// checkpoint records and a resume compares (check_flag_changes). Output-only flags (--log, --quiet, --threads,
// evaluation, checkpointing) are not among them; growth flags only for the variant that uses them.
template <model_config Cfg>
nlohmann::json run_flags(const run_options& o, const growth_flags& g, const std::string& data,
                         const std::string& train_shards, const std::string& val_shards, const std::string& precision) {
    auto absolute = [](const std::string& p) {
        std::error_code ec;
        const auto a = fs::weakly_canonical(fs::absolute(p, ec), ec);
        return ec ? p : a.string();
    };
    nlohmann::json f{{"preset", o.preset},    {"variant", g.variant},    {"steps", o.steps},
                     {"batch", o.batch},      {"seq", o.seq},            {"lr", o.lr.lr_max},
                     {"warmup", o.lr.warmup}, {"dropout", o.dropout},    {"seed", o.seed},
                     {"weight-decay", o.optim.weight_decay},             {"clip", o.optim.clip},
                     {"precision", precision}};
    if (!train_shards.empty()) {
        f["train-shards"] = absolute(train_shards);
        f["val-shards"] = absolute(val_shards);
    } else if (!data.empty()) {
        f["data"] = absolute(data);
    } else {
        f["symbols"] = o.task.symbols;
        f["min-hops"] = o.task.min_hops;
        f["max-hops"] = o.task.max_hops;
        f["task-format"] = o.task_format;
    }
    if (o.grad_accum != 1) f["grad-accum"] = o.grad_accum;  // absent = 1, as in checkpoints from before the flag
    if (g.variant == "sgt") {
        f.update({{"t-start", g.t_start}, {"dt", g.dt}, {"L", g.L >= 0 ? g.L : Cfg.loops.L},
                  {"k-max", g.k_max >= 0 ? g.k_max : Cfg.loops.k_max}, {"h", g.h >= 0 ? g.h : Cfg.loops.h},
                  {"exclude", g.excluded}, {"direction", g.direction}, {"transition", g.transition}, {"fade", g.fade},
                  {"ema", g.ema}, {"release-rules", g.release_rules}});
    } else if (g.variant == "block") {
        f.update({{"t-start", g.t_start}, {"L", g.L >= 0 ? g.L : Cfg.loops.L}, {"exclude", g.excluded},
                  {"block-layers", g.block_layers}});
    } else if (g.variant == "attention") {
        f.update({{"t-start", g.t_start}, {"loop-layer", g.loop_layer}, {"loop-k", g.loop_k}});
    } else if (g.variant == "high" || g.variant == "low") {
        f.update({{"t-start", g.t_start}, {"loop-layer", g.loop_layer}, {"loop-k", g.loop_k},
                  {"h", g.h >= 0 ? g.h : Cfg.loops.h}});
    }
    if (g.variant == "sgt" && g.allocation != "entropy") f["allocation"] = g.allocation;
    if (o.gated)
        f.update({{"gates", true}, {"gate-threshold", o.gates.threshold}, {"gate-soft", !o.gates.straight_through},
                  {"gate-lambda", o.gates.lambda}, {"n-dense", o.gates.n_dense}, {"gate-layers", o.gates.layers}});
    if (!o.distill_from.empty()) f["distill-gates"] = o.distill_from;
    if (o.sigma_reparam) f["sigma-reparam"] = true;  // absent = off, as in checkpoints from before the flag
    if (!o.init_hugging_face.empty()) f["init-hugging-face"] = absolute(o.init_hugging_face);
    return f;
}

// Checks the run options once parsed; the cosine schedule spans the run.
inline void finish_options(run_options& o) {
    o.lr.total = o.steps;
    require(o.steps > o.lr.warmup, "--steps ({}) must exceed --warmup ({})", o.steps, o.lr.warmup);
    require(o.eval_interval > 0, "--eval-interval must be positive, found {}", o.eval_interval);
    require(o.grad_accum >= 1, "--grad-accum must be at least 1 (micro-batches per optimizer step), found {}",
            o.grad_accum);
    o.task.format = o.task_format == "compact" ? k_hop_format::compact : k_hop_format::text;
}

}  // namespace examples
