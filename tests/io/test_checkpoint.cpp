// Checkpoints: exact resume (20 steps straight = 10 steps, save, load into fresh objects, 10 steps: bit-identical
// losses and weights), with growth events in the second half and exactly at the save step, dropout on; bad
// input: another shape, corrupt files and metadata, changed weight bytes, unwritable or full directories, with
// the previous checkpoint intact and a refused load changing nothing; and the save protocol under faults
// (io/file.hpp's injection seam, RLIMIT_FSIZE, and a child process killed between the two renames).
#include <doctest/doctest.h>

#include <sys/resource.h>
#include <sys/wait.h>

#include <csignal>
#include <cstring>
#include <fstream>
#include <tuple>

#include "../resume.hpp"
#include "../support.hpp"

using namespace sgt;

namespace {

using test::tiny_bytes;
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
        fs::permissions(dir, fs::perms::owner_all);
        // What a read-only file system answers, injected (so also as root): the same refusal.
        io::scoped_file_faults ro([](io::file_op op, const fs::path&) {
            return op == io::file_op::mkdir || op == io::file_op::open ? EROFS : 0;
        });
        CHECK_THROWS_WITH_AS(save_checkpoint(dir, s.tr, s.data_state()), doctest::Contains("Read-only file system"),
                             sgt::error);
    }
    SUBCASE("the disk fills up (injected ENOSPC): the message names the newest intact checkpoint") {
        io::scoped_file_faults full([](io::file_op op, const fs::path&) { return op == io::file_op::write ? ENOSPC : 0; });
        const std::string msg = test::error_of([&] { save_checkpoint(dir, s.tr, s.data_state()); });
        CHECK(msg.find("checkpoint: cannot save step 3 into") != std::string::npos);
        CHECK(msg.find("No space left on device") != std::string::npos);
        CHECK(msg.find(fmt::format("the newest intact checkpoint is '{}'", (dir / "step_00000002").string())) !=
              std::string::npos);
    }
    CHECK(resolve_checkpoint(dir).filename() == "step_00000002");
    run_state t(growth_options::from_budget(tiny_bytes.loops));
    CHECK_NOTHROW(load_checkpoint(dir, t.tr));
    CHECK(t.tr.steps() == 2);
    fs::remove_all(dir);
}

