// sgt/io/checkpoint.hpp: checkpoints that resume a run bit for bit, and that no crash or full disk can lose.
//
// A checkpoint is a directory DIR/step_XXXXXXXX holding
//   model.safetensors      the weights under their Hugging Face LLaMA names, and the model's state that is not
//                          trained (σReparam's u, v: the model's state_table()); __metadata__ holds the model
//                          config and the growth state Θ (the schedule's JSON)
//   optimizer.safetensors  AdamW's moments ("exp_avg.<name>", "exp_avg_sq.<name>"); __metadata__ holds the
//                          trainer's counters, the dropout RNG and the caller's data state (RNG, shard position)
//   config.json            a Hugging Face LlamaConfig, so that a vanilla checkpoint loads as LlamaForCausalLM
// and DIR/latest names the newest one. Every tensor carries its CRC-32C (io/safetensors.hpp), checked on load.
//
// Saving never leaves `latest` naming anything but a complete step:
//   1. the checkpoint is written into DIR/.step_N.tmp.PID, every file fsynced, then the directory;
//   2. it is moved in as DIR/step_N: a rename when step_N is new; when step_N exists (a run resumed from an older
//      step, or re-saving a step), the two directories are exchanged atomically (renameat2 RENAME_EXCHANGE), so
//      that step_N is the old or the new checkpoint at every instant; on a file system that cannot exchange, the
//      old one is renamed aside to DIR/.step_N.old.PID, the new one renamed in, then the old one removed;
//   3. DIR/latest is replaced atomically (temporary file, fsync, rename, directory fsync);
//   4. the oldest steps beyond keep_last are removed.
// A failure at any point throws sgt::error and leaves every earlier checkpoint, and `latest`, intact. A process
// killed between the two renames of step 2 leaves .step_N.old.PID and a complete .step_N.tmp.PID: reading
// (resolve_checkpoint) finds the new checkpoint there, and the next save moves it into place
// (recover_interrupted_saves); temporary directories of dead processes are removed then too.
//
// Reading never trusts the files: `latest` must name a step directory inside DIR (step_ and digits); when the
// step it names is missing or incomplete, the newest intact step is used instead (and said so). Loading reads
// and validates everything (format, config, tensor names, shapes, checksums, every metadata field) into
// temporaries before it changes the trainer: a refused checkpoint leaves model, optimizer, schedule and
// counters exactly as they were.
#pragma once

#include <nlohmann/json.hpp>

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "sgt/backend/common.hpp"
#include "sgt/config.hpp"
#include "sgt/core/error.hpp"
#include "sgt/core/json.hpp"
#include "sgt/core/precision.hpp"
#include "sgt/core/rng.hpp"
#include "sgt/io/file.hpp"
#include "sgt/io/safetensors.hpp"
#include "sgt/loop_plan.hpp"
#include "sgt/params.hpp"
#include "sgt/sigma_reparam.hpp"

