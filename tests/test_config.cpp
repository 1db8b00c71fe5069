// Compile-time configuration: the presets' parameter counts against the paper's Table 8, computed by hand.
#include <doctest/doctest.h>

#include <cmath>

#include "sgt/config.hpp"
#include "sgt/model.hpp"

using namespace sgt;

namespace {
// The paper quotes millions to one decimal.
double millions_1dp(std::int64_t n) { return std::round(double(n) / 1e5) / 10.0; }
}  // namespace

TEST_CASE("the paper's presets have the paper's parameter counts (Table 8: weight matrices, both embeddings)") {
    // 275M: layer 4·768² + 3·768·6144 = 2,359,296 + 14,155,776 = 16,515,072; ×12 = 198,180,864;
    //       embeddings 2·50304·768 = 77,266,944; P = 275,447,808 → 275.4M.
    CHECK(presets::p275m.shape.matrix_params() == 275'447'808);
    // 573M: layer 4·1024² + 3·1024·8192 = 4,194,304 + 25,165,824 = 29,360,128; ×16 = 469,762,048;
    //       embeddings 2·50304·1024 = 103,022,592; P = 572,784,640 → 572.8M.
    CHECK(presets::p573m.shape.matrix_params() == 572'784'640);
    // 1.2B: layer 4·1536² + 3·1536·12288 = 9,437,184 + 56,623,104 = 66,060,288; ×16 = 1,056,964,608;
    //       embeddings 2·50304·1536 = 154,533,888; P = 1,211,498,496 → 1211.5M.
    CHECK(presets::p1_2b.shape.matrix_params() == 1'211'498'496);
    CHECK(millions_1dp(presets::p275m.shape.matrix_params()) == 275.4);
    CHECK(millions_1dp(presets::p573m.shape.matrix_params()) == 572.8);
    CHECK(millions_1dp(presets::p1_2b.shape.matrix_params()) == 1211.5);
}

TEST_CASE("total parameters add the RMSNorm weights, and the model allocates exactly that many") {
    // char_small: layer 4·384² + 3·384·1024 = 589,824 + 1,179,648 = 1,769,472; ×6 = 10,616,832;
    //             embeddings 2·256·384 = 196,608; norms (2·6 + 1)·384 = 4,992; total 10,818,432 ≈ 10.8M.
    CHECK(presets::char_small.shape.total_params() == 10'818'432);
    // tiny: layer 4·32² + 3·32·64 = 4,096 + 6,144 = 10,240; ×4 = 40,960; embeddings 2·64·32 = 4,096;
    //       norms 9·32 = 288; total 45,344.
    CHECK(presets::tiny.shape.total_params() == 45'344);
    // char_micro (the demo): layer 4·64² + 3·64·256 = 16,384 + 49,152 = 65,536; ×4 = 262,144;
    //                        embeddings 2·256·64 = 32,768; norms 9·64 = 576; total 295,488 ≈ 0.30M.
    CHECK(presets::char_micro.shape.total_params() == 295'488);
    // gpt2 (the GPU benchmarks' size): layer 4·768² + 3·768·2048 = 2,359,296 + 4,718,592 = 7,077,888; ×12 =
    //       84,934,656; embeddings 2·50304·768 = 77,266,944; norms 25·768 = 19,200; total 162,220,800 ≈ 162.2M.
    CHECK(presets::gpt2.shape.total_params() == 162'220'800);
    // char_12l: layer 4·256² + 3·256·1024 = 262,144 + 786,432 = 1,048,576; ×12 = 12,582,912;
    //           embeddings 2·256·256 = 131,072; norms 25·256 = 6,400; total 12,720,384 ≈ 12.7M.
    CHECK(presets::char_12l.shape.total_params() == 12'720'384);
    // char_7m: layer 4·256² + 3·256·1152 = 262,144 + 884,736 = 1,146,880; ×6 = 6,881,280;
    //          embeddings 2·256·256 = 131,072; norms 13·256 = 3,328; total 7,015,680 ≈ 7.0M.
    CHECK(presets::char_7m.shape.total_params() == 7'015'680);
    // gpt2_12l: the same layers and norms; embeddings 2·50304·256 = 25,755,648; total 38,344,960 ≈ 38.3M.
    CHECK(presets::gpt2_12l.shape.total_params() == 38'344'960);
    CHECK(presets::gpt2_12l.shape.vocab == 50304);
    CHECK(presets::char_12l.shape.layers == 12);
    model<double, presets::tiny> m(1, 4);
    CHECK(m.parameters().size() == 45'344u);
    const auto& t = m.parameter_table();
    CHECK(t.size() == 1 + 9 * 4 + 2);
    CHECK(t.front().name == "model.embed_tokens.weight");
    CHECK(t.back().name == "lm_head.weight");
    CHECK(t.back().offset + t.back().numel() == 45'344);
}
