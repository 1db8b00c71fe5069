// examples/export_logits: runs a checkpoint's model (float) on the bytes of a text and writes its inputs and
// logits to a safetensors file, for comparisons outside C++ (tools/check_hf.py runs Hugging Face's
// LlamaForCausalLM on the same tokens; docs/HF_CHECK.md). Tokens are bytes (vocab 256): B sequences of T
// consecutive bytes starting at --offset.
//
//     export_logits --preset char_mini --checkpoint ckpt/ --tokens input.txt --batch 4 --seq 64 --out logits.safetensors
//     export_logits --preset char_mini --checkpoint ckpt/step_00000030 --text "To be, or not to be" --batch 1 --seq 19 --out l.safetensors
//
// Output tensors: "inputs" I32 (B, T), "logits" F32 (B, T, V). Metadata: "preset", "checkpoint" (the step
// directory), "plan" (the loop plan run, JSON), "loops" ("true" when the plan loops: such logits have no
// Hugging Face counterpart), "loss" (mean next-token loss inside each sequence).
//
// --plan checkpoint (the default) runs the loop plan of the growth state Θ saved in the checkpoint (schedules
// vanilla, sgt, block_loop, head_loop(all_heads) and static); --plan vanilla runs no loops whatever it says.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <set>

#include "common.hpp"

using namespace examples;

namespace {

// The loop plan of the checkpoint's saved schedule, as the schedule would run its next step.
template <model_config Cfg>
loop_plan saved_plan(const nlohmann::json& schedule, const std::string& source) {
    constexpr model_shape s = Cfg.shape;
    const auto kind = schedule.value("schedule", std::string("none"));
    if (kind == "vanilla") return loop_plan::vanilla(s.layers);
    if (kind == "sgt") {
        growth_operator<> g(s);
        g.load_json(schedule);
        return g.plan();
    }
    if (kind == "block_loop") {
        auto b = block_loop_schedule::by_entropy(s.layers, 1, 1, {});
        b.load_json(schedule);
        return b.plan();
    }
    if (kind == "head_loop") {
        head_loop_schedule<all_heads> h(s.layers, s.heads, head_loop_options{.layer = 0, .h = 1, .k = 1, .t_start = 1});
        h.load_json(schedule);
        return h.plan();
    }
    if (kind == "static") {
        static_schedule st(loop_plan::vanilla(s.layers), s.heads);
        st.load_json(schedule);
        return st.plan();
    }
    fail("{}: cannot rebuild a loop plan from a schedule of kind \"{}\" (known: vanilla, sgt, block_loop, head_loop, "
         "static); pass --plan vanilla to run without loops",
         source, kind);
}

bool has_loops(const loop_plan& p) {
    return std::ranges::any_of(p.layers, [](const layer_loop& l) { return l.k > 0 || l.block_repeat > 1; });
}

std::vector<std::int32_t> read_tokens(const std::string& file, const std::string& text, std::int64_t offset,
                                      std::int64_t count) {
    require(offset >= 0, "tokens: expected --offset >= 0, found {}", offset);
    std::string bytes = text;
    std::string what = "--text";
    if (!file.empty()) {  // only the bytes needed: the input may be a device or a pipe that never ends
        bytes = io::read_prefix(file, std::size_t(offset + count));
        what = "'" + file + "'";
    }
    require(std::int64_t(bytes.size()) >= offset + count,
            "tokens: --batch x --seq = {} bytes from offset {} are needed, but {} holds {} bytes", count, offset, what,
            bytes.size());
    std::vector<std::int32_t> out(static_cast<std::size_t>(count));
    for (std::int64_t i = 0; i < count; ++i)
        out[std::size_t(i)] = std::int32_t(std::uint8_t(bytes[std::size_t(offset + i)]));
    return out;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"Run a checkpoint on the bytes of a text and write its inputs and logits (safetensors)"};
    std::string preset = "char_mini", checkpoint, tokens_file, text, out, plan_choice = "checkpoint";
    int B = 4, T = 64, threads = 0;
    std::int64_t offset = 0;
    app.add_option("--preset", preset, "the preset the checkpoint was trained with: tiny, char_mini or char_small")
        ->check(CLI::IsMember({"tiny", "char_mini", "char_small"}))
        ->capture_default_str();
    app.add_option("--checkpoint", checkpoint, "a step directory, or a checkpoint directory with a 'latest' file")
        ->required();
    auto* tok = app.add_option("--tokens", tokens_file, "a file whose bytes are the tokens");
    auto* txt = app.add_option("--text", text, "the tokens as literal text (its bytes)");
    tok->excludes(txt);
    app.add_option("--offset", offset, "first byte of the file (or text) to use")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    app.add_option("--batch", B, "sequences (B)")->check(CLI::PositiveNumber)->capture_default_str();
    app.add_option("--seq", T, "tokens per sequence (T)")->check(CLI::PositiveNumber)->capture_default_str();
    app.add_option("--plan", plan_choice, "checkpoint (the saved growth state's loop plan) or vanilla")
        ->check(CLI::IsMember({"checkpoint", "vanilla"}))
        ->capture_default_str();
    app.add_option("--out", out, "the safetensors file to write")->required();
    app.add_option("--threads", threads, "CPU threads (0: OpenMP's default, capped at the cores this process may use)")
        ->check(CLI::NonNegativeNumber);
    CLI11_PARSE(app, argc, argv);