namespace sgt {

namespace fs = std::filesystem;

// The format this version writes: 2 adds the CRC-32C of every tensor, which it requires. Format 1 (no
// checksums) is still read.
inline constexpr const char* checkpoint_format = "sgt-checkpoint-2";
inline constexpr const char* checkpoint_format_v1 = "sgt-checkpoint-1";

namespace detail {

// The weights a checkpoint holds, on the host, in accum_t<T>: the parameters themselves, or for a
// mixed-precision (bf16) model the optimizer's fp32 master weights (`state.master`), of which the bf16 copy is a
// rounding.
template <class Trainer, class State>
auto weights_to_host(Trainer& tr, State& state) {
    auto& m = tr.model();
    using T = typename std::remove_reference_t<decltype(m)>::value_type;
    if constexpr (std::is_same_v<T, accum_t<T>>)
        return m.parameters_to_host();
    else
        return std::move(state.master);
}

// The state a model keeps beside its parameters, not trained (σReparam's u, v; sigma_reparam.hpp): its table,
// empty for a model without any, and for types that have none (the inference engine).
template <class Model>
const parameter_table& state_table_of(const Model& m) {
    if constexpr (requires { m.state_table(); }) {
        return m.state_table();
    } else {
        static const parameter_table none;
        return none;
    }
}

// The state's values read from `file` (every tensor of `state` must be there), in accum_t<T>.
template <class M>
std::vector<M> read_state(const io::safetensors& file, const parameter_table& state) {
    std::vector<M> out(std::size_t(state.numel()));
    for (const auto& e : state)
        file.template read_into<M>(e.name, e.shape, std::span<M>(out.data() + e.offset, std::size_t(e.numel())));
    return out;
}

// Commits state values read by read_state into the model (nothing for types without state).
template <class Model, class M>
void state_into(Model& m, const std::vector<M>& state) {
    if constexpr (requires { m.state_table(); }) {
        using T = typename Model::value_type;
        const std::vector<T> values(state.begin(), state.end());
        m.state_from_host(values);
    }
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

// The step number of a directory name "step_<digits>", or -1 for any other name.
inline long long step_of(std::string_view name) {
    if (!name.starts_with("step_") || name.size() == 5 || name.size() > 5 + 12) return -1;
    long long n = 0;
    for (char c : name.substr(5)) {
        if (c < '0' || c > '9') return -1;
        n = n * 10 + (c - '0');
    }
    return n;
}

// A step directory with all three files of a checkpoint (their contents are checked when loaded).
inline bool is_complete(const fs::path& step) {
    std::error_code ec;
    for (const char* f : {"model.safetensors", "optimizer.safetensors", "config.json"})
        if (!fs::is_regular_file(step / f, ec)) return false;
    return true;
}

// The step directories of DIR (complete or not), oldest first.
inline std::vector<fs::path> step_dirs(const fs::path& dir) {
    std::vector<std::pair<long long, fs::path>> found;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
        const long long n = step_of(e.path().filename().string());
        if (n >= 0 && e.is_directory(ec)) found.emplace_back(n, e.path());
    }
    std::sort(found.begin(), found.end());
    std::vector<fs::path> out;
    out.reserve(found.size());
    for (auto& [n, p] : found) out.push_back(std::move(p));
    return out;
}

// The newest complete step directory of DIR, if any.
inline std::optional<fs::path> newest_complete(const fs::path& dir) {
    const auto all = step_dirs(dir);
    for (auto it = all.rbegin(); it != all.rend(); ++it)
        if (is_complete(*it)) return *it;
    return std::nullopt;
}

// A temporary (".step_N.tmp.PID") or set-aside (".step_N.old.PID") directory of a save.
struct save_leftover {
    fs::path path;
    std::string step;  // "step_N"
    bool old = false;  // .old (set aside), else .tmp
    long pid = 0;
};

inline std::optional<save_leftover> parse_leftover(const fs::path& p) {
    const std::string name = p.filename().string();
    if (!name.starts_with(".step_")) return std::nullopt;
    const auto dot = name.find('.', 1);
    if (dot == std::string::npos) return std::nullopt;
    save_leftover l{p, name.substr(1, dot - 1), false, 0};
    const std::string rest = name.substr(dot);  // ".tmp.PID" or ".old.PID"
    if (rest.starts_with(".tmp."))
        l.old = false;
    else if (rest.starts_with(".old."))
        l.old = true;
    else
        return std::nullopt;
    const std::string pid = rest.substr(5);
    if (step_of(l.step) < 0 || pid.empty() || pid.size() > 9 ||
        !std::all_of(pid.begin(), pid.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return std::nullopt;
    l.pid = std::stol(pid);
    return l;
}

// True when another live process has that id (this process's own leftovers are from a failed earlier save).
inline bool other_process_alive(long pid) {
    if (pid == long(::getpid())) return false;
    return ::kill(pid_t(pid), 0) == 0 || errno == EPERM;
}

inline std::vector<save_leftover> leftovers(const fs::path& dir) {
    std::vector<save_leftover> out;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec))
        if (auto l = parse_leftover(e.path()); l && e.is_directory(ec)) out.push_back(std::move(*l));
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.path < b.path; });
    return out;
}

