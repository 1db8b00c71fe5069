// examples/compare: the README's main job. Trains Vanilla, Block Loop (3 layers) and SGT with K_max = 1, 2, 3
// (h = 2, L = 3) for the same steps on the same data, and prints a table like the paper's Table 1: training
// FLOPs and their overhead over Vanilla, wall time and its overhead, final validation loss; then the growth
// timeline of each SGT run.
//
//     compare                          # the embedded k-hop task, about 2 minutes on 2 cores
//     compare --data tinyshakespeare.txt --preset char_mini --steps 400 --markdown
#include <CLI/CLI.hpp>

#include <cmath>

#include "common.hpp"

using namespace examples;

int main(int argc, char** argv) {
    CLI::App app{"Train Vanilla, Block Loop and SGT (K_max = 1, 2, 3) side by side and compare them"};
    run_options o;
    growth_flags g;
    std::string data, log_path;
    bool markdown = false;
    add_common_options(app, o, g, data, log_path);
    app.add_flag("--markdown", markdown, "print the table as Markdown");
    // One thread by default: the demo's small models gain little from a second one, and lose several times
    // their speed when the cores are shared with other work (OpenMP threads wait on each other).
    int threads = 1;
    app.add_option("--threads", threads, "CPU threads; results do not depend on it (0: OpenMP's default, capped at "
                                         "the cores this process may use)")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    CLI11_PARSE(app, argc, argv);

    std::signal(SIGXFSZ, SIG_IGN);  // a file-size limit makes the log's writes fail with EFBIG, reported
    try {
        set_threads(threads);
        finish_options(o);
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
            {  // warm the process (thread pool, first page faults) so that the first timed run is not penalised
                run_options w = o;
                w.steps = w.lr.total = 3;
                w.lr.warmup = 1;
                w.quiet = true;
                any_dataset ds = text_or_task(data, o.task);
                any_schedule sched(vanilla_schedule(Cfg.shape.layers));
                jsonl_log none("");
                train_run<Cfg>(w, ds, sched, none);
            }
            std::string described;
            for (const auto& v : variants) {
                any_dataset ds = text_or_task(data, o.task);  // a fresh copy: every run sees the same batches
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
                run_options ov = o;  // the log names the run by its label (after --run-name, when given)
                ov.run_name = o.run_name.empty() ? v.label : o.run_name + " " + v.label;
                run_result r = train_run<Cfg>(ov, ds, sched, log);
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
            // A wall-time difference below 2 standard errors of the step-time noise is not resolved by this many steps.
            bool unresolved = false;
            for (const auto& r : results) {
                const bool resolved = &r == &base || wall_difference_resolved(r.step_seconds, base.step_seconds);
                unresolved = unresolved || !resolved;
                std::vector<std::string> cells{
                    r.name,
                    human_flops(r.flops),
                    fmt::format("{:+.2f}", 100 * (r.flops / base.flops - 1)),
                    fmt::format("{:.1f}", r.seconds),
                    resolved ? fmt::format("{:+.1f}", 100 * (r.seconds / base.seconds - 1))
                             : fmt::format("~{:+.0f} (noise)", 100 * (r.seconds / base.seconds - 1)),
                    fmt::format("{:.4f}", r.final_val_loss)};
                if (acc) cells.push_back(fmt::format("{:.1f}%", 100 * r.final_accuracy.value_or(0)));
                row(cells);
            }
            if (unresolved)
                fmt::print("\n(noise): a wall-time difference below 2 standard errors of the step-time noise, which "
                           "{} steps do not resolve; give more --steps to measure it\n",
                           o.steps);
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
    } catch (const std::bad_alloc&) {
        fmt::print(stderr, "error: out of memory: --batch {} x --seq {} needs more memory than this machine has\n",
                   o.batch, o.seq);
        return 1;
    }
}