    try {
        set_threads(threads);
        require(!tokens_file.empty() || !text.empty(), "tokens: give --tokens FILE or --text TEXT");
        require(B >= 1, "expected --batch >= 1, found {}", B);
        return with_preset(preset, [&]<model_config Cfg>() {
            using model_t = model<float, Cfg>;
            require(T >= 2 && T <= model_t::shape.max_seq, "expected --seq in [2, {}] (the preset's maximum), found {}",
                    model_t::shape.max_seq, T);

            // The weights, checked against the preset's config (io/checkpoint.hpp).
            const auto dir = resolve_checkpoint(checkpoint);
            model_t m(B, T, 0);
            m.set_training(false);
            const nlohmann::json schedule = load_weights(dir, m);

            const loop_plan plan = plan_choice == "vanilla"
                                       ? loop_plan::vanilla(model_t::NL)
                                       : saved_plan<Cfg>(schedule, dir.string());
            const bool loops = has_loops(plan);

            batch x{B, T, read_tokens(tokens_file, text, offset, std::int64_t(B) * T), {}};
            const auto top = std::ranges::max(x.inputs);
            require(top < model_t::V, "tokens: byte {} is outside preset {}'s vocabulary of {}", top, preset,
                    model_t::V);
            x.targets.resize(x.inputs.size());
            for (int b = 0; b < B; ++b)
                for (int t = 0; t < T; ++t) {
                    const std::size_t i = std::size_t(b) * T + t;
                    x.targets[i] = t + 1 < T ? x.inputs[i + 1] : ignore_target;
                }
            const double loss = m.forward(x, plan);

            io::safetensors_writer w;
            w.add("inputs", {B, T}, x.inputs);
            w.add("logits", {B, T, model_t::V}, m.logits());
            w.set_metadata("preset", preset);
            w.set_metadata("checkpoint", dir.string());
            w.set_metadata("plan", detail::plan_to_json(plan).dump());
            w.set_metadata("loops", loops ? "true" : "false");
            w.set_metadata("loss", fmt::format("{:.9g}", loss));
            w.write(out);
            fmt::print("export_logits | {} | preset {} | {} x {} tokens | plan {} | loss {:.6f} -> {}\n", dir.string(),
                       preset, B, T, loops ? "with loops" : "vanilla", loss, out);
            if (loops)
                fmt::print("note: this plan loops; Hugging Face's LlamaForCausalLM has no looped attention, so its "
                           "logits will differ (use --plan vanilla to compare the weights alone)\n");
            return 0;
        });
    } catch (const sgt::error& e) {
        fmt::print(stderr, "error: {}\n", e.what());
        return 1;
    } catch (const nlohmann::json::exception& e) {  // a malformed schedule in the checkpoint's metadata
        fmt::print(stderr, "error: {}: the saved schedule is malformed: {}\n", checkpoint, e.what());
        return 1;
    } catch (const std::bad_alloc&) {
        fmt::print(stderr, "error: out of memory: --batch {} x --seq {} needs more memory than this machine has\n", B,
                   T);
        return 1;
    }
}