// Where an interrupted exchange of step `name` left the new checkpoint: a complete .tmp of a dead writer that
// also left the old one aside (so its tmp was complete before the swap began), when step_N itself is missing.
inline std::optional<fs::path> interrupted_swap(const fs::path& dir, const std::string& name) {
    std::error_code ec;
    if (fs::exists(dir / name, ec)) return std::nullopt;
    for (const auto& l : leftovers(dir))
        if (l.old && l.step == name && !other_process_alive(l.pid)) {
            const fs::path tmp = dir / fmt::format(".{}.tmp.{}", name, l.pid);
            if (is_complete(tmp)) return tmp;
        }
    return std::nullopt;
}

}  // namespace detail

// Finishes what dead writers left in DIR: a step set aside (.step_N.old.PID) whose replacement was not moved in
// gets the complete new one (.step_N.tmp.PID) moved in, or itself back; every other temporary or set-aside
// directory of a dead process (or of this one) is removed. Directories of live processes are left alone.
// Returns what it did, one line per action (empty when there was nothing to do).
inline std::vector<std::string> recover_interrupted_saves(const fs::path& dir) {
    std::vector<std::string> done;
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) return done;
    for (const auto& l : detail::leftovers(dir)) {
        if (!l.old || detail::other_process_alive(l.pid) || fs::exists(dir / l.step, ec)) continue;
        const fs::path tmp = dir / fmt::format(".{}.tmp.{}", l.step, l.pid);
        const fs::path from = detail::is_complete(tmp) ? tmp : l.path;
        io::rename_path(from, dir / l.step);
        io::fsync_dir(dir);
        done.push_back(fmt::format("moved the interrupted save '{}' into place as '{}'", from.string(), l.step));
    }
    for (const auto& l : detail::leftovers(dir)) {
        if (detail::other_process_alive(l.pid)) continue;
        if (const int e = io::try_remove_all(l.path))
            fail("checkpoint: cannot remove the leftover '{}': {}", l.path.string(), io::detail::errno_text(e));
        done.push_back(fmt::format("removed the leftover '{}'", l.path.string()));
    }
    return done;
}

namespace detail {

// Moves the complete directory `tmp` in as `final_dir` (see the header comment, step 2).
inline void install_step(const fs::path& dir, const fs::path& tmp, const fs::path& final_dir) {
    std::error_code ec;
    if (!fs::exists(final_dir, ec)) {
        io::rename_path(tmp, final_dir);
        io::fsync_dir(dir);
        return;
    }
    const int e = io::try_exchange(tmp, final_dir);
    if (e == 0) {  // tmp now holds the old checkpoint
        io::fsync_dir(dir);
        io::try_remove_all(tmp);
        return;
    }
    if (e != EINVAL && e != ENOSYS && e != EOPNOTSUPP)
        fail("cannot exchange '{}' with '{}': {}", tmp.string(), final_dir.string(), io::detail::errno_text(e));
    // The file system cannot exchange: set the old one aside, move the new one in, remove the old one.
    const fs::path old = dir / fmt::format(".{}.old.{}", final_dir.filename().string(), ::getpid());
    io::rename_path(final_dir, old);
    if (const int r = io::try_rename(tmp, final_dir)) {
        io::try_rename(old, final_dir);  // put the old one back; if even that fails, recovery finds it
        fail("cannot rename '{}' to '{}': {}", tmp.string(), final_dir.string(), io::detail::errno_text(r));
    }
    io::fsync_dir(dir);
    io::try_remove_all(old);
}

}  // namespace detail

