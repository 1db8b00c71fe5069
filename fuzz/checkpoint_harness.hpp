// fuzz/checkpoint_harness.hpp: what fuzz_checkpoint runs on one input, shared with tests/test_fuzz_regressions.cpp:
// the metadata path of sgt/io/checkpoint.hpp's load_checkpoint.
//
// The input is the metadata of a checkpoint, one value per line (the values are compact JSON or plain numbers,
// which hold no newline): the optimizer file's "trainer", "adamw_step", "dropout_rng" and "data", then the model
// file's "schedule" and "config". A missing line leaves that key out. The tensors are those of a real checkpoint
// of a small model (with valid checksums), so every input reaches the metadata checks. The promises checked:
// load_checkpoint either loads or throws sgt::error; a refused load leaves the trainer exactly as it was (weights,
// moments, counters, schedule, dropout RNG); a load that succeeds set the trainer to what the metadata says.
#pragma once

#include "harness.hpp"
#include "sgt/io/checkpoint.hpp"
#include "sgt/sgt.hpp"

#include <unistd.h>

#include <array>
#include <cstddef>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace sgt::fuzz {

// A small model with loops: 2 layers of 2 heads, budget h = 1, L = 2, K_max = 2.
inline constexpr model_config checkpoint_config{
    .shape = {.layers = 2, .heads = 2, .head_dim = 4, .d_ff = 8, .vocab = 16, .max_seq = 8},
    .loops = {.h = 1, .L = 2, .k_max = 2}};

// The metadata keys an input line sets, in order, and the file each belongs to (true: the model file).
inline constexpr std::array<std::pair<std::string_view, bool>, 6> checkpoint_keys{
    {{"trainer", false}, {"adamw_step", false}, {"dropout_rng", false}, {"data", false}, {"schedule", true},
     {"config", true}}};

// What run_checkpoint got through.
struct checkpoint_result {
    bool files_ok = false;  // the metadata made valid safetensors files (it is valid UTF-8)
    bool loaded = false;    // load_checkpoint accepted them
};

namespace detail {

using checkpoint_model = model<float, checkpoint_config>;

// The growth of the small model: from the end of step 2, a decision every step, no layer excluded.
inline growth_options checkpoint_growth() {
    growth_options o = growth_options::from_budget(checkpoint_config.loops);
    o.t_start = 2;
    o.dt = 1;
    o.excluded = {};
    return o;
}

// A trainer of the small model, and the checkpoint it wrote after 4 steps (growth active from step 2).
struct checkpoint_base {
    checkpoint_model m{2, 8, 1};
    growth_operator<> g{checkpoint_model::shape, checkpoint_growth()};
    trainer<checkpoint_model, growth_operator<>> tr{m, g, cosine_schedule{.lr_max = 1e-2, .warmup = 1, .total = 8},
                                                    adamw_options{}, 2, 8};
    std::vector<std::byte> weights, optim;  // the files' bytes
    std::map<std::string, std::string> weights_meta, optim_meta;

    checkpoint_base() {
        rng r(3);
        for (int t = 0; t < 4; ++t) {
            batch b{2, 8, {}, {}};
            for (int i = 0; i < 16; ++i) {
                b.inputs.push_back(std::int32_t(r.below(16)));
                b.targets.push_back(std::int32_t(r.below(16)));
            }
            tr.step(b);
        }
        const auto dir = std::filesystem::temp_directory_path() / fmt::format("sgt_fuzz_checkpoint_{}", ::getpid());
        const auto step = save_checkpoint(dir, tr, nlohmann::json{{"batch", 2}, {"seq", 8}}, 1);
        weights = read_all(step / "model.safetensors");
        optim = read_all(step / "optimizer.safetensors");
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
        weights_meta = io::safetensors::from_bytes(std::span<const std::byte>(weights)).metadata();
        optim_meta = io::safetensors::from_bytes(std::span<const std::byte>(optim)).metadata();
    }

