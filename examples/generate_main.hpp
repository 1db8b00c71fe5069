// examples/generate_main.hpp: the program examples/generate (CPU) and examples/generate_cuda (GPU) share: loads a
// checkpoint of train / train_cuda (its preset found from the checkpoint, its loop plan frozen) or a Hugging Face
// LlamaForCausalLM directory of a preset's shape (run as vanilla), takes a prompt (text for byte-level models, or
// token ids), streams the generated text, and ends with prefill and decode tokens/s.
#pragma once

#include <CLI/CLI.hpp>
#include <fmt/ranges.h>

#include <cstdio>
#include <tuple>

#include "common.hpp"
#include "sgt/infer/load.hpp"
#include "sgt/io/hugging_face.hpp"

namespace examples {

// The first preset whose config `matches` (called as matches.template operator()<Cfg>()), over every preset:
// char_7m's and gpt2's configs too, which this program does not instantiate (their name then leads to with_preset's
// message); empty where none does.
template <class F>
std::string find_preset(F&& matches) {
    for (const auto& name : preset_names()) {
        const bool match = name == "char_7m" ? matches.template operator()<presets::char_7m>()
                           : name == "gpt2"  ? matches.template operator()<presets::gpt2>()
                                             : with_preset(name, matches);
        if (match) return name;
    }
    return {};
}

// The preset whose config a checkpoint was written with.
inline std::string checkpoint_preset(const std::string& path) {
    const auto weights = io::safetensors::from_file(resolve_checkpoint(path) / "model.safetensors");
    const auto config = detail::parse_metadata(weights, "config");
    const std::string name = find_preset([&]<model_config Cfg>() { return detail::shape_json(Cfg) == config; });
    require(!name.empty(), "{}: the checkpoint's model config {} is none of the presets {}", weights.source(),
            config.dump(), fmt::join(preset_names(), ", "));
    return name;
}

// The preset whose shape a Hugging Face directory's config.json describes; none: an error that says how to see the
// first field that differs.
inline std::string hugging_face_preset(const std::string& dir) {
    const auto file = std::filesystem::path(dir) / "config.json";
    const auto config = detail::read_json_file(file);
    const std::string name = find_preset([&]<model_config Cfg>() {
        try {
            detail::check_hf_config(config, Cfg, file.string());
            return true;
        } catch (const sgt::error&) {
            return false;
        }
    });
    require(!name.empty(), "{}: describes none of the presets ({}); give --preset NAME to see the first field that "
            "differs from it", file.string(), fmt::join(preset_names(), ", "));
    return name;
}

// Token ids "1,2,3" (or space-separated).
inline std::vector<std::int32_t> parse_ids(const std::string& s) {
    std::vector<std::int32_t> ids;
    std::string cur;
    auto flush = [&] {
        if (cur.empty()) return;
        try {
            std::size_t used = 0;
            const long v = std::stol(cur, &used);
            require(used == cur.size(), "--prompt-ids: expected integers, found '{}'", cur);
            ids.push_back(std::int32_t(v));
        } catch (const std::logic_error&) {
            fail("--prompt-ids: expected integers, found '{}'", cur);
        }
        cur.clear();
    };
    for (char c : s) {
        if (c == ',' || c == ' ') flush();
        else cur += c;
    }
    flush();
    return ids;
}

// Prints a token as it is generated: the byte itself for byte-level models, else its id.
inline void print_token(std::int32_t t, int vocab) {
    if (vocab == 256) std::fputc(t, stdout);
    else fmt::print(" {}", t);
    std::fflush(stdout);
}

template <class Backend, class... Precisions>
int generate_main(int argc, char** argv) {
    CLI::App app{fmt::format("Generate text from a checkpoint of train (or a Hugging Face LLaMA) on the {}",
                                 Backend::name)};
    std::string checkpoint, hugging_face, prompt, prompt_ids, preset;
    int tokens = 200, batch = 1, context = 0, threads = 0;
    generation_options go;
    go.sampling.temperature = 0.8;
    go.sampling.seed = 1;
    bool quiet = false;
    app.add_option("--checkpoint", checkpoint, "a checkpoint directory of train (or one of its step_* directories)");
    app.add_option("--hugging-face", hugging_face,
                   "instead: a Hugging Face LlamaForCausalLM directory (config.json and model.safetensors, or shards) "
                   "of a preset's shape, run as vanilla");
    app.add_option("--prompt", prompt, "the prompt as text (byte-level models)");
    app.add_option("--prompt-ids", prompt_ids, "the prompt as token ids, e.g. 1,2,3");
    app.add_option("--tokens", tokens, "tokens to generate")->capture_default_str();
    app.add_option("--seed", go.sampling.seed, "sampling seed")->capture_default_str();
    app.add_option("--temperature", go.sampling.temperature, "0: greedy")->capture_default_str();
    app.add_option("--top-k", go.sampling.top_k, "keep the k most likely tokens (0: all)")->capture_default_str();
    app.add_option("--top-p", go.sampling.top_p, "keep the smallest set of mass top-p, in (0, 1]")->capture_default_str();
    app.add_option("--stop", go.stop_token, "stop after this token id (-1: none)")->capture_default_str();
    app.add_option("--batch", batch, "sequences generated from the prompt at once (the first is printed)")
        ->capture_default_str();
    app.add_option("--context", context, "the cache's context (default: prompt + tokens)");
    app.add_option("--preset", preset, "the checkpoint's preset (default: found from the checkpoint)");
    app.add_option("--threads", threads, "CPU threads (0: OpenMP's default, capped at the cores this process may use)")
        ->check(CLI::NonNegativeNumber);
    app.add_flag("--quiet", quiet, "print only the throughput line");
    precision_choice<Precisions...> precision;
    app.add_option("--precision", precision.value, "stored type: " + precision.listed())
        ->capture_default_str();
    CLI11_PARSE(app, argc, argv);

    try {
        set_threads(threads);
        require(checkpoint.empty() != hugging_face.empty(),
                "expected the model as --checkpoint DIR or --hugging-face DIR (one of them), found {}",
                checkpoint.empty() ? "neither" : "both");
        require(prompt.empty() || prompt_ids.empty(), "give either --prompt or --prompt-ids, not both");
        require(tokens >= 1, "--tokens: expected at least 1, found {}", tokens);
        require(batch >= 1, "--batch: expected at least 1, found {}", batch);
        require(std::find(precision.offered.begin(), precision.offered.end(), precision.value) !=
                    precision.offered.end(),
                "--precision: expected one of {}, found '{}'", precision.listed(), precision.value);
        go.sampling.validate();
        go.max_new_tokens = tokens;
        if (preset.empty())
            preset = hugging_face.empty() ? checkpoint_preset(checkpoint) : hugging_face_preset(hugging_face);
        auto run = [&]<class T>() {
            return with_preset(preset, [&]<model_config Cfg>() {
                std::vector<std::int32_t> ids;
                if (!prompt_ids.empty()) {
                    ids = parse_ids(prompt_ids);
                } else {
                    require(Cfg.shape.vocab == 256 || prompt.empty(),
                            "--prompt: text needs a byte-level model (vocab 256), this one has vocab {}; give "
                            "--prompt-ids",
                            Cfg.shape.vocab);
                    for (unsigned char c : prompt) ids.push_back(std::int32_t(c));
                }
                require(!ids.empty(), "the prompt is empty: expected --prompt TEXT or --prompt-ids with at least one "
                                      "token");
                for (std::size_t i = 0; i < ids.size(); ++i)
                    require(ids[i] >= 0 && ids[i] < Cfg.shape.vocab,
                            "--prompt-ids: token {} at position {} is outside the vocabulary [0, {})", ids[i], i,
                            Cfg.shape.vocab);
                const int ctx = context > 0 ? context : int(ids.size()) + tokens - 1;
                require(ctx <= Cfg.shape.max_seq,
                        "the prompt ({} tokens) plus {} new tokens needs a context of {}, beyond the preset's maximum "
                        "sequence {}",
                        ids.size(), tokens, ctx, Cfg.shape.max_seq);
                inference<T, Cfg, Backend> inf(batch, ctx, model<T, Cfg, Backend>::budget_plan());
                loop_plan plan = loop_plan::vanilla(Cfg.shape.layers);  // a Hugging Face LLaMA: no loops
                if (hugging_face.empty()) {
                    plan = load_checkpoint_for_inference(checkpoint, inf);
                } else {
                    load_hugging_face(hugging_face, inf);
                    inf.set_structure(plan);
                }
                if (!quiet) {
                    fmt::print(stderr, "sgt generate | preset {} | {} {} | structure {} | cache {:.2f} MiB\n", preset,
                               Backend::name, precision_name<T>::value,
                               describe_plan(plan), inf.cache().used_bytes() / 1048576.0);
                    if (Cfg.shape.vocab == 256) {
                        for (auto c : ids) std::fputc(c, stdout);
                    } else {
                        for (auto c : ids) fmt::print(" {}", c);
                    }
                    std::fflush(stdout);
                }
                const std::vector<std::vector<std::int32_t>> prompts(std::size_t(batch), ids);
                const generation g = inf.generate(prompts, go, [&](int b, std::int32_t t) {
                    if (b == 0 && !quiet) print_token(t, Cfg.shape.vocab);
                });
                if (!quiet) fmt::print("\n");
                fmt::print(stderr, "prefill {} tokens: {:.0f} tokens/s | decode {} tokens: {:.0f} tokens/s\n",
                           g.prefill_tokens, g.prefill_tokens_per_s(), g.decode_tokens, g.decode_tokens_per_s());
                if (const auto& gates = inf.gates()) {  // a gated checkpoint: what the closed heads saved
                    const gate_decode_stats& st = inf.gate_stats();
                    fmt::print(stderr,
                               "gates (θ {}, {} dense heads): {} of {} gated head reads skipped ({:.1f}%), {} of {} "
                               "cached key/value vectors not read ({:.1f}%)\n",
                               gates->threshold, gates->n_dense, st.head_reads_skipped, st.head_reads,
                               100.0 * st.skipped_fraction(), st.kv_vectors_skipped, st.kv_vectors,
                               100.0 * st.kv_skipped_fraction());
                }
                return 0;
            });
        };
        return precision.dispatch(run);
    } catch (const sgt::error& e) {
        fmt::print(stderr, "error: {}\n", e.what());
        return 1;
    }
}

}  // namespace examples
