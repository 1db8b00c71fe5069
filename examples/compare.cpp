// examples/compare: the README's main job. Trains Vanilla, Block Loop (3 layers) and SGT with K_max = 1, 2, 3
// (h = 2, L = 3) for the same steps on the same data, and prints a table like the paper's Table 1: training
// FLOPs and their overhead over Vanilla, wall time and its overhead, final validation loss; then the growth
// timeline of each SGT run.
//
//     compare                          # the embedded k-hop task, a few minutes on 2 cores
//     compare --data tinyshakespeare.txt --preset char_mini --steps 400 --markdown
#include <CLI/CLI.hpp>

#include "common.hpp"

using namespace examples;

int main(int argc, char** argv) {
    CLI::App app{"Train Vanilla, Block Loop and SGT (K_max = 1, 2, 3) side by side and compare them"};
    run_options o;
    o.steps = 200;
    o.lr.warmup = 20;
    growth_flags g;
    g.t_start = 20;
    g.dt = 20;
    std::string data, log_path;
    bool markdown = false;
    app.add_option("--preset", o.preset, "tiny, char_mini or char_small")->capture_default_str();
    app.add_option("--data", data, "a text file (byte-level, 90/10 split); default: the embedded k-hop task");
    app.add_option("--steps", o.steps, "training steps of every run")->capture_default_str();
    app.add_option("--batch", o.batch, "sequences per batch")->capture_default_str();
    app.add_option("--seq", o.seq, "tokens per sequence")->capture_default_str();
    app.add_option("--lr", o.lr.lr_max, "peak learning rate")->capture_default_str();
    app.add_option("--warmup", o.lr.warmup, "linear warm-up steps")->capture_default_str();
    app.add_option("--dropout", o.dropout, "dropout on embeddings and residual branches")->capture_default_str();
    app.add_option("--seed", o.seed, "seed (the same for every run)")->capture_default_str();
    app.add_option("--t-start", g.t_start, "SGT's first growth decision; Block Loop's layer choice")->capture_default_str();
    app.add_option("--dt", g.dt, "steps between growth decisions")->capture_default_str();
    app.add_option("--eval-interval", o.eval_interval, "steps between validations")->capture_default_str();
    app.add_option("--eval-batches", o.eval_batches, "validation batches")->capture_default_str();
    app.add_option("--log", log_path, "JSONL log of every run");
    app.add_flag("--markdown", markdown, "print the table as Markdown");
    app.add_flag("--quiet", o.quiet, "no progress bars");
    CLI11_PARSE(app, argc, argv);

    try {
        o.lr.total = o.steps;
        require(o.steps > o.lr.warmup, "--steps ({}) must exceed --warmup ({})", o.steps, o.lr.warmup);
        return with_preset(o.preset, [&]<model_config Cfg>() {
            jsonl_log log(log_path);
            std::vector<run_result> results;
            struct variant {
                std::string label, flag;
                int k_max;
            };
            const std::vector<variant> variants{{"Vanilla", "vanilla", 0},
                                                {"Block Loop (L=3)", "block", 0},
                                                {"SGT K_max=1", "sgt", 1},
                                                {"SGT K_max=2", "sgt", 2},
                                                {"SGT K_max=3", "sgt", 3}};
            std::string described;
            for (const auto& v : variants) {
                any_dataset ds = text_or_default(data);  // a fresh copy: every run sees the same batches
                growth_flags gv = g;
                gv.variant = v.flag;
                gv.L = 3;
                gv.h = 2;
                gv.k_max = v.k_max;
                any_schedule sched = make_schedule<Cfg>(gv);
                if (described.empty()) {
                    described = ds.describe();
                    fmt::print("sgt compare | preset {} ({:.2f}M parameters) | data: {}\n", o.preset,
                               Cfg.shape.total_params() / 1e6, described);
                    fmt::print("{} steps of batch {} x {} each | t_start {} | dt {} | seed {}\n\n", o.steps, o.batch,
                               o.seq, g.t_start, g.dt, o.seed);
                }
                fmt::print(stderr, "-- {} --\n", v.label);
                run_result r = train_run<Cfg>(o, ds, sched, log);
                r.name = v.label;
                results.push_back(std::move(r));
            }

            const run_result& base = results.front();
            const bool acc = base.final_accuracy.has_value();
            const char* sep = markdown ? " | " : "  ";
            auto row = [&](const std::vector<std::string>& cells) {
                std::string line = markdown ? "| " : "";
                for (std::size_t i = 0; i < cells.size(); ++i)
                    line += (i == 0 ? fmt::format("{:<18}", cells[i]) : fmt::format("{:>12}", cells[i])) +
                            (i + 1 < cells.size() ? sep : "");
                fmt::print("{}{}\n", line, markdown ? " |" : "");
            };
            std::vector<std::string> head{"model", "train FLOPs", "FLOPs +%", "wall s", "wall +%", "val loss"};
            if (acc) head.push_back("accuracy");
            fmt::print("\n");
            row(head);
            if (markdown) {
                std::vector<std::string> rule(head.size(), "---:");
                rule[0] = "---";
                row(rule);
            }
            for (const auto& r : results) {
                std::vector<std::string> cells{r.name,
                                               human_flops(r.flops),
                                               fmt::format("{:+.2f}", 100 * (r.flops / base.flops - 1)),
                                               fmt::format("{:.1f}", r.seconds),
                                               fmt::format("{:+.1f}", 100 * (r.seconds / base.seconds - 1)),
                                               fmt::format("{:.4f}", r.final_val_loss)};
                if (acc) cells.push_back(fmt::format("{:.1f}%", 100 * r.final_accuracy.value_or(0)));
                row(cells);
            }
            fmt::print("\ngrowth timelines (step: event; layers and heads 0-based)\n");
            for (const auto& r : results) {
                if (r.events.empty()) continue;
                fmt::print("{}:\n", r.name);
                for (const auto& e : r.events) fmt::print("  {}\n", to_string(e));
            }
            return 0;
        });
    } catch (const sgt::error& e) {
        fmt::print(stderr, "error: {}\n", e.what());
        return 1;
    }
}
