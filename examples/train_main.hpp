// examples/train_main.hpp: the program examples/train (CPU) and examples/train_cuda (GPU) share: one model
// (Vanilla, Block Loop, Attention Loop or SGT) trained on a text file, on llm.c token shards, or on the embedded
// k-hop task, with a progress bar, periodic validation, a JSONL log, checkpoints and a summary.
#pragma once

#include <CLI/CLI.hpp>
#include <fmt/ranges.h>

#include <algorithm>
#include <tuple>

#include "common.hpp"
#include "launch.hpp"

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
    auto* train_opt = app.add_option("--train-shards", train_shards, "glob of llm.c token shards for training");
    auto* val_opt = app.add_option("--val-shards", val_shards, "glob of llm.c token shards for validation");
    app.add_option("--weight-decay", o.optim.weight_decay, "AdamW weight decay (not on norms)")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    app.add_option("--clip", o.optim.clip, "global gradient-norm clip (0: off)")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    app.add_option("--threads", threads,
                   fmt::format("CPU threads; results do not depend on it (0: OpenMP's default, at most the {} "
                               "cores this process may use)",
                               available_cores()))
        ->check(CLI::NonNegativeNumber);
    app.add_option("--checkpoint-dir", o.checkpoint_dir,
                   "write checkpoints here (at the end, every --checkpoint-every steps, and on SIGINT/SIGTERM)");
    app.add_option("--checkpoint-every", o.checkpoint_every, "steps between checkpoints (0: the final one only)")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    app.add_option("--keep", o.keep, "checkpoints kept")->check(CLI::PositiveNumber)->capture_default_str();
    app.add_option("--resume", o.resume, "continue the run of this checkpoint directory (same flags)");
    app.add_option("--sample-every", o.sample_every, "steps between printed samples of the model (0: none)")
        ->check(CLI::NonNegativeNumber)->capture_default_str();
    app.add_option("--sample-tokens", o.sample_tokens, "tokens per sample")->check(CLI::PositiveNumber)->capture_default_str();
    int nproc = 0;
    app.add_option("--nproc", nproc,
                   "train as N processes on this host (data parallel; one per GPU on a GPU), or check the number that a "
                   "launcher (mpirun, torchrun, srun) started; --batch is the global batch, split over them")
        ->check(CLI::PositiveNumber);
    app.add_flag("--fp32-reduce", o.fp32_reduce, "several processes, bf16: sum the gradients in fp32 (default bf16)");
    app.add_flag("--zero1", o.zero1,
                 "several processes: shard AdamW's moments (and bf16's fp32 master weights) over them (ZeRO-1): each "
                 "keeps and updates its share, then the updated weights are exchanged; the same steps, less memory");
    app.add_flag("--allow-flag-changes", o.allow_flag_changes,
                 "on --resume: accept new values of --steps, --lr, --warmup, --dropout, --weight-decay and --clip "
                 "(each change is logged); other flags cannot change");
    app.add_option("--variant", g.variant,
                   "vanilla, block, attention (all heads of --loop-layer), high / low (the --h highest / lowest-entropy "
                   "heads of --loop-layer, chosen at --t-start) or sgt")
        ->check(CLI::IsMember({"vanilla", "block", "attention", "high", "low", "sgt"}))
        ->capture_default_str();
    app.add_option("--L", g.L, "looping layers (default: the preset's budget)")->check(CLI::PositiveNumber);
    app.add_option("--k-max", g.k_max, "loop depth bound (default and most: the preset's budget)")
        ->check(CLI::PositiveNumber);
    app.add_option("--h", g.h, "heads per looping layer (default and most: the preset's budget)")
        ->check(CLI::PositiveNumber);
    app.add_option("--exclude", g.excluded, "layers never looped (0-based)")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    app.add_option("--direction", g.direction, "d2s or s2d")
        ->check(CLI::IsMember({"d2s", "s2d"}))
        ->capture_default_str();
    app.add_option("--transition", g.transition, "fade or hard")
        ->check(CLI::IsMember({"fade", "hard"}))
        ->capture_default_str();
    app.add_option("--fade", g.fade, "linear, cosine or exponential")
        ->check(CLI::IsMember({"linear", "cosine", "exponential"}))
        ->capture_default_str();
    app.add_option("--ema", g.ema, "entropy EMA alpha (0: instantaneous)")
        ->check(CLI::Range(0.0, 0.999))
        ->capture_default_str();
    app.add_flag("--release-rules", g.release_rules, "the authors' release rules (spec Sec. 4 (a)-(d))");
    app.add_option("--block-layers", g.block_layers, "Block Loop layers (default: chosen by entropy at t_start)")
        ->check(CLI::NonNegativeNumber);
    app.add_option("--loop-layer", g.loop_layer, "layer of the attention / high / low loop (default: the last)")
        ->check(CLI::NonNegativeNumber);
    app.add_option("--loop-k", g.loop_k, "loop steps of the attention / high / low loop")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    app.add_option("--allocation", g.allocation, "SGT's head allocation: entropy (Eq. 7) or gate (needs --gates)")
        ->capture_default_str();
    app.add_flag("--gates", o.gated, "learned head gates on the first pass of each layer (GATES.md)");
    app.add_option("--gate-threshold", o.gates.threshold, "gates: θ in (0, 1), below which a head is closed")
        ->capture_default_str();
    app.add_option("--gate-lambda", o.gates.lambda, "gates: weight λ ≥ 0 of the sparsity term λ·mean(s)")
        ->capture_default_str();
    app.add_option("--n-dense", o.gates.n_dense, "gates: ungated heads per layer (the first by index)")
        ->capture_default_str();
    app.add_option("--gate-layers", o.gates.layers, "gates: the gated layers (default: all)");
    app.add_option("--distill-gates", o.distill_from,
                   "gates: self-distillation (GATES.md Sec. 4) from this dense run's checkpoint: its weights, frozen; "
                   "the gates learn its head importance")
        ->check(CLI::ExistingPath);
    bool gate_soft = false;
    app.add_flag("--gate-soft", gate_soft, "gates: soft only (no hard threshold in training)");
    app.add_flag("--sigma-reparam", o.sigma_reparam,
                 "σReparam (GATES.md Sec. 5) on every linear layer: W used as (γ/σ(W)) W, σ by one power-iteration "
                 "step per step, γ learned");
    app.add_option("--init-hugging-face", o.init_hugging_face,
                   "start from the weights of this Hugging Face LlamaForCausalLM directory (config.json and "
                   "model.safetensors, or shards) of the preset's shape")
        ->check(CLI::ExistingDirectory);
    precision_choice<Precisions...> precision;
    app.add_option("--precision", precision.value,
                   "stored type: " + precision.listed() + " (bf16: mixed precision, fp32 master weights)")
        ->check(CLI::IsMember(precision.offered))
        ->capture_default_str();
    CLI11_PARSE(app, argc, argv);

    std::signal(SIGXFSZ, SIG_IGN);  // a file-size limit makes writes fail with EFBIG, reported, instead of killing
    try {
        o.launch = dist::read_launch_env();
        if (nproc > 1 && !o.launch.distributed()) return launch_ranks(nproc, argv);
        if (nproc > 1 || o.launch.distributed()) {
            require(!o.gated, "--gates with several processes is not supported yet: each rank's gate statistics (for "
                              "--allocation gate and the sparsity term) would differ");
            require(o.dropout == 0.0, "--dropout with several processes is not supported yet: every rank would draw "
                                      "the same masks");
        }
        require(nproc == 0 || !o.launch.distributed() || nproc == o.launch.world,
                "--nproc {}, but the launcher ({}) started {} processes", nproc, o.launch.source, o.launch.world);
        if (o.launch.rank != 0) {  // rank 0 prints, logs and writes checkpoints
            o.quiet = true;
            log_path.clear();
        }
        set_threads(threads);
        o.gates.straight_through = !gate_soft;
        require(o.gated || (g.allocation != "gate" && !app.count("--gate-threshold") && !app.count("--gate-lambda") &&
                            !app.count("--n-dense") && !app.count("--gate-layers") && !gate_soft &&
                            o.distill_from.empty()),
                "the gate options (--gate-*, --n-dense, --allocation gate, --distill-gates) need --gates");
        if (o.gated) gated_variant::validate(o.gates);  // bad values refused before anything runs
        const char* extra = o.gated ? "--gates" : "--sigma-reparam";
        require(o.init_hugging_face.empty() || (!o.gated && !o.sigma_reparam),
                "--init-hugging-face with {}: a LLaMA checkpoint has no weights for {}; start from it without {}{}",
                extra, o.gated ? "the head gates" : "σReparam's γ", extra,
                o.gated ? " (then --gates --distill-gates on that run's checkpoint trains gates for it)" : "");
        require(!o.gated || o.grad_accum == 1,
                "--grad-accum {} with --gates: the gates' loss term would count once per micro-batch (gradient "
                "accumulation takes variants without a loss term)",
                o.grad_accum);
        finish_options(o);
        if (o.checkpoint_dir.empty() && !o.resume.empty())  // keep writing where the run was resumed from
            o.checkpoint_dir = resolve_checkpoint(o.resume).parent_path().string();
        require(train_opt->count() == val_opt->count(), "--train-shards and --val-shards go together");
        require(data.empty() || train_opt->count() == 0, "give either --data or --train-shards, not both");
        const bool shards = train_opt->count() > 0;
        if (shards) {  // a file in both sets would validate on training data
            const auto train_files = detail::glob_files(train_shards, "train");
            for (const auto& v : detail::glob_files(val_shards, "val"))
                for (const auto& t : train_files) {
                    std::error_code ec;
                    require(!fs::equivalent(t, v, ec),
                            "--train-shards and --val-shards both match '{}'{}: validation must not see training data",
                            t.string(), t == v ? "" : fmt::format(" (as '{}')", v.string()));
                }
        }
        auto run = [&]<class T>() {
            return with_preset<true>(o.preset, [&]<model_config Cfg>() {
            any_dataset ds = shards ? any_dataset(shard_dataset(train_shards, val_shards, Cfg.shape.vocab))
                                    : text_or_task(data, o.task);
            auto gate_scores = o.gated ? std::make_shared<const gated_variant*>(nullptr) : nullptr;
            any_schedule sched = make_schedule<Cfg>(g, gate_scores);
            o.flags = run_flags<Cfg>(o, g, data, train_shards, val_shards, precision.value);
            jsonl_log log(log_path, o.resume.empty() ? jsonl_log::mode::replace : jsonl_log::mode::append);
            const bool lead = o.launch.rank == 0;
            if (lead) {
            fmt::print("sgt train | preset {} ({:.2f}M parameters) | {} | {} {} | data: {}\n", o.preset,
                       Cfg.shape.total_params() / 1e6, sched.name(), Backend::name, precision_name<T>::value,
                       ds.describe());
            fmt::print("steps {} | batch {} x {}{} | lr {} (warm-up {}, cosine to {}x) | dropout {} | seed {} | {} "
                       "threads\n",
                       o.steps, o.batch, o.seq,
                       o.grad_accum > 1 ? fmt::format(" x {} micro-batches", o.grad_accum) : std::string(),
                       o.lr.lr_max, o.lr.warmup, o.lr.min_ratio, o.dropout, o.seed, sgt::threads());
            if (o.launch.distributed())
                fmt::print("data parallel: {} processes ({}), {} sequences each\n", o.launch.world,
                           o.launch.source, o.batch / std::max(1, o.launch.world));
            if (o.sigma_reparam) fmt::print("σReparam on every linear layer (q, k, v, o, gate, up, down, LM head)\n");
            if (o.gated)
                fmt::print("gates: θ {} | {} | λ {} | {} dense heads | layers {}\n", o.gates.threshold,
                           o.gates.straight_through ? "straight-through" : "soft", o.gates.lambda, o.gates.n_dense,
                           o.gates.layers.empty() ? std::string("all") : fmt::format("{}", fmt::join(o.gates.layers, ",")));
            }
            const run_result r = o.gated ? train_run<Cfg, T, Backend>(o, ds, sched, log, gated_variant(o.gates), gate_scores)
                                         : train_run<Cfg, T, Backend>(o, ds, sched, log);
            log.close();
            if (!lead) return r.interrupted ? 130 : 0;
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
                       double(o.steps) * o.batch * o.grad_accum * o.seq / r.seconds);
            fmt::print("attention entropy {:.4f} at the first step, {:.4f} at the last (lowest {:.4f}; first pass, "
                       "mean over layers and heads)\n",
                       r.first_entropy, r.last_entropy, r.min_entropy);
            for (const auto& e : r.events) fmt::print("growth          {}\n", to_string(e));
            fmt::print("structure       {}\n", r.final_structure.dump());
            if (r.gate_sparsity) fmt::print("gate sparsity   {:.4f} (closed at θ = {})\n", *r.gate_sparsity, o.gates.threshold);
            if (r.distill) {
                const auto& d = *r.distill;
                fmt::print("distillation    BCE(s, τ), summed over the gated layers, {:.4f} -> {:.4f} (first and last "
                           "step{}); sparsity at θ {:.4f} -> {:.4f}\n",
                           d.first_loss, d.last_loss, d.resumed ? " since the resume" : "", d.first_sparsity,
                           r.gate_sparsity.value_or(0.0));
                fmt::print("                val LM loss: dense {:.4f}; gated at θ {:.4f} before, {:.4f} after\n",
                           d.dense_val, d.gated_val_before, r.final_val_loss);
            }
            return 0;
            });
        };
        return precision.dispatch(run);
    } catch (const sgt::error& e) {
        fmt::print(stderr, "error: {}{}\n",
                   o.launch.world > 1 ? fmt::format("(rank {} of {}) ", o.launch.rank, o.launch.world) : "", e.what());
        return 1;
    } catch (const std::bad_alloc&) {
        fmt::print(stderr, "error: out of memory: --batch {} x --seq {} needs more memory than this machine has\n",
                   o.batch, o.seq);
        return 1;
    }
}

}  // namespace examples