// About the bytes one checkpoint of the trainer's model takes: weights and two moments, plus headers.
template <class Trainer>
std::int64_t checkpoint_bytes(Trainer& tr) {
    using model_t = std::remove_reference_t<decltype(tr.model())>;
    using M = accum_t<typename model_t::value_type>;
    return 3 * model_t::shape.total_params() * std::int64_t(sizeof(M)) + (std::int64_t(1) << 20);
}

// Checks, before a run spends time training, that checkpoints can be written into DIR: creates it, writes,
// fsyncs and removes a probe file there, and requires `bytes` free on its file system (a save writes the new
// checkpoint before it removes any). Throws sgt::error saying what is wrong.
inline void probe_checkpoint_dir(const fs::path& dir, std::int64_t bytes) {
    try {
        io::make_directories(dir);
        const fs::path probe = dir / fmt::format(".probe.{}", ::getpid());
        {
            io::output_file f(probe, io::output_file::mode::truncate);
            f.write(std::string_view("sgt checkpoint directory probe\n"));
            f.sync();
            f.close();
        }
        if (const int e = io::try_remove_all(probe))
            fail("cannot remove '{}': {}", probe.string(), io::detail::errno_text(e));
    } catch (const sgt::error& e) {
        fail("checkpoint: the directory '{}' is not writable: {}", dir.string(), e.what());
    }
    const std::int64_t free = io::free_bytes(dir);
    require(free < 0 || free >= bytes,
            "checkpoint: the directory '{}' has {} free, a checkpoint of this model takes about {}", dir.string(),
            io::human_bytes(double(free)), io::human_bytes(double(bytes)));
}

// Writes a checkpoint of the trainer's model, optimizer, schedule and counters into dir/step_XXXXXXXX and
// keeps the newest keep_last (≥ 1) of them. data_state is the caller's data stream state, restored by load.
// With a sharded optimizer (ZeRO-1, trainer::set_data_parallel) every rank calls it: the ranks' shares of the
// optimizer state are gathered on rank 0, which writes the checkpoint; the others return an empty path.
template <class Trainer>
fs::path save_checkpoint(const fs::path& dir, Trainer& tr, const nlohmann::json& data_state, int keep_last = 3) {
    require(keep_last >= 1, "checkpoint: expected keep_last >= 1, found {}", keep_last);
    auto& m = tr.model();
    auto& opt = tr.optimizer();
    auto optim_state = opt.state_to_host(m.parameters());  // sharded: collective, whole on rank 0 only
    if (!opt.shard().root) return {};
    using model_t = std::remove_reference_t<decltype(m)>;
    using T = typename model_t::value_type;
    using M = accum_t<T>;  // what is saved: the parameters, or a bf16 model's fp32 master weights
    try {
        io::make_directories(dir);
    } catch (const sgt::error& e) {
        fail("checkpoint: cannot create the directory '{}': {}", dir.string(), e.what());
    }
    const std::string name = detail::step_name(tr.steps());
    fs::path final_dir = dir / name;
    const fs::path tmp = dir / fmt::format(".{}.tmp.{}", name, ::getpid());
    try {
        recover_interrupted_saves(dir);
        if (const int e = io::try_remove_all(tmp)) fail("cannot remove '{}': {}", tmp.string(), io::detail::errno_text(e));
        if (const int e = io::try_mkdir(tmp)) fail("cannot create '{}': {}", tmp.string(), io::detail::errno_text(e));

        io::safetensors_writer weights;
        const std::vector<M> params = detail::weights_to_host(tr, optim_state);
        for (const auto& e : m.parameter_table())
            weights.add(e.name, e.shape, std::span<const M>(params.data() + e.offset, std::size_t(e.numel())));
        const auto state = m.state_to_host();
        const std::vector<M> state_m(state.begin(), state.end());
        for (const auto& e : m.state_table())
            weights.add(e.name, e.shape, std::span<const M>(state_m.data() + e.offset, std::size_t(e.numel())));
        weights.set_metadata("format", checkpoint_format);
        weights.set_metadata("config", detail::shape_json(model_t::config).dump());
        weights.set_metadata("schedule", tr.schedule().to_json().dump());
        weights.set_metadata("step", std::to_string(tr.steps()));
        if constexpr (requires { m.variant().to_json(); })  // a variant with options of its own (gates.hpp)
            weights.set_metadata("variant", m.variant().to_json().dump());
        weights.write(tmp / "model.safetensors");

        io::safetensors_writer optim;
        const auto &m1 = optim_state.m, &m2 = optim_state.v;
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

        io::write_file_atomically(tmp / "config.json",
                                  detail::hf_config(model_t::config, sizeof(M) == 4 ? "float32" : "float64").dump(2));
        io::fsync_dir(tmp);
        detail::install_step(dir, tmp, final_dir);
        io::write_file_atomically(dir / "latest", name + "\n");
    } catch (const sgt::error& e) {
        io::try_remove_all(tmp);
        const auto newest = detail::newest_complete(dir);
        fail("checkpoint: cannot save step {} into '{}': {}; {}", tr.steps(), dir.string(), e.what(),
             newest ? fmt::format("the newest intact checkpoint is '{}'", newest->string())
                    : std::string("no earlier checkpoint is there"));
    }
    const auto all = detail::step_dirs(dir);
    for (std::size_t i = 0; i + std::size_t(keep_last) < all.size(); ++i)
        if (all[i] != final_dir) io::try_remove_all(all[i]);
    return final_dir;
}

