// Hugging Face import (io/hugging_face.hpp): a LlamaForCausalLM that transformers wrote (tools/make_hf_fixture.py,
// committed under tests/fixtures/hf_tiny) loads into the tiny preset, from one file in fp32 and from bf16 shards,
// and our logits match the ones transformers computed; cached generation from it matches the full forward; a
// directory of another shape is refused naming the first field that differs.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "../support.hpp"
#include "sgt/io/hugging_face.hpp"
#include "sgt/sgt.hpp"

namespace {

using namespace sgt;
namespace fs = std::filesystem;
using tiny_model = model<double, presets::tiny>;
const fs::path fixture = fs::path(SGT_FIXTURE_DIR) / "hf_tiny";

double max_abs_diff(std::span<const double> a, const std::vector<double>& b) {
    REQUIRE(a.size() == b.size());
    double d = 0.0;
    for (std::size_t i = 0; i < a.size(); ++i) d = std::max(d, std::abs(a[i] - b[i]));
    return d;
}

struct expected {
    std::vector<std::int32_t> ids;
    std::vector<double> fp32, bf16;
};
expected read_expected() {
    const auto f = io::safetensors::from_file(fixture / "expected.safetensors");
    return {f.read_as<std::int32_t>("input_ids"), f.read_as<double>("logits_fp32"), f.read_as<double>("logits_bf16")};
}

std::vector<double> logits_of(tiny_model& m, const std::vector<std::int32_t>& ids) {
    const int T = int(ids.size());
    m.forward(batch{1, T, ids, std::vector<std::int32_t>(ids.size(), 0)}, loop_plan::vanilla(tiny_model::NL));
    return {m.logits().begin(), m.logits().end()};
}

// A copy of the single-file fixture whose config.json has `key` set to `value`.
fs::path with_config(const std::string& key, const nlohmann::json& value) {
    const fs::path dir = fs::temp_directory_path() / ("sgt_hf_" + key);
    fs::remove_all(dir);
    fs::create_directories(dir);
    fs::copy_file(fixture / "single" / "model.safetensors", dir / "model.safetensors");
    std::ifstream in(fixture / "single" / "config.json");
    auto j = nlohmann::json::parse(in);
    j[key] = value;
    std::ofstream(dir / "config.json") << j.dump(2);
    return dir;
}

}  // namespace

TEST_CASE("a LlamaForCausalLM written by transformers gives transformers' logits (one fp32 file, bf16 shards)") {
    const auto e = read_expected();
    REQUIRE(e.ids.size() == 24);
    tiny_model m(1, 32);
    load_hugging_face(fixture / "single", m);
    const auto ours = logits_of(m, e.ids);
    double spread = 0.0;
    for (double x : e.fp32) spread = std::max(spread, std::abs(x));
    CHECK(spread > 0.5);  // the logits are not trivially small
    CHECK(max_abs_diff(ours, e.fp32) <= 2e-5);  // transformers computes in fp32, we in double

    REQUIRE(fs::exists(fixture / "sharded" / "model.safetensors.index.json"));
    tiny_model s(1, 32);
    load_hugging_face(fixture / "sharded", s);
    CHECK(max_abs_diff(logits_of(s, e.ids), e.bf16) <= 2e-5);
    CHECK(max_abs_diff(logits_of(s, e.ids), e.fp32) > 1e-4);  // the bf16 rounding shows: the shards were read

    // Straight into an inference object: prefill + decode give the same logits as the full forward.
    inference<double, presets::tiny> inf(1, 32, loop_plan::vanilla(tiny_model::NL));
    load_hugging_face(fixture / "single", inf);
    const std::vector<std::int32_t> prompt(e.ids.begin(), e.ids.begin() + 20);
    std::vector<double> cached;
    inf.prefill({prompt}, true);
    cached = inf.all_prefill_logits();
    for (std::size_t i = 20; i < e.ids.size(); ++i) {
        const auto l = inf.decode(std::vector<std::int32_t>{e.ids[i]});
        cached.insert(cached.end(), l.begin(), l.end());
    }
    CHECK(max_abs_diff(std::span<const double>(cached).first(ours.size() - 64), {ours.begin(), ours.end() - 64}) <= 1e-12);
}

TEST_CASE("a Hugging Face directory of another shape is refused naming the first field that differs") {
    using test::error_of;
    tiny_model m(1, 8);
    const auto before = m.parameters_to_host();
    auto refused = [&](const std::string& key, const nlohmann::json& value) {
        const fs::path dir = with_config(key, value);
        const std::string e = error_of([&] { load_hugging_face(dir, m); });
        fs::remove_all(dir);
        return e;
    };
    CHECK(test::contains(refused("intermediate_size", 96), "\"intermediate_size\" is 96, the preset expects 64"));
    CHECK(test::contains(refused("num_hidden_layers", 6), "\"num_hidden_layers\" is 6, the preset expects 4"));
    CHECK(test::contains(refused("num_key_value_heads", 2), "\"num_key_value_heads\" is 2, the preset expects 4"));
    CHECK(test::contains(refused("rope_theta", 500000.0), "\"rope_theta\" is 500000, the preset expects 10000"));
    CHECK(test::contains(refused("model_type", "gpt2"), "expected a LlamaForCausalLM"));
    CHECK(test::contains(refused("hidden_act", "gelu"), "\"hidden_act\" is \"gelu\", the preset expects \"silu\""));
    CHECK(m.parameters_to_host() == before);  // nothing was loaded
    CHECK(test::contains(error_of([&] { load_hugging_face(fixture / "missing", m); }), "is not a directory"));
    // A preset of another shape: the first difference is the width.
    model<double, presets::char_mini> other(1, 8);
    CHECK(test::contains(error_of([&] { load_hugging_face(fixture / "single", other); }),
                         "\"hidden_size\" is 32, the preset expects 128"));
}
