// Checkpoints: exact resume (20 steps straight = 10 steps, save, load into fresh objects, 10 steps: bit-identical
// losses and weights), with growth events in the second half and exactly at the save step, dropout on; and bad
// input: another shape, corrupt files, unwritable or full directories, with the previous checkpoint intact.
#include <doctest/doctest.h>

#include <csignal>
#include <cstring>
#include <fstream>
#include <sys/resource.h>

#include "../resume.hpp"

using namespace sgt;

namespace {

constexpr model_config tiny_bytes{
    .shape = {.layers = 4, .heads = 4, .head_dim = 8, .d_ff = 64, .vocab = 128, .max_seq = 32},
    .loops = presets::tiny.loops};
using model_t = model<float, tiny_bytes>;

// The run every test here checkpoints: batches of 4 x 24, 20 steps of cosine schedule, 3 k-hop symbols.
struct run_state : test::resumable_run<model_t> {
    explicit run_state(growth_options o) : resumable_run(o, 4, 24, 20, 3) {}
};

fs::path fresh_dir(const std::string& name) { return test::fresh_dir(name); }

void check_exact_resume(growth_options o, const std::string& name) {
    test::check_exact_resume([&] { return run_state(o); }, 20, name);
}

}  // namespace

TEST_CASE("exact resume: growth events in the second half") {
    growth_options o = growth_options::from_budget(tiny_bytes.loops);
    o.t_start = 4;
    o.dt = 3;  // decisions at 4, 7, 10, 13, 16, 19; fade windows across the save
    check_exact_resume(o, "second_half");
}

TEST_CASE("exact resume: a growth event exactly at the save step") {
    growth_options o = growth_options::from_budget(tiny_bytes.loops);
    o.t_start = 10;
    o.dt = 4;  // the first activation is decided at the end of step 10, then saved
    o.ema_alpha = 0.5;
    check_exact_resume(o, "at_save");
}

TEST_CASE("checkpoints: the newest keep_last are kept, and `latest` names the newest") {
    run_state s(growth_options::from_budget(tiny_bytes.loops));
    const fs::path dir = fresh_dir("keep");
    for (int i = 0; i < 4; ++i) {
        s.steps(1);
        save_checkpoint(dir, s.tr, s.data_state(), 2);
    }
    CHECK(detail::step_dirs(dir).size() == 2);
    CHECK(resolve_checkpoint(dir).filename() == "step_00000004");
    CHECK(fs::exists(dir / "step_00000003" / "config.json"));
    const auto hf = nlohmann::json::parse(std::ifstream(dir / "step_00000004" / "config.json"));
    CHECK(hf.at("architectures")[0] == "LlamaForCausalLM");
    CHECK(hf.at("num_hidden_layers") == 4);
    fs::remove_all(dir);
}

TEST_CASE("bad checkpoints give sgt::error and change nothing") {
    run_state s(growth_options::from_budget(tiny_bytes.loops));
    s.steps(2);
    const fs::path dir = fresh_dir("bad");
    save_checkpoint(dir, s.tr, s.data_state());
    const fs::path step = dir / "step_00000002";

    SUBCASE("a checkpoint of another shape") {
        constexpr model_config other{.shape = {.layers = 4, .heads = 2, .head_dim = 16, .d_ff = 64, .vocab = 128,
                                               .max_seq = 32},
                                     .loops = {.h = 2, .L = 3, .k_max = 3}};
        model<float, other> m2(4, 24);
        growth_operator<> g2(m2.shape, growth_options::from_budget(other.loops));
        trainer tr2(m2, g2, cosine_schedule{.lr_max = 1e-3, .warmup = 1, .total = 5}, adamw_options{}, 4, 24);
        const std::vector<float> before(m2.parameters().begin(), m2.parameters().end());
        try {
            load_checkpoint(dir, tr2);
            FAIL("no error");
        } catch (const sgt::error& e) {
            const std::string msg = e.what();
            CHECK(msg.find("the checkpoint's model config") != std::string::npos);
            CHECK(msg.find("\"heads\":4") != std::string::npos);  // found
            CHECK(msg.find("\"heads\":2") != std::string::npos);  // expected
        }
        CHECK(std::equal(before.begin(), before.end(), m2.parameters().begin()));
    }
    SUBCASE("a corrupt safetensors header") {
        std::fstream f(step / "model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(10);
        f.write("@@@@", 4);
        f.close();
        run_state t(growth_options::from_budget(tiny_bytes.loops));
        const std::vector<float> before(t.m.parameters().begin(), t.m.parameters().end());
        CHECK_THROWS_AS(load_checkpoint(dir, t.tr), sgt::error);
        CHECK(std::equal(before.begin(), before.end(), t.m.parameters().begin()));
        CHECK(t.tr.steps() == 0);
    }
    SUBCASE("no checkpoint at the path") {
        run_state t(growth_options::from_budget(tiny_bytes.loops));
        CHECK_THROWS_WITH_AS(load_checkpoint(dir / "nothing", t.tr),
                             doctest::Contains("no checkpoint at"), sgt::error);
    }
    fs::remove_all(dir);
}

TEST_CASE("a failed save leaves the previous checkpoint intact and loadable") {
    run_state s(growth_options::from_budget(tiny_bytes.loops));
    s.steps(2);
    const fs::path dir = fresh_dir("fail");
    save_checkpoint(dir, s.tr, s.data_state());
    s.steps(1);

    SUBCASE("the checkpoint directory is a file") {
        const fs::path file = fresh_dir("fail_file");
        std::ofstream(file) << "x";
        CHECK_THROWS_WITH_AS(save_checkpoint(file, s.tr, s.data_state()), doctest::Contains("cannot create the directory"),
                             sgt::error);
        fs::remove(file);
    }
    SUBCASE("the disk is full (a file-size limit makes writes fail with EFBIG)") {
        std::signal(SIGXFSZ, SIG_IGN);
        rlimit old{};
        getrlimit(RLIMIT_FSIZE, &old);
        rlimit small = old;
        small.rlim_cur = 4096;
        setrlimit(RLIMIT_FSIZE, &small);
        CHECK_THROWS_AS(save_checkpoint(dir, s.tr, s.data_state()), sgt::error);
        setrlimit(RLIMIT_FSIZE, &old);
        std::size_t tmp = 0;
        for (const auto& e : fs::directory_iterator(dir)) tmp += e.path().filename().string().find(".tmp") != std::string::npos;
        CHECK(tmp == 0);  // nothing half-written is left behind
    }
    SUBCASE("a read-only directory") {
        fs::permissions(dir, fs::perms::owner_read | fs::perms::owner_exec);
        const bool enforced = ::access(dir.c_str(), W_OK) != 0;  // root writes anyway
        if (enforced)
            CHECK_THROWS_AS(save_checkpoint(dir, s.tr, s.data_state()), sgt::error);
        else
            MESSAGE("running as root: permission bits do not stop writes, the read-only case is skipped");
        fs::permissions(dir, fs::perms::owner_all);
    }
    CHECK(resolve_checkpoint(dir).filename() == "step_00000002");
    run_state t(growth_options::from_budget(tiny_bytes.loops));
    CHECK_NOTHROW(load_checkpoint(dir, t.tr));
    CHECK(t.tr.steps() == 2);
    fs::remove_all(dir);
}
