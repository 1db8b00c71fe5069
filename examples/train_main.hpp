// examples/train_main.hpp: the program examples/train (CPU) and examples/train_cuda (GPU) share: one model
// (Vanilla, Block Loop, Attention Loop or SGT) trained on a text file, on llm.c token shards, or on the embedded
// k-hop task, with a progress bar, periodic validation, a JSONL log, checkpoints and a summary.
#pragma once

#include <CLI/CLI.hpp>
#include <fmt/ranges.h>

#include <algorithm>
#include <tuple>

#include "common.hpp"

namespace examples {

// The whole program, for a backend and the stored types it offers (the first is the default --precision).
template <class Backend, class... Precisions>
int train_main(int argc, char** argv) {
    CLI::App app{fmt::format("Train a Sparse Growing Transformer (or a baseline) on the {}", Backend::name)};
    run_options o;
    growth_flags g;
    std::string data, train_shards, val_shards, log_path;
    int threads = 0;
    add_common_options(app, o, g, data, log_path);
    app.add_option("--train-shards", train_shards, "glob of llm.c token shards for training");
    app.add_option("--val-shards", val_shards, "glob of llm.c token shards for validation");
    app.add_option("--weight-decay", o.optim.weight_decay, "AdamW weight decay (not on norms)")->capture_default_str();
    app.add_option("--clip", o.optim.clip, "global gradient-norm clip (0: off)")->capture_default_str();
    app.add_option("--threads", threads, "CPU threads (0: OpenMP's default)");
    app.add_option("--checkpoint-dir", o.checkpoint_dir,
                   "write checkpoints here (at the end, every --checkpoint-every steps, and on SIGINT/SIGTERM)");
    app.add_option("--checkpoint-every", o.checkpoint_every, "steps between checkpoints (0: the final one only)")
        ->capture_default_str();
    app.add_option("--keep", o.keep, "checkpoints kept")->capture_default_str();
    app.add_option("--resume", o.resume, "continue the run of this checkpoint directory (same flags)");
    app.add_option("--sample-every", o.sample_every, "steps between printed samples of the model (0: none)")
        ->capture_default_str();
    app.add_option("--sample-tokens", o.sample_tokens, "tokens per sample")->capture_default_str();
    app.add_option("--variant", g.variant, "vanilla, block, attention or sgt")->capture_default_str();
    app.add_option("--L", g.L, "looping layers (default: the preset's budget)");
    app.add_option("--k-max", g.k_max, "loop depth bound (default: the preset's budget)");
    app.add_option("--h", g.h, "heads per looping layer (default: the preset's budget)");
    app.add_option("--exclude", g.excluded, "layers never looped (0-based)")->capture_default_str();
    app.add_option("--direction", g.direction, "d2s or s2d")->capture_default_str();
    app.add_option("--transition", g.transition, "fade or hard")->capture_default_str();
    app.add_option("--fade", g.fade, "linear, cosine or exponential")->capture_default_str();
    app.add_option("--ema", g.ema, "entropy EMA alpha (0: instantaneous)")->capture_default_str();
    app.add_flag("--release-rules", g.release_rules, "the authors' release rules (spec Sec. 4 (a)-(d))");
    app.add_option("--block-layers", g.block_layers, "Block Loop layers (default: chosen by entropy at t_start)");
    app.add_option("--loop-layer", g.loop_layer, "Attention Loop layer (default: the last)");
    app.add_option("--loop-k", g.loop_k, "Attention Loop depth")->capture_default_str();
    std::string precision = precision_name<std::tuple_element_t<0, std::tuple<Precisions...>>>::value;
    const std::vector<std::string> offered{precision_name<Precisions>::value...};
    app.add_option("--precision", precision, "stored type: " + fmt::format("{}", fmt::join(offered, ", ")) +
                                                 " (bf16: mixed precision, fp32 master weights)")
        ->capture_default_str();
    CLI11_PARSE(app, argc, argv);

    try {
        if (threads > 0) Eigen::setNbThreads(threads);
        finish_options(o);
        if (o.checkpoint_dir.empty() && !o.resume.empty())  // keep writing where the run was resumed from
            o.checkpoint_dir = resolve_checkpoint(o.resume).parent_path().string();
        require(train_shards.empty() == val_shards.empty(), "--train-shards and --val-shards go together");
        require(data.empty() || train_shards.empty(), "give either --data or --train-shards, not both");
        require(std::find(offered.begin(), offered.end(), precision) != offered.end(),
                "--precision: expected one of {}, found '{}'", fmt::join(offered, ", "), precision);
        auto run = [&]<class T>() {
            return with_preset(o.preset, [&]<model_config Cfg>() {
            any_dataset ds = !train_shards.empty()
                                 ? any_dataset(shard_dataset(train_shards, val_shards, Cfg.shape.vocab))
                                 : text_or_task(data, o.task);
            any_schedule sched = make_schedule<Cfg>(g);
            jsonl_log log(log_path);
            fmt::print("sgt train | preset {} ({:.2f}M parameters) | {} | {} {} | data: {}\n", o.preset,
                       Cfg.shape.total_params() / 1e6, sched.name(), Backend::name, precision_name<T>::value,
                       ds.describe());
            fmt::print("steps {} | batch {} x {} | lr {} (warm-up {}, cosine to {}x) | dropout {} | seed {}\n",
                       o.steps, o.batch, o.seq, o.lr.lr_max, o.lr.warmup, o.lr.min_ratio, o.dropout, o.seed);
            log.write({{"type", "config"}, {"preset", o.preset}, {"schedule", sched.to_json()},
                       {"data", ds.describe()}, {"steps", o.steps}, {"batch", o.batch}, {"seq", o.seq},
                       {"lr", o.lr.lr_max}, {"seed", o.seed}});
            const run_result r = train_run<Cfg, T, Backend>(o, ds, sched, log);
            if (r.interrupted) {
                fmt::print("\ninterrupted: checkpoint saved in {}; continue with --resume {}\n", o.checkpoint_dir,
                           o.checkpoint_dir);
                return 130;
            }
            fmt::print("\n== summary ==\n");
            fmt::print("final val loss  {:.4f}{}\n", r.final_val_loss,
                       r.final_accuracy ? fmt::format(" (answer accuracy {:.1f}%)", 100 * *r.final_accuracy) : "");
            fmt::print("training FLOPs  {} ({:+.2f}% over vanilla)\n", human_flops(r.flops),
                       100 * (r.flops / r.vanilla_flops - 1));
            fmt::print("wall time       {:.1f} s ({:.0f} tokens/s)\n", r.seconds,
                       double(o.steps) * o.batch * o.seq / r.seconds);
            for (const auto& e : r.events) fmt::print("growth          {}\n", to_string(e));
            fmt::print("structure       {}\n", r.final_structure.dump());
            return 0;
            });
        };
        int rc = 0;
        ((precision == precision_name<Precisions>::value ? (rc = run.template operator()<Precisions>(), true) : false) ||
         ...);
        return rc;
    } catch (const sgt::error& e) {
        fmt::print(stderr, "error: {}\n", e.what());
        return 1;
    }
}

}  // namespace examples
