// The outside oracle: tools/make_fixtures.py builds the same `tiny` model in PyTorch (float64) and writes its
// weights, a batch, the logits, the loss, every gradient, the first-pass entropies and the losses of 10 AdamW
// steps, for three loop plans (vanilla, head loops with a fade step, Block Loop). The C++ model must match:
// in float, logits and gradients within 1e-4 relative and the 10 losses within 1e-5; in double, far tighter.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include <cmath>

#include "sgt/io/safetensors.hpp"
#include "sgt/model.hpp"
#include "sgt/train/adamw.hpp"
#include "sgt/train/lr_schedule.hpp"

using namespace sgt;

namespace {

std::string fixture(const char* name) { return std::string(SGT_FIXTURE_DIR) + "/" + name; }

loop_plan plan_from_json(const std::string& text) {
    const auto j = nlohmann::json::parse(text);
    loop_plan p;
    for (const auto& l : j.at("layers"))
        p.layers.push_back(layer_loop{.k = l.at("k").get<int>(),
                                      .heads = l.at("heads").get<std::vector<int>>(),
                                      .fade = l.at("fade").get<double>(),
                                      .block_repeat = l.at("block_repeat").get<int>()});
    return p;
}

// max |a − b| / max |b|: the error relative to the tensor's scale.
template <class A, class B>
double rel_error(const A& a, const B& b) {
    REQUIRE(a.size() == b.size());
    double diff = 0.0, scale = 0.0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        diff = std::max(diff, std::abs(double(a[i]) - double(b[i])));
        scale = std::max(scale, std::abs(double(b[i])));
    }
    REQUIRE(scale > 0.0);
    return diff / scale;
}

template <class T>
void check_fixture(const char* file, double tol_fwd, double tol_train) {
    const std::string file_name = file;
    CAPTURE(file_name);
    const auto f = io::safetensors::from_file(fixture(file));
    const loop_plan plan = plan_from_json(f.metadata().at("plan"));
    const int B = std::stoi(f.metadata().at("B")), T_ = std::stoi(f.metadata().at("T"));
    model<T, presets::tiny> m(B, T_);
    for (const auto& e : m.parameter_table()) {
        const auto w = f.read_as<T>(e.name, e.shape);
        std::copy(w.begin(), w.end(), m.parameter(e.name).begin());
    }
    batch b{B, T_, f.read_as<std::int32_t>("batch.inputs"), f.read_as<std::int32_t>("batch.targets")};

    m.zero_grad();
    const double loss = m.forward(b, plan);
    const std::vector<double> logits(m.logits().begin(), m.logits().end());
    m.backward();
    const auto ref_loss = f.read_as<double>("loss");
    CHECK(std::abs(loss - ref_loss[0]) / ref_loss[0] < tol_fwd);
    CHECK(rel_error(logits, f.read_as<double>("logits")) < tol_fwd);
    for (const auto& e : m.parameter_table()) {
        CAPTURE(e.name);
        CHECK(rel_error(m.gradient(e.name), f.read_as<double>("grad." + e.name)) < tol_fwd);
    }
    // Entropies are ≈ 1 at this initialisation: compare 1 − E, absolutely.
    const auto ent = f.read_as<double>("entropy");
    for (std::size_t i = 0; i < ent.size(); ++i) CHECK(std::abs(m.entropies().first_pass[i] - ent[i]) < 1e-7);

    // 10 AdamW steps on the same batch: lr_max 1e-2, 3 warm-up steps, cosine to 0.1×, clip 1.0, wd 0.1.
    const auto ref_losses = f.read_as<double>("train.losses");
    const auto ref_lrs = f.read_as<double>("train.lrs");
    const cosine_schedule lr{.lr_max = 1e-2, .warmup = 3, .total = 10, .min_ratio = 0.1};
    adamw<T> opt(m.parameter_table(), std::int64_t(m.parameters().size()));
    for (int t = 1; t <= 10; ++t) {
        CAPTURE(t);
        m.zero_grad();
        const double l = m.forward(b, plan);
        m.backward();
        CHECK(std::abs(l - ref_losses[t - 1]) / ref_losses[t - 1] < tol_train);
        CHECK(lr(t) == doctest::Approx(ref_lrs[t - 1]).epsilon(1e-14));
        opt.step(m.parameters(), m.gradients(), lr(t));  // clips to the global norm 1.0, then updates
    }
    const double final_loss = m.forward(b, plan);
    CHECK(std::abs(final_loss - f.read_as<double>("train.final_loss")[0]) / final_loss < tol_train);
    // After training the heads have sharpened (1 − E ≈ 3e-3): a sensitive check of the entropy path.
    const auto final_ent = f.read_as<double>("train.final_entropy");
    CHECK(rel_error(m.entropies().first_pass, final_ent) < (sizeof(T) == 4 ? 1e-4 : 1e-9));
}

}  // namespace

TEST_CASE("PyTorch fixtures, float: logits and gradients within 1e-4, 10 AdamW losses within 1e-5") {
    check_fixture<float>("tiny_vanilla.safetensors", 1e-4, 1e-5);
    check_fixture<float>("tiny_block.safetensors", 1e-4, 1e-5);
    // The loops plan's 10-step trajectory is ill-conditioned in single precision: PyTorch's own float32 run of
    // it drifts 5.9e-5 from its float64 run (vanilla 3.4e-6, block 1.8e-7; measured with tools/reference_model.py,
    // see tests/fixtures/README.md), so float gets 1e-4 there; the double test below holds it to 1e-10.
    check_fixture<float>("tiny_loops.safetensors", 1e-4, 1e-4);
}

TEST_CASE("PyTorch fixtures, double: the same to 1e-10") {
    for (const char* file : {"tiny_vanilla.safetensors", "tiny_loops.safetensors", "tiny_block.safetensors"})
        check_fixture<double>(file, 1e-10, 1e-10);
}