// The checkpoint directory that `path` designates: a step directory itself, or the one DIR/latest names. When
// `latest` is missing, or names a step that is missing or incomplete, the newest complete step of DIR is used
// (or the new checkpoint of a save interrupted between its renames); `note`, when given, then says so.
inline fs::path resolve_checkpoint(const fs::path& path, std::string* note = nullptr) {
    std::error_code ec;
    if (fs::is_regular_file(path / "model.safetensors", ec)) return path;
    require(fs::is_directory(path, ec),
            "checkpoint: no checkpoint at '{}' (expected a step directory with model.safetensors, or a directory "
            "with a 'latest' file)",
            path.string());
    const fs::path latest = path / "latest";
    std::string why;
    if (fs::exists(latest, ec)) {
        std::string name = io::read_prefix(latest, 4096);
        while (!name.empty() && (name.back() == '\n' || name.back() == '\r' || name.back() == ' ' ||
                                 name.back() == '\t'))
            name.pop_back();
        require(detail::step_of(name) >= 0,
                "checkpoint: '{}' must name a step directory beside it (step_ and digits), found \"{}\"",
                latest.string(), detail::clip(name, 80));
        if (detail::is_complete(path / name)) return path / name;
        if (const auto tmp = detail::interrupted_swap(path, name)) {
            if (note) *note = fmt::format("'{}' names '{}', whose save was interrupted; its new contents are in '{}'",
                                          latest.string(), name, tmp->string());
            return *tmp;
        }
        why = fmt::format("'{}' names '{}', which {}", latest.string(), name,
                          fs::exists(path / name, ec) ? "is incomplete" : "does not exist");
    } else {
        why = fmt::format("'{}' does not exist", latest.string());
    }
    const auto newest = detail::newest_complete(path);
    require(newest.has_value(),
            "checkpoint: no checkpoint at '{}': {}, and the directory holds no complete step (expected step_* "
            "directories with model.safetensors, optimizer.safetensors and config.json)",
            path.string(), why);
    if (note) *note = fmt::format("{}; using the newest complete checkpoint, '{}'", why, newest->string());
    return *newest;
}

