// sgt/io/checkpoint.hpp: checkpoints that resume a run bit for bit.
//
// A checkpoint is a directory DIR/step_XXXXXXXX holding
//   model.safetensors      the weights under their Hugging Face LLaMA names; __metadata__ holds the model
//                          config and the growth state Θ (the schedule's JSON)
//   optimizer.safetensors  AdamW's moments ("exp_avg.<name>", "exp_avg_sq.<name>"); __metadata__ holds the
//                          trainer's counters, the dropout RNG and the caller's data state (RNG, shard position)
//   config.json            a Hugging Face LlamaConfig, so that a vanilla checkpoint loads as LlamaForCausalLM
// and DIR/latest names the newest one. A checkpoint is written into a temporary directory that is renamed into
// place only when complete, `latest` is replaced atomically, and older checkpoints are pruned only after that:
// a failed save (read-only or full disk) throws sgt::error and leaves every earlier checkpoint intact.
#pragma once

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>
#include <type_traits>
#include <unistd.h>
#include <utility>
#include <vector>

#include "sgt/core/error.hpp"
#include "sgt/config.hpp"
#include "sgt/core/rng.hpp"
#include "sgt/backend/common.hpp"
#include "sgt/core/precision.hpp"
#include "sgt/io/safetensors.hpp"
#include "sgt/params.hpp"

namespace sgt {

namespace fs = std::filesystem;

inline constexpr const char* checkpoint_format = "sgt-checkpoint-1";

namespace detail {

// The weights a checkpoint holds, on the host, in accum_t<T>: the parameters themselves, or for a
// mixed-precision (bf16) model the optimizer's fp32 master weights, of which the bf16 copy is a rounding.
template <class Trainer>
auto weights_to_host(Trainer& tr) {
    auto& m = tr.model();
    using T = typename std::remove_reference_t<decltype(m)>::value_type;
    using B = typename std::remove_reference_t<decltype(m)>::backend_type;
    if constexpr (std::is_same_v<T, accum_t<T>>)
        return m.parameters_to_host();
    else
        return to_host(B{}, tr.optimizer().master_weights(m.parameters()));
}

inline nlohmann::json shape_json(const model_config& c) {
    const auto& s = c.shape;
    return {{"layers", s.layers}, {"heads", s.heads},  {"head_dim", s.head_dim}, {"d_ff", s.d_ff},
            {"vocab", s.vocab},   {"max_seq", s.max_seq}, {"k_max", c.loops.k_max}, {"h", c.loops.h},
            {"L", c.loops.L},     {"rope_base", c.rope_base}, {"norm_eps", c.norm_eps}};
}

// Hugging Face LlamaConfig of a shape (the loops have no Hugging Face counterpart; they are in "sgt").
inline nlohmann::json hf_config(const model_config& c, const char* dtype) {
    const auto& s = c.shape;
    return {{"architectures", {"LlamaForCausalLM"}},
            {"model_type", "llama"},
            {"hidden_size", s.width()},
            {"intermediate_size", s.d_ff},
            {"num_attention_heads", s.heads},
            {"num_key_value_heads", s.heads},
            {"head_dim", s.head_dim},
            {"num_hidden_layers", s.layers},
            {"vocab_size", s.vocab},
            {"max_position_embeddings", s.max_seq},
            {"rms_norm_eps", c.norm_eps},
            {"rope_theta", c.rope_base},  // transformers 4.x; 5.x reads rope_parameters
            {"rope_parameters", {{"rope_type", "default"}, {"rope_theta", c.rope_base}}},
            {"bos_token_id", nullptr},  // byte-level: no special tokens, so generate() stops at no byte
            {"eos_token_id", nullptr},
            {"hidden_act", "silu"},
            {"attention_bias", false},
            {"mlp_bias", false},
            {"tie_word_embeddings", false},
            {"torch_dtype", dtype},  // transformers 4.x; 5.x reads dtype
            {"dtype", dtype}};
}

inline std::string step_name(int step) { return fmt::format("step_{:08}", step); }

inline void write_text_atomically(const fs::path& path, const std::string& text) {
    const fs::path tmp = path.string() + ".tmp." + std::to_string(::getpid());
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        out << text;
        out.flush();
        if (!out) {
            std::error_code ec;
            fs::remove(tmp, ec);
            fail("checkpoint: cannot write '{}': {}", tmp.string(), std::strerror(errno));
        }
    }
    std::error_code ec;
    fs::rename(tmp, path, ec);
    if (ec) {
        fs::remove(tmp, ec);
        fail("checkpoint: cannot rename '{}' to '{}': {}", tmp.string(), path.string(), ec.message());
    }
}

inline nlohmann::json parse_metadata(const io::safetensors& f, const std::string& key) {
    const auto& m = f.metadata();
    const auto it = m.find(key);
    require(it != m.end(), "{}: expected metadata '{}', found none", f.source(), key);
    try {
        return nlohmann::json::parse(it->second);
    } catch (const nlohmann::json::exception& e) {
        fail("{}: metadata '{}' is not valid JSON: {}", f.source(), key, e.what());
    }
}

// The step directories of DIR, oldest first.
inline std::vector<fs::path> step_dirs(const fs::path& dir) {
    std::vector<fs::path> out;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec))
        if (e.is_directory() && e.path().filename().string().rfind("step_", 0) == 0) out.push_back(e.path());
    std::sort(out.begin(), out.end());
    return out;
}

}  // namespace detail

