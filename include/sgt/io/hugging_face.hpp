// sgt/io/hugging_face.hpp: importing a Hugging Face LlamaForCausalLM directory (config.json and
// model.safetensors, or shards listed by model.safetensors.index.json) into a model or an inference object of
// the preset of the same shape, so that a pretrained LLaMA can be sampled or trained on with SGT (weights only).
//
// config.json must describe this preset: hidden_size, intermediate_size, num_attention_heads (and as many key/
// value heads: no grouped-query attention), head_dim, num_hidden_layers, vocab_size, rms_norm_eps, rope_theta, no
// biases, SiLU, no RoPE scaling. The first field that differs is named in the error. Tensors are read by their
// Hugging Face names (the parameter table's), any float dtype, shapes checked; with tie_word_embeddings, the LM
// head is the embedding.
#pragma once

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <type_traits>
#include <vector>

#include "sgt/config.hpp"
#include "sgt/core/error.hpp"
#include "sgt/core/precision.hpp"
#include "sgt/io/safetensors.hpp"

namespace sgt {

namespace detail {

inline nlohmann::json read_json_file(const std::filesystem::path& p) {
    std::ifstream in(p);
    require(bool(in), "hugging face: cannot read '{}': expected a file there", p.string());
    try {
        return nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
        fail("hugging face: '{}' is not valid JSON: {}", p.string(), e.what());
    }
}

// Throws at the first field of config.json that does not describe `c`.
inline void check_hf_config(const nlohmann::json& j, const model_config& c, const std::string& where) {
    const auto& s = c.shape;
    const auto type = j.value("model_type", nlohmann::json());
    const auto arch = j.value("architectures", nlohmann::json());
    const bool llama_type = type.is_null() || type == "llama";
    const bool llama_arch = arch.is_null() || (arch.is_array() && std::find(arch.begin(), arch.end(), "LlamaForCausalLM") != arch.end());
    require(llama_type && llama_arch,
            "{}: expected a LlamaForCausalLM (model_type \"llama\"), found model_type {} and architectures {}", where,
            type.dump(), arch.dump());
    auto integer = [&](const char* key, long expected, bool optional = false) {
        if (!j.contains(key) || j.at(key).is_null()) {
            require(optional, "{}: expected \"{}\" = {}, found none", where, key, expected);
            return;
        }
        const auto found = j.at(key);
        require(found.is_number_integer() && found.get<long>() == expected,
                "{}: \"{}\" is {}, the preset expects {}", where, key, found.dump(), expected);
    };
    integer("hidden_size", s.width());
    integer("intermediate_size", s.d_ff);
    integer("num_attention_heads", s.heads);
    integer("num_key_value_heads", s.heads, true);
    integer("head_dim", s.head_dim, true);
    integer("num_hidden_layers", s.layers);
    integer("vocab_size", s.vocab);
    auto real = [&](const char* key, double expected, double found) {
        require(std::abs(found - expected) <= 1e-9 * std::abs(expected), "{}: \"{}\" is {}, the preset expects {}",
                where, key, found, expected);
    };
    real("rms_norm_eps", c.norm_eps, j.value("rms_norm_eps", 1e-6));
    double theta = 10000.0;
    if (j.contains("rope_theta")) theta = j.at("rope_theta").get<double>();
    else if (j.contains("rope_parameters") && j.at("rope_parameters").contains("rope_theta"))
        theta = j.at("rope_parameters").at("rope_theta").get<double>();
    real("rope_theta", c.rope_base, theta);
    const auto scaling = j.value("rope_scaling", nlohmann::json());
    const std::string rope_type =
        j.contains("rope_parameters") ? j.at("rope_parameters").value("rope_type", std::string("default")) : "default";
    require(scaling.is_null() && rope_type == "default", "{}: expected plain RoPE, found rope scaling {} (rope_type {})",
            where, scaling.dump(), rope_type);
    require(!j.value("attention_bias", false), "{}: expected \"attention_bias\" false, found true", where);
    require(!j.value("mlp_bias", false), "{}: expected \"mlp_bias\" false, found true", where);
    const std::string act = j.value("hidden_act", std::string("silu"));
    require(act == "silu", "{}: \"hidden_act\" is \"{}\", the preset expects \"silu\"", where, act);
}

}  // namespace detail

// Loads the Hugging Face LLaMA directory `dir` into `target` (an sgt::model or sgt::inference of the preset of
// the same shape: anything with parameter_table(), parameters() and parameters_from_host()).
template <class Target>
void load_hugging_face(const std::filesystem::path& dir, Target& target) {
    namespace fs = std::filesystem;
    using T = typename Target::value_type;
    using M = accum_t<T>;
    require(fs::is_directory(dir), "hugging face: '{}' is not a directory; expected one with config.json and "
                                   "model.safetensors", dir.string());
    const nlohmann::json config = detail::read_json_file(dir / "config.json");
    detail::check_hf_config(config, Target::config, (dir / "config.json").string());
    const bool tied = config.value("tie_word_embeddings", false);

    // Which file holds each tensor: one file, or the shards of the index's weight_map.
    std::map<std::string, std::string> file_of;
    const fs::path index = dir / "model.safetensors.index.json";
    if (fs::exists(index)) {
        const auto j = detail::read_json_file(index);
        require(j.contains("weight_map") && j.at("weight_map").is_object(),
                "hugging face: '{}' has no \"weight_map\" object", index.string());
        for (const auto& item : j.at("weight_map").items()) file_of[item.key()] = item.value().template get<std::string>();
    } else {
        require(fs::exists(dir / "model.safetensors"),
                "hugging face: '{}' holds neither model.safetensors nor model.safetensors.index.json", dir.string());
    }
    std::map<std::string, io::safetensors> open;
    auto file_for = [&](const std::string& name) -> const io::safetensors* {
        std::string file = "model.safetensors";
        if (!file_of.empty()) {
            const auto it = file_of.find(name);
            if (it == file_of.end()) return nullptr;
            file = it->second;
        }
        auto f = open.find(file);
        if (f == open.end()) f = open.emplace(file, io::safetensors::from_file(dir / file)).first;
        return f->second.contains(name) ? &f->second : nullptr;
    };

    std::vector<M> params(target.parameters().size());
    for (const auto& e : target.parameter_table()) {
        std::string name = e.name;
        const io::safetensors* f = file_for(name);
        if (!f && tied && name == "lm_head.weight") f = file_for(name = "model.embed_tokens.weight");
        require(f != nullptr, "hugging face: '{}' has no tensor '{}' (expected every LLaMA weight of the preset)",
                dir.string(), e.name);
        f->template read_into<M>(name, e.shape, std::span<M>(params.data() + e.offset, std::size_t(e.numel())));
    }
    if constexpr (std::is_same_v<T, M>) {
        target.parameters_from_host(params);
    } else {
        const std::vector<T> rounded(params.begin(), params.end());
        target.parameters_from_host(rounded);
    }
}

}  // namespace sgt
