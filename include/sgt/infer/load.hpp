// sgt/infer/load.hpp: an inference object from a checkpoint of examples/train or train_cuda: the weights, and
// the loop plan the model runs at the saved step (its Θ, a fade gain included) frozen as its structure.
#pragma once

#include <filesystem>

#include "sgt/infer/engine.hpp"
#include "sgt/infer/structure.hpp"
#include "sgt/io/checkpoint.hpp"

namespace sgt {

// Loads the weights of the checkpoint at `path` (a step directory, or a directory with a `latest` file) into
// `inf` and freezes the checkpoint's loop plan; returns that plan. Throws sgt::error, naming what differs,
// when the checkpoint was written by a model of another config.
template <class Inference>
loop_plan load_checkpoint_for_inference(const std::filesystem::path& path, Inference& inf) {
    const auto schedule = load_weights(path, inf);
    loop_plan plan = plan_of_schedule(schedule, Inference::NL, Inference::NH);
    inf.set_structure(plan);
    return plan;
}

}  // namespace sgt