// Writes a checkpoint of the trainer's model, optimizer, schedule and counters into dir/step_XXXXXXXX and
// keeps the newest keep_last (≥ 1) of them. data_state is the caller's data stream state, restored by load.
template <class Trainer>
fs::path save_checkpoint(const fs::path& dir, Trainer& tr, const nlohmann::json& data_state, int keep_last = 3) {
    require(keep_last >= 1, "checkpoint: expected keep_last >= 1, found {}", keep_last);
    auto& m = tr.model();
    using model_t = std::remove_reference_t<decltype(m)>;
    using T = typename model_t::value_type;
    using B = typename model_t::backend_type;
    using M = accum_t<T>;  // what is saved: the parameters, or a bf16 model's fp32 master weights
    std::error_code ec;
    fs::create_directories(dir, ec);
    require(!ec && fs::is_directory(dir), "checkpoint: cannot create the directory '{}': {}", dir.string(),
            ec ? ec.message() : "a file of that name exists");

    const fs::path final_dir = dir / detail::step_name(tr.steps());
    const fs::path tmp = dir / fmt::format(".{}.tmp.{}", detail::step_name(tr.steps()), ::getpid());
    fs::remove_all(tmp, ec);
    try {
        fs::create_directory(tmp, ec);
        require(!ec, "checkpoint: cannot create '{}': {}", tmp.string(), ec.message());

        io::safetensors_writer weights;
        const std::vector<M> params = detail::weights_to_host(tr);
        for (const auto& e : m.parameter_table())
            weights.add(e.name, e.shape, std::span<const M>(params.data() + e.offset, std::size_t(e.numel())));
        weights.set_metadata("format", checkpoint_format);
        weights.set_metadata("config", detail::shape_json(model_t::config).dump());
        weights.set_metadata("schedule", tr.schedule().to_json().dump());
        weights.set_metadata("step", std::to_string(tr.steps()));
        weights.write(tmp / "model.safetensors");

        io::safetensors_writer optim;
        auto& opt = tr.optimizer();
        const auto m1 = detail::to_host(B{}, opt.first_moment()), m2 = detail::to_host(B{}, opt.second_moment());
        for (const auto& e : m.parameter_table()) {
            const std::size_t n = std::size_t(e.numel());
            optim.add("exp_avg." + e.name, e.shape, std::span<const M>(m1.data() + e.offset, n));
            optim.add("exp_avg_sq." + e.name, e.shape, std::span<const M>(m2.data() + e.offset, n));
        }
        const auto& r = m.dropout_rng().state();
        optim.set_metadata("format", checkpoint_format);
        optim.set_metadata("trainer", tr.state_json().dump());
        optim.set_metadata("adamw_step", std::to_string(opt.steps()));
        optim.set_metadata("dropout_rng", nlohmann::json(std::vector<std::uint64_t>(r.begin(), r.end())).dump());
        optim.set_metadata("data", data_state.dump());
        optim.write(tmp / "optimizer.safetensors");

        detail::write_text_atomically(tmp / "config.json",
                                      detail::hf_config(model_t::config, sizeof(M) == 4 ? "float32" : "float64").dump(2));
        if (fs::exists(final_dir)) fs::remove_all(final_dir);
        fs::rename(tmp, final_dir);
        detail::write_text_atomically(dir / "latest", final_dir.filename().string() + "\n");
    } catch (const fs::filesystem_error& e) {
        fs::remove_all(tmp, ec);
        fail("checkpoint: cannot write '{}': {}", final_dir.string(), e.code().message());
    } catch (...) {
        fs::remove_all(tmp, ec);
        throw;
    }
    auto all = detail::step_dirs(dir);
    for (std::size_t i = 0; i + std::size_t(keep_last) < all.size(); ++i)
        if (all[i] != final_dir) fs::remove_all(all[i], ec);
    return final_dir;
}

// The checkpoint directory that `path` designates: a step directory itself, or the one DIR/latest names.
inline fs::path resolve_checkpoint(const fs::path& path) {
    if (fs::exists(path / "model.safetensors")) return path;
    const fs::path latest = path / "latest";
    std::ifstream in(latest);
    require(bool(in), "checkpoint: no checkpoint at '{}' (expected a step directory with model.safetensors, or a "
                      "directory with a 'latest' file)", path.string());
    std::string name;
    std::getline(in, name);
    const fs::path dir = path / name;
    require(!name.empty() && fs::exists(dir / "model.safetensors"),
            "checkpoint: '{}' names '{}', which holds no model.safetensors", latest.string(), name);
    return dir;
}