namespace {

// Everything a load may change, to compare before and after a refused one.
struct trainer_snapshot {
    std::vector<float> params, m1, m2;
    int adamw_steps = 0;
    nlohmann::json counters, schedule;
    rng::state_type dropout{};
    bool operator==(const trainer_snapshot&) const = default;
};
template <class Run>
trainer_snapshot snapshot(Run& r) {
    auto& opt = r.tr.optimizer();
    return {r.m.parameters_to_host(),
            std::vector<float>(opt.first_moment().begin(), opt.first_moment().end()),
            std::vector<float>(opt.second_moment().begin(), opt.second_moment().end()),
            opt.steps(),
            r.tr.state_json(),
            r.g.to_json(),
            r.m.dropout_rng().state()};
}

// Rewrites one metadata value of a safetensors file (nullopt: removes the key), keeping its tensors.
void rewrite_metadata(const fs::path& file, const std::string& key, std::optional<std::string> value) {
    const auto f = io::safetensors::from_file(file);
    io::safetensors_writer w;
    for (const auto& [k, v] : f.metadata())
        if (k != key && k != std::string(io::checksum_key)) w.set_metadata(k, v);
    if (value) w.set_metadata(key, *value);
    for (const auto& t : f.tensors()) w.add(t.name, t.type, t.shape, t.bytes);
    w.write(file);
}

// The names in a directory, sorted.
std::vector<std::string> entries(const fs::path& dir) {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
}

// The first weight of a checkpoint's model file: tells two checkpoints of the same step apart.
float first_weight(const fs::path& step_dir) {
    return io::safetensors::from_file(step_dir / "model.safetensors").read_as<float>("model.embed_tokens.weight")[0];
}

// Runs f in a child process and returns its exit status (f is expected to end it with _exit).
template <class F>
int in_child(F f) {
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        try {
            f();
        } catch (...) {
        }
        ::_exit(1);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// A process id that is certainly not running: a child that has exited and been reaped.
long dead_pid() {
    const pid_t pid = ::fork();
    if (pid == 0) ::_exit(0);
    ::waitpid(pid, nullptr, 0);
    return long(pid);
}

}  // namespace

TEST_CASE("saving onto an existing step: `latest` names a complete checkpoint at every point, faults included") {
    run_state s(growth_options::from_budget(tiny_bytes.loops));
    s.steps(2);
    const fs::path dir = fresh_dir("swap");
    save_checkpoint(dir, s.tr, s.data_state());
    const fs::path step = dir / "step_00000002";
    const float old_w = first_weight(step);
    s.m.parameters()[0] += 1.0f;  // the same step, recognisably different weights
    const float new_w = s.m.parameters()[0];

    SUBCASE("the exchange replaces it") {
        save_checkpoint(dir, s.tr, s.data_state());
        CHECK(first_weight(resolve_checkpoint(dir)) == new_w);
        CHECK(entries(dir) == std::vector<std::string>{"latest", "step_00000002"});
    }
    SUBCASE("EIO on the exchange: the old checkpoint stays, nothing is left behind") {
        io::scoped_file_faults eio([](io::file_op op, const fs::path&) { return op == io::file_op::exchange ? EIO : 0; });
        CHECK_THROWS_WITH_AS(save_checkpoint(dir, s.tr, s.data_state()), doctest::Contains("Input/output error"),
                             sgt::error);
        CHECK(first_weight(resolve_checkpoint(dir)) == old_w);
        CHECK(entries(dir) == std::vector<std::string>{"latest", "step_00000002"});
    }
    SUBCASE("no exchange on this file system, EIO on the rename in: the old one is put back") {
        io::scoped_file_faults eio([](io::file_op op, const fs::path& p) {
            if (op == io::file_op::exchange) return EINVAL;
            return op == io::file_op::rename && p.filename().string().starts_with(".step_00000002.tmp.") ? EIO : 0;
        });
        CHECK_THROWS_WITH_AS(save_checkpoint(dir, s.tr, s.data_state()), doctest::Contains("Input/output error"),
                             sgt::error);
        CHECK(first_weight(resolve_checkpoint(dir)) == old_w);
        CHECK(entries(dir) == std::vector<std::string>{"latest", "step_00000002"});
    }
    SUBCASE("no exchange on this file system: set aside, renamed in, old one removed") {
        io::scoped_file_faults none([](io::file_op op, const fs::path&) { return op == io::file_op::exchange ? EINVAL : 0; });
        save_checkpoint(dir, s.tr, s.data_state());
        CHECK(first_weight(resolve_checkpoint(dir)) == new_w);
        CHECK(entries(dir) == std::vector<std::string>{"latest", "step_00000002"});
    }
    SUBCASE("killed between the two renames: reading finds the new checkpoint, the next save puts it in place") {
        const int status = in_child([&] {
            io::scoped_file_faults kill([](io::file_op op, const fs::path& p) {
                if (op == io::file_op::exchange) return EINVAL;
                if (op == io::file_op::rename && p.filename().string().starts_with(".step_00000002.tmp.")) ::_exit(42);
                return 0;
            });
            save_checkpoint(dir, s.tr, s.data_state());
        });
        REQUIRE(status == 42);  // the child died exactly there
        CHECK_FALSE(fs::exists(step));  // the window: step_2 is set aside, the new one not yet in
        std::string note;
        const fs::path found = resolve_checkpoint(dir, &note);
        CHECK(found.filename().string().starts_with(".step_00000002.tmp."));
        CHECK(note.find("whose save was interrupted") != std::string::npos);
        CHECK(first_weight(found) == new_w);
        run_state t(growth_options::from_budget(tiny_bytes.loops));
        load_checkpoint(dir, t.tr);
        CHECK(t.tr.steps() == 2);
        CHECK(t.m.parameters()[0] == new_w);
        const auto done = recover_interrupted_saves(dir);  // what the next save does first
        CHECK(done.size() == 2);  // moved in, and the old one removed
        CHECK(first_weight(resolve_checkpoint(dir)) == new_w);
        CHECK(entries(dir) == std::vector<std::string>{"latest", "step_00000002"});
    }
    SUBCASE("killed after the exchange: the new checkpoint is in place, the old one is cleaned up later") {
        const int status = in_child([&] {
            bool exchanged = false;
            io::scoped_file_faults kill([&exchanged](io::file_op op, const fs::path&) {
                if (op == io::file_op::remove && exchanged) ::_exit(42);  // the removal of the old checkpoint
                exchanged = exchanged || op == io::file_op::exchange;
                return 0;
            });
            save_checkpoint(dir, s.tr, s.data_state());
        });
        REQUIRE(status == 42);
        CHECK(first_weight(resolve_checkpoint(dir)) == new_w);
        s.steps(1);
        save_checkpoint(dir, s.tr, s.data_state());
        CHECK(entries(dir) == std::vector<std::string>{"latest", "step_00000002", "step_00000003"});
    }
    fs::remove_all(dir);
}

TEST_CASE("`latest`: confined to its directory, a CR tolerated, a dangling one falls back to the newest intact step") {
    run_state s(growth_options::from_budget(tiny_bytes.loops));
    const fs::path dir = fresh_dir("latest");
    for (int i = 0; i < 3; ++i) {
        s.steps(1);
        save_checkpoint(dir, s.tr, s.data_state());
    }
    auto set_latest = [&](const std::string& text) { std::ofstream(dir / "latest", std::ios::binary) << text; };
    std::string note;

    set_latest("step_00000002\r\n");  // written on Windows
    CHECK(resolve_checkpoint(dir, &note) == dir / "step_00000002");
    CHECK(note.empty());

    set_latest("../other/step_00000002\n");
    CHECK(test::error_of([&] { resolve_checkpoint(dir); }) ==
          fmt::format("checkpoint: '{}' must name a step directory beside it (step_ and digits), found "
                      "\"../other/step_00000002\"",
                      (dir / "latest").string()));

    set_latest("step_00000009\n");
    CHECK(resolve_checkpoint(dir, &note) == dir / "step_00000003");
    CHECK(note == fmt::format("'{}' names 'step_00000009', which does not exist; using the newest complete "
                              "checkpoint, '{}'",
                              (dir / "latest").string(), (dir / "step_00000003").string()));

    set_latest("step_00000003\n");
    fs::remove(dir / "step_00000003" / "optimizer.safetensors");
    CHECK(resolve_checkpoint(dir, &note) == dir / "step_00000002");
    CHECK(note.find("which is incomplete") != std::string::npos);

    fs::remove(dir / "latest");
    CHECK(resolve_checkpoint(dir, &note) == dir / "step_00000002");
    CHECK(note.find("does not exist") != std::string::npos);

    fs::remove_all(dir / "step_00000001");
    fs::remove_all(dir / "step_00000002");
    CHECK(test::error_of([&] { resolve_checkpoint(dir); }).find("the directory holds no complete step") !=
          std::string::npos);
    fs::remove_all(dir);
}

TEST_CASE("leftovers of dead writers are removed by the next save; a live writer's are kept") {
    run_state s(growth_options::from_budget(tiny_bytes.loops));
    s.steps(1);
    const fs::path dir = fresh_dir("orphans");
    save_checkpoint(dir, s.tr, s.data_state());
    const long dead = dead_pid();
    const std::string orphan = fmt::format(".step_00000007.tmp.{}", dead);
    const std::string live = ".step_00000007.tmp.1";  // init is always running
    fs::create_directories(dir / orphan / "x");
    fs::create_directories(dir / live);
    s.steps(1);
    save_checkpoint(dir, s.tr, s.data_state());
    CHECK(entries(dir) == std::vector<std::string>{live, "latest", "step_00000001", "step_00000002"});
    fs::remove_all(dir);
}

TEST_CASE("a save fsyncs every file and the directory before `latest` names it") {
    run_state s(growth_options::from_budget(tiny_bytes.loops));
    s.steps(1);
    const fs::path dir = fresh_dir("fsync");
    std::vector<std::pair<io::file_op, std::string>> ops;
    {
        io::scoped_file_faults record([&](io::file_op op, const fs::path& p) {
            ops.emplace_back(op, p.string());
            return 0;
        });
        save_checkpoint(dir, s.tr, s.data_state());
    }
    auto find = [&](io::file_op op, const std::string& suffix) {
        for (std::size_t i = 0; i < ops.size(); ++i)
            if (ops[i].first == op && ops[i].second.ends_with(suffix)) return std::ptrdiff_t(i);
        return std::ptrdiff_t(-1);
    };
    const std::string tmp_dir = fmt::format(".step_00000001.tmp.{}", ::getpid());
    const auto config_sync = find(io::file_op::fsync, fmt::format("{}/config.json.tmp.{}", tmp_dir, ::getpid()));
    std::ptrdiff_t tmp_sync = -1;  // the last fsync of the temporary directory (each file's write syncs it too)
    for (std::size_t i = 0; i < ops.size(); ++i)
        if (ops[i].first == io::file_op::fsync && ops[i].second.ends_with(tmp_dir)) tmp_sync = std::ptrdiff_t(i);
    const auto moved_in = find(io::file_op::rename, tmp_dir);
    const auto latest_sync = find(io::file_op::fsync, fmt::format("latest.tmp.{}", ::getpid()));
    const auto latest_rename = find(io::file_op::rename, fmt::format("latest.tmp.{}", ::getpid()));
    CHECK(find(io::file_op::fsync, "model.safetensors.tmp." + std::to_string(::getpid())) >= 0);
    CHECK(find(io::file_op::fsync, "optimizer.safetensors.tmp." + std::to_string(::getpid())) >= 0);
    CHECK(config_sync >= 0);
    CHECK(tmp_sync > config_sync);
    CHECK(moved_in > tmp_sync);
    CHECK(latest_sync > moved_in);
    CHECK(latest_rename > latest_sync);
    CHECK(ops.back() == std::pair{io::file_op::fsync, dir.string()});  // the directory, after `latest` moved in
    fs::remove_all(dir);
}

TEST_CASE("malformed checkpoint metadata is an sgt::error naming the field, and a refused load changes nothing") {
    run_state s(growth_options::from_budget(tiny_bytes.loops));
    s.steps(3);
    const fs::path dir = fresh_dir("metadata");
    save_checkpoint(dir, s.tr, s.data_state());
    const fs::path step = dir / "step_00000003";
    const fs::path optim = step / "optimizer.safetensors", weights = step / "model.safetensors";

    struct edit {
        fs::path file;
        std::string key;
        std::optional<std::string> value;
        std::string expected;  // a part of the message
    };
    const std::vector<edit> edits{
        {optim, "adamw_step", "abc", "metadata 'adamw_step' must be a non-negative integer, found \"abc\""},
        {optim, "adamw_step", std::nullopt, "expected metadata 'adamw_step', found none"},
        {optim, "adamw_step", "99999999999", "metadata 'adamw_step' must be a non-negative integer"},
        {optim, "dropout_rng", "\"abc\"",
         "metadata 'dropout_rng': expected an RNG state of 4 unsigned 64-bit integers, found the string \"abc\""},
        {optim, "dropout_rng", "[0,0,0,0]", "expected an RNG state that is not all zeros"},
        {optim, "trainer", R"({"step":"3","seconds":1.0,"flops":{}})",
         "metadata 'trainer': trainer state: expected \"step\" to be an integer in [-2147483648, 2147483647], found "
         "the string \"3\""},
        {optim, "trainer", R"({"step":3,"seconds":1.0})", "trainer state: expected a field \"flops\", found none"},
        {optim, "trainer", R"({"step":3,"seconds":1.0,"flops":{"steps":3,"flops":"x","vanilla_flops":1}})",
         "flops counter: expected \"flops\" to be a finite number, found the string \"x\""},
        {optim, "trainer", "{", "metadata 'trainer': not valid JSON"},
        {optim, "data", std::nullopt, "expected metadata 'data', found none"},
        {weights, "schedule", R"({"schedule":"sgt"})", "metadata 'schedule'"},
        {weights, "schedule", "[]", "metadata 'schedule'"},
        {weights, "config", R"({"layers":5})", "the checkpoint's model config"},
        {weights, "format", "sgt-checkpoint-0", "expected format 'sgt-checkpoint-2' (or 'sgt-checkpoint-1'), found "
                                                "'sgt-checkpoint-0'"},
    };
    for (const auto& e : edits) {
        CAPTURE(e.key);
        CAPTURE(e.value.value_or("(removed)"));
        const fs::path saved = dir / "saved";
        fs::copy(step, saved, fs::copy_options::recursive);
        rewrite_metadata(e.file, e.key, e.value);
        run_state t(growth_options::from_budget(tiny_bytes.loops));
        t.steps(1);  // a trainer with state of its own, which a refused load must keep
        const trainer_snapshot before = snapshot(t);
        const std::string msg = test::error_of([&] { load_checkpoint(dir, t.tr); });
        CHECK(msg.find(e.expected) != std::string::npos);
        CHECK(msg.find(e.file.filename().string()) != std::string::npos);  // names the file
        CHECK(snapshot(t) == before);
        fs::remove_all(step);
        fs::rename(saved, step);
    }

    SUBCASE("the caller's check of its data state runs before anything changes") {
        run_state t(growth_options::from_budget(tiny_bytes.loops));
        t.steps(1);
        const trainer_snapshot before = snapshot(t);
        const std::string msg = test::error_of([&] {
            load_checkpoint(dir, t.tr, [](const nlohmann::json& data) { json_get<int>(data, "batch", "data state"); });
        });
        CHECK(msg == "data state: expected a field \"batch\", found none");
        CHECK(snapshot(t) == before);
    }
    SUBCASE("4 changed bytes of weight data fail the checksum") {
        const auto f = io::safetensors::from_file(weights);
        const auto& t = f.at("model.layers.1.self_attn.q_proj.weight");
        const auto offset = std::streamoff(t.bytes.data() - f.tensors().front().bytes.data()) +
                            std::streamoff(fs::file_size(weights) - [&] {
                                std::size_t n = 0;
                                for (const auto& u : f.tensors()) n += u.bytes.size();
                                return n;
                            }());
        {
            std::fstream out(weights, std::ios::in | std::ios::out | std::ios::binary);
            out.seekp(offset + 8);
            out.write("\x12\x34\x56\x78", 4);
        }
        run_state u(growth_options::from_budget(tiny_bytes.loops));
        const trainer_snapshot before = snapshot(u);
        CHECK(test::error_of([&] { load_checkpoint(dir, u.tr); })
                  .find("tensor 'model.layers.1.self_attn.q_proj.weight' fails its CRC-32C check") != std::string::npos);
        CHECK(snapshot(u) == before);
    }
    fs::remove_all(dir);
}

TEST_CASE("probe_checkpoint_dir: an unwritable or too full directory is refused before training") {
    const fs::path dir = fresh_dir("probe");
    CHECK_NOTHROW(probe_checkpoint_dir(dir, 1));
    CHECK(entries(dir).empty());  // the probe file is gone
    {
        io::scoped_file_faults ro([](io::file_op op, const fs::path&) { return op == io::file_op::open ? EROFS : 0; });
        CHECK(test::error_of([&] { probe_checkpoint_dir(dir, 1); }) ==
              fmt::format("checkpoint: the directory '{}' is not writable: cannot open '{}' for writing: Read-only "
                          "file system",
                          dir.string(), (dir / fmt::format(".probe.{}", ::getpid())).string()));
    }
    const std::string msg = test::error_of([&] { probe_checkpoint_dir(dir, std::int64_t(1) << 60); });
    CHECK(msg.find(fmt::format("checkpoint: the directory '{}' has ", dir.string())) != std::string::npos);
    CHECK(msg.find("a checkpoint of this model takes about") != std::string::npos);
    fs::remove_all(dir);
}