namespace detail {

inline void check_format(const io::safetensors& f) {
    const auto it = f.metadata().find("format");
    const bool v2 = it != f.metadata().end() && it->second == checkpoint_format;
    const bool v1 = it != f.metadata().end() && it->second == checkpoint_format_v1;
    require(v1 || v2, "{}: expected format '{}' (or '{}'), found '{}'", f.source(), checkpoint_format,
            checkpoint_format_v1, it == f.metadata().end() ? "none" : clip(it->second, 80));
    require(v1 || f.metadata().contains(std::string(io::checksum_key)),
            "{}: expected the CRC-32C of every tensor (metadata '{}') in a '{}' checkpoint, found none", f.source(),
            io::checksum_key, checkpoint_format);
}

inline nlohmann::json parse_metadata(const io::safetensors& f, const std::string& key) {
    const auto& m = f.metadata();
    const auto it = m.find(key);
    require(it != m.end(), "{}: expected metadata '{}', found none", f.source(), key);
    return json_parse(it->second, fmt::format("{}: metadata '{}'", f.source(), key));
}

// A metadata value that is a decimal integer in [0, INT_MAX].
inline int metadata_count(const io::safetensors& f, const std::string& key) {
    const auto& m = f.metadata();
    const auto it = m.find(key);
    require(it != m.end(), "{}: expected metadata '{}', found none", f.source(), key);
    const std::string& s = it->second;
    long long v = 0;
    bool ok = !s.empty() && s.size() <= 10;
    for (char c : s) ok = ok && c >= '0' && c <= '9';
    if (ok) v = std::stoll(s);
    require(ok && v <= std::numeric_limits<int>::max(),
            "{}: metadata '{}' must be a non-negative integer, found \"{}\"", f.source(), key, clip(s, 80));
    return int(v);
}

// An RNG state saved as a JSON list of 4 unsigned 64-bit words, not all zero.
inline rng::state_type rng_state_from_json(const nlohmann::json& j, std::string_view where) {
    rng::state_type s{};
    bool ok = j.is_array() && j.size() == s.size();
    for (std::size_t i = 0; ok && i < s.size(); ++i) {
        ok = j[i].is_number_unsigned() || (j[i].is_number_integer() && j[i].get<std::int64_t>() >= 0);
        if (ok) s[i] = j[i].get<std::uint64_t>();
    }
    require(ok, "{}: expected an RNG state of 4 unsigned 64-bit integers, found {}", where, describe(j));
    require(std::any_of(s.begin(), s.end(), [](std::uint64_t w) { return w != 0; }),
            "{}: expected an RNG state that is not all zeros (xoshiro256** never leaves that state)", where);
    return s;
}

// Checks that `weights` is an sgt checkpoint of Model's compile-time config holding exactly the tensors of `table`
// and of `state` (the model's state_table()).
template <class Model>
void check_weights(const io::safetensors& weights, const parameter_table& table, const parameter_table& state = {}) {
    check_format(weights);
    const auto config = parse_metadata(weights, "config");
    const auto expected = shape_json(Model::config);
    require(config == expected, "{}: the checkpoint's model config {} differs from this model's {}", weights.source(),
            clip(config.dump(), 400), expected.dump());
    for (const auto& e : table)
        require(weights.contains(e.name), "{}: expected a tensor '{}', found none{}", weights.source(), e.name,
                is_sigma_gamma(e) ? " (this model has σReparam on, the checkpoint was written without it)" : "");
    for (const auto& e : state)
        require(weights.contains(e.name), "{}: expected a tensor '{}', found none", weights.source(), e.name);
    const auto names = weights.names();
    const bool sigma = std::any_of(names.begin(), names.end(), [](const auto& n) { return n.ends_with(".sigma_gamma"); });
    require(weights.size() == table.size() + state.size(), "{}: expected the model's {} tensors, found {}{}",
            weights.source(), table.size() + state.size(), weights.size(),
            sigma && state.size() == 0 ? " (the checkpoint was written with σReparam on, this model has it off)" : "");
}

inline void check_moments(const io::safetensors& optim, const parameter_table& table) {
    check_format(optim);
    for (const auto& e : table)
        for (const char* p : {"exp_avg.", "exp_avg_sq."})
            require(optim.contains(p + e.name), "{}: expected a tensor '{}{}', found none", optim.source(), p, e.name);
    require(optim.size() == 2 * table.size(), "{}: expected the model's {} moment tensors, found {}", optim.source(),
            2 * table.size(), optim.size());
}

struct no_data_check {
    void operator()(const nlohmann::json&) const {}
};

}  // namespace detail