    static std::vector<std::byte> read_all(const std::filesystem::path& p) {
        const std::string s = io::read_prefix(p, std::size_t(1) << 30);
        const auto b = std::as_bytes(std::span<const char>(s.data(), s.size()));
        return {b.begin(), b.end()};
    }
};

inline checkpoint_base& base() {
    static checkpoint_base b;
    return b;
}

// Everything a load may change.
struct trainer_bits {
    std::vector<float> params, m1, m2;
    int adamw_steps = 0;
    nlohmann::json counters, schedule;
    rng::state_type dropout{};
    bool operator==(const trainer_bits&) const = default;
};

inline trainer_bits bits_of(checkpoint_base& b) {
    auto& opt = b.tr.optimizer();
    return {b.m.parameters_to_host(),
            {opt.first_moment().begin(), opt.first_moment().end()},
            {opt.second_moment().begin(), opt.second_moment().end()},
            opt.steps(),
            b.tr.state_json(),
            b.g.to_json(),
            b.m.dropout_rng().state()};
}

// The file of `bytes` with its metadata replaced by `meta` (tensors and their checksums kept).
inline std::vector<std::byte> with_metadata(const std::vector<std::byte>& bytes,
                                            const std::map<std::string, std::string>& meta) {
    const auto f = io::safetensors::from_bytes(std::span<const std::byte>(bytes));
    io::safetensors_writer w;
    for (const auto& [k, v] : meta) w.set_metadata(k, v);
    for (const auto& t : f.tensors()) w.add(t.name, t.type, t.shape, t.bytes);
    return w.to_bytes();
}

}  // namespace detail

// The input that reproduces the base checkpoint's own metadata (a valid seed).
inline std::string checkpoint_seed() {
    auto& b = detail::base();
    std::string out;
    for (const auto& [key, in_model] : checkpoint_keys) {
        const auto& meta = in_model ? b.weights_meta : b.optim_meta;
        out += meta.at(std::string(key)) + "\n";
    }
    return out;
}

inline checkpoint_result run_checkpoint(std::span<const std::byte> data) {
    auto& b = detail::base();
    checkpoint_result r;
    std::map<std::string, std::string> wmeta = b.weights_meta, ometa = b.optim_meta;
    for (const auto& [key, in_model] : checkpoint_keys) (in_model ? wmeta : ometa).erase(std::string(key));
    const std::string_view text(reinterpret_cast<const char*>(data.data()), data.size());
    std::size_t pos = 0;
    for (const auto& [key, in_model] : checkpoint_keys) {
        if (pos >= text.size()) break;
        std::size_t end = text.find('\n', pos);
        if (end == std::string_view::npos) end = text.size();
        (in_model ? wmeta : ometa)[std::string(key)] = std::string(text.substr(pos, end - pos));
        pos = end + 1;
    }
    std::optional<io::safetensors> weights, optim;
    if (!detail::accepts([&] {
            weights.emplace(io::safetensors::from_bytes(detail::with_metadata(b.weights, wmeta)));
            optim.emplace(io::safetensors::from_bytes(detail::with_metadata(b.optim, ometa)));
        }))
        return r;  // not valid UTF-8: the writer refuses such metadata
    r.files_ok = true;

    const detail::trainer_bits before = detail::bits_of(b);
    try {
        const auto data_state = load_checkpoint(*weights, *optim, b.tr, [](const nlohmann::json& j) {
            json_get<int>(j, "batch", "data state");
            json_get<int>(j, "seq", "data state");
        });
        r.loaded = true;
        (void)data_state;
    } catch (const sgt::error&) {
        expect(detail::bits_of(b) == before, "a refused load changed the trainer");
        return r;
    }
    // Loaded: the trainer holds what the metadata says, and its schedule writes back what it read.
    const auto trainer_json = nlohmann::json::parse(ometa.at("trainer"));
    expect(b.tr.steps() == trainer_json.at("step").get<int>(), "the trainer's step is {}, the metadata says {}",
           b.tr.steps(), trainer_json.at("step").dump());
    expect(b.tr.optimizer().steps() == std::stoi(ometa.at("adamw_step")), "AdamW's step differs from the metadata");
    const auto schedule = b.g.to_json();
    growth_operator<> again(detail::checkpoint_model::shape, detail::checkpoint_growth());
    again.load_json(schedule);
    expect(again.to_json() == schedule && again.plan() == b.g.plan(), "the loaded schedule does not round-trip");
    // Back to the base state for the next input (the base checkpoint must load).
    try {
        load_checkpoint(io::safetensors::from_bytes(std::span<const std::byte>(b.weights)),
                        io::safetensors::from_bytes(std::span<const std::byte>(b.optim)), b.tr);
    } catch (const sgt::error& e) {
        throw invariant_violation(fmt::format("the base checkpoint no longer loads: {}", e.what()));
    }
    return r;
}

}  // namespace sgt::fuzz