namespace detail {
inline void check_format(const io::safetensors& f) {
    const auto it = f.metadata().find("format");
    require(it != f.metadata().end() && it->second == checkpoint_format, "{}: expected format '{}', found '{}'",
            f.source(), checkpoint_format, it == f.metadata().end() ? "none" : it->second);
}
}  // namespace detail

// Opens the model.safetensors of the checkpoint at `path` (see resolve_checkpoint) and checks that it is an sgt
// checkpoint of Model's compile-time config holding exactly the tensors of `table` (by default Model's own,
// with a default-constructed variant's).
template <class Model>
io::safetensors open_weights(const fs::path& path, const parameter_table& table = Model::make_parameter_table()) {
    auto weights = io::safetensors::from_file(resolve_checkpoint(path) / "model.safetensors");
    detail::check_format(weights);
    const auto config = detail::parse_metadata(weights, "config");
    const auto expected = detail::shape_json(Model::config);
    require(config == expected, "{}: the checkpoint's model config {} differs from this model's {}", weights.source(),
            config.dump(), expected.dump());
    for (const auto& e : table)
        require(weights.contains(e.name), "{}: expected a tensor '{}', found none", weights.source(), e.name);
    require(weights.size() == table.size(), "{}: expected the model's {} tensors, found {}", weights.source(),
            table.size(), weights.size());
    return weights;
}

// Weights only (inference, export): loads a checkpoint's parameters into `m`; returns its schedule's JSON (Θ).
template <class Model>
nlohmann::json load_weights(const fs::path& path, Model& m) {
    using T = typename Model::value_type;
    using M = accum_t<T>;
    const auto weights = open_weights<Model>(path, m.parameter_table());
    std::vector<M> params(m.parameters().size());
    for (const auto& e : m.parameter_table())
        weights.template read_into<M>(e.name, e.shape, std::span<M>(params.data() + e.offset, std::size_t(e.numel())));
    if constexpr (std::is_same_v<T, M>) {
        m.parameters_from_host(params);
    } else {  // a mixed-precision model runs on the rounding of the saved fp32 weights
        const std::vector<T> rounded(params.begin(), params.end());
        m.parameters_from_host(rounded);
    }
    return detail::parse_metadata(weights, "schedule");
}

// Loads a checkpoint into the trainer (model weights, optimizer, schedule, counters, dropout RNG) after
// checking that it was written by a model of the same compile-time config. Returns the caller's data state.
// Nothing is modified when the checkpoint does not fit or is corrupt.
template <class Trainer>
nlohmann::json load_checkpoint(const fs::path& path, Trainer& tr) {
    auto& m = tr.model();
    using model_t = std::remove_reference_t<decltype(m)>;
    using T = typename model_t::value_type;
    const fs::path dir = resolve_checkpoint(path);
    const auto weights = open_weights<model_t>(dir, m.parameter_table());
    const auto optim = io::safetensors::from_file(dir / "optimizer.safetensors");
    detail::check_format(optim);
    const auto schedule = detail::parse_metadata(weights, "schedule");
    const auto trainer_state = detail::parse_metadata(optim, "trainer");
    const auto dropout = detail::parse_metadata(optim, "dropout_rng");
    const auto data = detail::parse_metadata(optim, "data");

    // Read everything first, then commit: a failure leaves the trainer as it was.
    using M = accum_t<T>;  // the saved weights and moments (fp32 master weights for a bf16 model)
    std::vector<M> params(m.parameters().size()), m1(params.size()), m2(params.size());
    for (const auto& e : m.parameter_table()) {
        const std::span<M> p(params.data() + e.offset, std::size_t(e.numel()));
        weights.template read_into<M>(e.name, e.shape, p);
        optim.template read_into<M>("exp_avg." + e.name, e.shape, std::span<M>(m1.data() + e.offset, p.size()));
        optim.template read_into<M>("exp_avg_sq." + e.name, e.shape, std::span<M>(m2.data() + e.offset, p.size()));
    }
    rng::state_type rs{};
    const auto words = dropout.get<std::vector<std::uint64_t>>();
    require(words.size() == rs.size(), "{}: expected 4 words of dropout RNG state, found {}", optim.source(),
            words.size());
    std::copy(words.begin(), words.end(), rs.begin());
    const int adamw_step = std::stoi(optim.metadata().at("adamw_step"));

    tr.schedule().load_json(schedule);  // validates before it changes anything
    using B = typename model_t::backend_type;
    if constexpr (std::is_same_v<T, M>)
        m.parameters_from_host(params);
    else
        tr.optimizer().load_master_weights(params, m.parameters());
    copy_from_host(B{}, tr.optimizer().first_moment().data(), m1.data(), std::int64_t(m1.size()));
    copy_from_host(B{}, tr.optimizer().second_moment().data(), m2.data(), std::int64_t(m2.size()));
    tr.optimizer().set_steps(adamw_step);
    m.dropout_rng().set_state(rs);
    tr.load_state_json(trainer_state);
    return data;
}

}  // namespace sgt
