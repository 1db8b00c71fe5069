// sgt/infer/load.hpp: an inference object from a checkpoint of examples/train or train_cuda: the weights, and
// the loop plan the model runs at the saved step (its Θ, a fade gain included) frozen as its structure.
#pragma once

#include <algorithm>
#include <filesystem>
#include <string>

#include "sgt/infer/engine.hpp"
#include "sgt/infer/structure.hpp"
#include "sgt/io/checkpoint.hpp"

namespace sgt {

// Loads the weights of the checkpoint at `path` (a step directory, or a directory with a `latest` file) into
// `inf` and freezes the checkpoint's loop plan; returns that plan. A checkpoint of a gated model (its "variant"
// metadata, gates.hpp) turns on the same gates (inference::set_gates); one written with σReparam loads as the
// weights its model runs on, Ŵ = (γ/σ) W (fold_sigma_reparam). Throws sgt::error, naming what differs, when the
// checkpoint was written by a model of another config.
template <class Inference>
loop_plan load_checkpoint_for_inference(const std::filesystem::path& path, Inference& inf) {
    const auto file = resolve_checkpoint(path) / "model.safetensors";
    const auto weights = io::safetensors::from_file(file);
    const auto names = weights.names();
    const auto is_sigma = [](const auto& n) { return n.ends_with(".sigma_gamma"); };
    const bool sigma = std::any_of(names.begin(), names.end(), is_sigma);
    const auto& meta = weights.metadata();
    const std::string where = file.string() + " (metadata \"variant\")";
    if (const auto it = meta.find("variant"); it != meta.end()) {
        inf.set_gates(gated_variant::options_from_json(json_parse(it->second, where), where));
    } else {
        const auto is_gate = [](const auto& n) { return n.ends_with(".self_attn.gate.weight"); };
        require(std::none_of(names.begin(), names.end(), is_gate),
                "{}: holds learned head gates but no record of their options (metadata \"variant\"): it was "
                "written by an older version; train it again to decode with its gates", file.string());
    }
    nlohmann::json schedule;
    if (sigma) {
        parameter_table table = inf.parameter_table();
        add_sigma_reparam_parameters(Inference::shape, table);
        const parameter_table state = sigma_reparam_state_table(Inference::shape, table);
        detail::check_weights<Inference>(weights, table, state);
        inf.load_folded([&](const std::string& name) { return weights.template read_as<double>(name); });
        schedule = detail::parse_metadata(weights, "schedule");
    } else {
        schedule = load_weights(weights, inf);
    }
    loop_plan plan = plan_of_schedule(schedule, Inference::NL, Inference::NH);
    inf.set_structure(plan);
    return plan;
}

}  // namespace sgt