// Weights only (inference, export): loads a checkpoint's parameters into `m`; returns its schedule's JSON (Θ).
// The first form takes a checkpoint's model.safetensors already read (checked here against m's tensors).
template <class Model>
nlohmann::json load_weights(const io::safetensors& weights, Model& m) {
    using T = typename Model::value_type;
    using M = accum_t<T>;
    detail::check_weights<Model>(weights, m.parameter_table(), detail::state_table_of(m));
    auto schedule = detail::parse_metadata(weights, "schedule");
    std::vector<M> params(m.parameters().size());
    for (const auto& e : m.parameter_table())
        weights.template read_into<M>(e.name, e.shape, std::span<M>(params.data() + e.offset, std::size_t(e.numel())));
    detail::state_into(m, detail::read_state<M>(weights, detail::state_table_of(m)));
    if constexpr (std::is_same_v<T, M>) {
        m.parameters_from_host(params);
    } else {  // a mixed-precision model runs on the rounding of the saved fp32 weights
        const std::vector<T> rounded(params.begin(), params.end());
        m.parameters_from_host(rounded);
    }
    return schedule;
}
template <class Model>
nlohmann::json load_weights(const fs::path& path, Model& m) {
    return load_weights(io::safetensors::from_file(resolve_checkpoint(path) / "model.safetensors"), m);
}

// Weights only, into a model with tensors the checkpoint lacks (a gated model distilled from a dense run,
// train --distill-gates): the checkpoint must be of Model's config, each of its tensors one of m's, and each of m's
// tensors it lacks one that may_be_new(entry) accepts; those keep their current values. Checked before anything
// is loaded. Returns the checkpoint's schedule JSON.
template <class Model, class Pred>
nlohmann::json load_weights_subset(const fs::path& path, Model& m, Pred may_be_new) {
    using T = typename Model::value_type;
    using M = accum_t<T>;
    const auto weights = io::safetensors::from_file(resolve_checkpoint(path) / "model.safetensors");
    detail::check_format(weights);
    const auto config = detail::parse_metadata(weights, "config");
    const auto expected = detail::shape_json(Model::config);
    require(config == expected, "{}: the checkpoint's model config {} differs from this model's {}", weights.source(),
            detail::clip(config.dump(), 400), expected.dump());
    std::size_t found = 0;
    for (const auto& e : m.parameter_table()) {
        if (weights.contains(e.name)) {
            ++found;
            continue;
        }
        require(may_be_new(e), "{}: expected a tensor '{}', found none", weights.source(), e.name);
    }
    const auto& state = detail::state_table_of(m);  // σReparam's u, v: loaded when there, else kept
    for (const auto& e : state) found += weights.contains(e.name) ? 1 : 0;
    require(weights.size() == found, "{}: holds {} tensors that this model does not have", weights.source(),
            weights.size() - found);
    auto schedule = detail::parse_metadata(weights, "schedule");
    const auto current = m.parameters_to_host();
    std::vector<M> params(current.begin(), current.end());
    for (const auto& e : m.parameter_table())
        if (weights.contains(e.name))
            weights.template read_into<M>(e.name, e.shape, std::span<M>(params.data() + e.offset, std::size_t(e.numel())));
    const std::vector<T> values(params.begin(), params.end());
    m.parameters_from_host(values);
    if (std::all_of(state.begin(), state.end(), [&](const auto& e) { return weights.contains(e.name); }))
        detail::state_into(m, detail::read_state<M>(weights, state));
    return schedule;
}

// Loads a checkpoint, given as its two parsed files, into the trainer (model weights, optimizer, schedule,
// counters, dropout RNG) after checking that it was written by a model of the same compile-time config.
// check_data(data) may refuse the caller's data state by throwing sgt::error. Returns that data state.
// Everything is read and validated first; when anything is refused, the trainer is unchanged.
template <class Trainer, class DataCheck = detail::no_data_check>
nlohmann::json load_checkpoint(const io::safetensors& weights, const io::safetensors& optim, Trainer& tr,
                               DataCheck check_data = {}) {
    auto& m = tr.model();
    using model_t = std::remove_reference_t<decltype(m)>;
    using T = typename model_t::value_type;
    using M = accum_t<T>;  // the saved weights and moments (fp32 master weights for a bf16 model)
    detail::check_weights<model_t>(weights, m.parameter_table(), m.state_table());
    detail::check_moments(optim, m.parameter_table());

    // 1. Read and validate everything into temporaries.
    const auto schedule = detail::parse_metadata(weights, "schedule");
    const std::string trainer_where = fmt::format("{}: metadata 'trainer'", optim.source());
    auto counters = [&] {
        try {
            return tr.parse_state_json(detail::parse_metadata(optim, "trainer"));
        } catch (const sgt::error& e) {
            fail("{}: {}", trainer_where, e.what());
        }
    }();
    const int adamw_step = detail::metadata_count(optim, "adamw_step");
    const rng::state_type dropout = detail::rng_state_from_json(
        detail::parse_metadata(optim, "dropout_rng"), fmt::format("{}: metadata 'dropout_rng'", optim.source()));
    auto data = detail::parse_metadata(optim, "data");
    check_data(data);
    std::vector<M> params(m.parameters().size()), m1(params.size()), m2(params.size());
    for (const auto& e : m.parameter_table()) {
        const std::span<M> p(params.data() + e.offset, std::size_t(e.numel()));
        weights.template read_into<M>(e.name, e.shape, p);
        optim.template read_into<M>("exp_avg." + e.name, e.shape, std::span<M>(m1.data() + e.offset, p.size()));
        optim.template read_into<M>("exp_avg_sq." + e.name, e.shape, std::span<M>(m2.data() + e.offset, p.size()));
    }
    const std::vector<M> state = detail::read_state<M>(weights, m.state_table());

    // 2. The schedule, which validates its own JSON; on a refusal it is put back as it was.
    const auto previous = tr.schedule().to_json();
    auto restore = [&] {
        try {
            tr.schedule().load_json(previous);
        } catch (...) {  // what to_json wrote, load_json takes back
        }
    };
    try {
        tr.schedule().load_json(schedule);
        validate_plan(tr.schedule().plan(), model_t::NL, model_t::NH, model_t::budget);
    } catch (const sgt::error& e) {
        restore();
        fail("{}: metadata 'schedule': {}", weights.source(), e.what());
    } catch (const nlohmann::json::exception& e) {
        restore();
        fail("{}: metadata 'schedule' is malformed: {}", weights.source(), detail::clip(e.what(), 300));
    }

    // 3. Commit: nothing below depends on the files any more.
    if constexpr (std::is_same_v<T, M>)
        m.parameters_from_host(params);
    else
        tr.optimizer().load_master_weights(params, m.parameters());
    tr.optimizer().load_moments(m1, m2);
    tr.optimizer().set_steps(adamw_step);
    detail::state_into(m, state);
    m.dropout_rng().set_state(dropout);
    tr.set_state(std::move(counters));
    return data;
}

// Loads the checkpoint at `path` (see resolve_checkpoint) into the trainer; see the overload above.
template <class Trainer, class DataCheck = detail::no_data_check>
nlohmann::json load_checkpoint(const fs::path& path, Trainer& tr, DataCheck check_data = {}) {
    const fs::path dir = resolve_checkpoint(path);
    const auto weights = io::safetensors::from_file(dir / "model.safetensors");
    const auto optim = io::safetensors::from_file(dir / "optimizer.safetensors");
    return load_checkpoint(weights, optim, tr, std::move(check_data));
}

}  // namespace sgt
