// Data parallelism on the CPU (dist/): the launch environment and rendezvous parsing, bucketing, the rows of a
// rank, the TCP group (collectives, a rank that exits, a missing rendezvous, a world-size mismatch), and
// training: W ranks (threads here, each with its own model) over a global batch take the step of one process
// over that batch, with the same growth decisions (Θ) on every rank at every step.
#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "sgt/dist/data_parallel.hpp"
#include "sgt/dist/shared_library.hpp"
#include "sgt/sgt.hpp"
#include "../support.hpp"

using namespace sgt;
using namespace sgt::dist;
using test::contains;
using test::error_of;
using test::fresh_dir;
using test::on_ranks;

namespace {

env_reader env_of(std::map<std::string, std::string> vars) {
    return [vars](const char* name) -> std::optional<std::string> {
        const auto it = vars.find(name);
        if (it == vars.end()) return std::nullopt;
        return it->second;
    };
}

}  // namespace

// NCCL's loader (dist/nccl.hpp) is shared_library over library_candidates("SGT_NCCL_LIBRARY", ...): without the
// library, a run of several GPU processes stops with this error.
TEST_CASE("a library loaded at run time: each file tried named when none loads, a variable that names the file") {
    const std::string e =
        error_of([] { shared_library(std::vector<std::string>{"/nonexistent/libnccl.so.2"}, "NCCL", "install it"); });
    CHECK(contains(e, "NCCL is not available at run time (/nonexistent/libnccl.so.2: "));
    CHECK(contains(e, "); install it"));
    const std::string two = error_of([] {
        shared_library(std::vector<std::string>{"libsgt_missing_a.so", "libsgt_missing_b.so"}, "X", "hint");
    });
    CHECK(contains(two, "(libsgt_missing_a.so: "));
    CHECK(contains(two, "; libsgt_missing_b.so: "));
    CHECK(contains(error_of([] { shared_library(std::vector<std::string>{}, "X", "hint"); }), "(no file to try)"));

    const shared_library m(std::vector<std::string>{"libsgt_missing_a.so", "libm.so.6"}, "libm", "");
    CHECK(m.file() == "libm.so.6");
    const auto cosine = m.function<double (*)(double)>("cos");
    CHECK(cosine(0.0) == 1.0);
    CHECK(error_of([&] { m.function<void (*)()>("sgt_no_such_function"); }) ==
          "libm.so.6 has no function sgt_no_such_function");

    ::unsetenv("SGT_TEST_LIBRARY");
    CHECK(library_candidates("SGT_TEST_LIBRARY", {"a.so.2", "a.so"}) == std::vector<std::string>{"a.so.2", "a.so"});
    ::setenv("SGT_TEST_LIBRARY", "", 1);
    CHECK(library_candidates("SGT_TEST_LIBRARY", {"a.so.2"}) == std::vector<std::string>{"a.so.2"});
    ::setenv("SGT_TEST_LIBRARY", "/opt/nccl/lib/libnccl.so.2", 1);
    CHECK(library_candidates("SGT_TEST_LIBRARY", {"a.so.2"}) == std::vector<std::string>{"/opt/nccl/lib/libnccl.so.2"});
    ::unsetenv("SGT_TEST_LIBRARY");
}

TEST_CASE("the launch environment: torchrun's, Open MPI's and Slurm's variables, and the rendezvous") {
    const launch_env none = read_launch_env(env_of({}));
    CHECK(none.world == 1);
    CHECK(!none.distributed());

    const launch_env t = read_launch_env(env_of({{"RANK", "2"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "2"},
                                                 {"MASTER_ADDR", "10.0.0.1"}, {"MASTER_PORT", "29500"}}));
    CHECK(t.rank == 2);
    CHECK(t.world == 4);
    CHECK(t.local_rank == 2);
    CHECK(t.meeting.how == rendezvous::kind::tcp);
    CHECK(t.meeting.host == "10.0.0.1");
    CHECK(t.meeting.port == 29500);
    CHECK(t.distributed());
    CHECK(!read_launch_env(env_of({{"RANK", "0"}, {"WORLD_SIZE", "1"}})).distributed());  // one process: plain

    const launch_env m = read_launch_env(env_of({{"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "2"},
                                                 {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                                                 {"SGT_RENDEZVOUS", "file:/shared/r"}}));
    CHECK(m.rank == 1);
    CHECK(m.source == "Open MPI");
    CHECK(m.meeting.how == rendezvous::kind::file);
    CHECK(m.meeting.path == "/shared/r");

    const launch_env s = read_launch_env(
        env_of({{"SLURM_PROCID", "3"}, {"SLURM_NTASKS", "8"}, {"SLURM_LOCALID", "3"}, {"SGT_RENDEZVOUS", "h:1"}}));
    CHECK(s.rank == 3);
    CHECK(s.world == 8);

    CHECK(error_of([] { read_launch_env(env_of({{"RANK", "4"}, {"WORLD_SIZE", "4"}, {"SGT_RENDEZVOUS", "h:1"}})); }) ==
          "launch: RANK = 4 is not below WORLD_SIZE = 4");
    CHECK(error_of([] { read_launch_env(env_of({{"RANK", "0"}})); }) ==
          "launch: RANK is set but WORLD_SIZE is not; a launcher sets both");
    CHECK(error_of([] { read_launch_env(env_of({{"RANK", "x"}, {"WORLD_SIZE", "2"}})); }) ==
          "launch: expected an integer >= 0 in RANK, found 'x'");
    CHECK(contains(error_of([] { read_launch_env(env_of({{"RANK", "0"}, {"WORLD_SIZE", "2"}})); }),
                   "launch: 2 processes (RANK/WORLD_SIZE) but no rendezvous"));

    // Under mpirun with no rendezvous set: rank 0's address through MPI in a build with MPI (this test is built
    // without: examples/train is the program built with it, tests/examples/dist.sh runs it under mpirun).
    const auto under_mpirun = [] {
        return read_launch_env(env_of({{"OMPI_COMM_WORLD_RANK", "0"}, {"OMPI_COMM_WORLD_SIZE", "2"}}));
    };
    if (mpi_built) {
        CHECK(under_mpirun().meeting.how == rendezvous::kind::mpi);
    } else {
        CHECK(contains(error_of(under_mpirun), "(or run under mpirun a build with MPI)"));
        CHECK(contains(error_of([] { dist::detail::mpi_broadcast("host 1", 0, 2); }),
                       "rendezvous mpi: rank 0 of 2: this build has no MPI"));
    }
}

TEST_CASE("rendezvous strings: file:PATH, tcp://HOST:PORT, HOST:PORT, mpi; bad ones say what was expected") {
    CHECK(rendezvous::parse("tcp://node7:29500").str() == "tcp://node7:29500");
    CHECK(rendezvous::parse("node7:29500").str() == "tcp://node7:29500");
    CHECK(rendezvous::parse("tcp://[::1]:80").host == "::1");
    CHECK(rendezvous::parse("file:/tmp/x").path == "/tmp/x");
    CHECK(error_of([] { rendezvous::parse("file:"); }) == "rendezvous: expected file:PATH, found 'file:' (no path)");
    CHECK(rendezvous::parse("mpi").how == rendezvous::kind::mpi);
    CHECK(rendezvous::parse("mpi").str() == "mpi");
    CHECK(error_of([] { rendezvous::parse("node7"); }) ==
          "rendezvous: expected file:PATH, tcp://HOST:PORT or mpi, found 'node7'");
    CHECK(error_of([] { rendezvous::parse("tcp://node7:99999"); }) ==
          "rendezvous: expected a port in 1..65535 after the ':' of 'tcp://node7:99999', found '99999'");
}

TEST_CASE("buckets: adjacent final ranges coalesce, each element is reduced exactly once") {
    // A buffer of 100: the backward reports [90, 100), [60, 90), [30, 60), [0, 10); [10, 30) is never reported.
    bucketer b(100, 35);
    CHECK(b.ready({90, 10}).empty());
    CHECK(b.ready({60, 30}) == std::vector<param_range>{{60, 40}});  // 40 ≥ 35: flushed
    CHECK(b.ready({30, 30}).empty());
    CHECK(b.ready({0, 10}) == std::vector<param_range>{{30, 30}});  // not adjacent: the pending bucket goes
    const auto rest = b.finish();
    CHECK(rest == std::vector<param_range>{{0, 10}, {10, 20}});
    CHECK(contains(error_of([&] { b.ready({95, 10}); }), "outside the buffer of 100 elements"));
    bucketer twice(10, 100);
    (void)twice.ready({0, 5});
    (void)twice.ready({2, 5});
    CHECK(contains(error_of([&] { twice.finish(); }), "reported twice"));
}

TEST_CASE("a rank's rows of a global batch; a batch that does not split is refused") {
    const batch g = test::random_batch(6, 4, 50, 1);
    const batch r1 = rank_rows(g, 1, 3);
    CHECK(r1.B == 2);
    CHECK(std::equal(r1.inputs.begin(), r1.inputs.end(), g.inputs.begin() + 8));
    CHECK(std::equal(r1.targets.begin(), r1.targets.end(), g.targets.begin() + 8));
    CHECK(error_of([&] { rank_rows(g, 0, 4); }) ==
          "data parallel: the global batch of 6 sequences does not split over 4 ranks; give a batch that is a "
          "multiple of the number of processes");
}

TEST_CASE("the TCP group: gather, broadcast and sum are the same on every rank, summed in rank order") {
    const auto dir = fresh_dir("dist_collectives");
    std::filesystem::create_directories(dir);
    const rendezvous where = rendezvous::parse("file:" + (dir / "r").string());
    constexpr int world = 3;
    std::vector<std::vector<double>> gathered(world), summed(world);
    std::vector<std::vector<float>> big(world);
    std::vector<std::vector<int>> bcast(world);
    const auto errors = on_ranks(world, [&](int r) {
        tcp_group g(r, world, where, {.timeout_s = 20});
        const std::vector<double> mine{double(r), 10.0 + r};
        gathered[r] = g.all_gather(std::span<const double>(mine));
        summed[r] = {0.1 * (r + 1), 1e16, -1e16 * (r == 2 ? 1 : 0)};
        g.all_reduce_sum(std::span<double>(summed[r]));
        big[r].assign((1 << 20) + 7, float(r + 1));  // more than one message of the chunked sum
        g.all_reduce_sum<float, double>(std::span<float>(big[r]));
        bcast[r] = {r, r};
        g.broadcast(std::span<int>(bcast[r]));
        g.barrier();
    });
    for (int r = 0; r < world; ++r) {
        CHECK(errors[r] == "");
        CHECK(gathered[r] == std::vector<double>{0, 10, 1, 11, 2, 12});
        CHECK(summed[r] == summed[0]);  // the same bytes on every rank
        CHECK(bcast[r] == std::vector<int>{0, 0});
        CHECK(big[r].front() == 6.0f);
        CHECK(big[r].back() == 6.0f);
    }
    CHECK(summed[0][0] == (0.1 + 0.2) + 0.3);  // rank order: ((x₀ + x₁) + x₂)
    CHECK(summed[0][1] == 3e16);
    CHECK(!std::filesystem::exists(dir / "r"));  // rank 0 removes the rendezvous file once all have joined
    std::filesystem::remove_all(dir);
}

TEST_CASE("the TCP group over tcp://HOST:PORT, and a rank that exits makes the others fail, naming it") {
    // A free port: bind one, read it, let it go.
    int port = 0;
    {
        dist::detail::socket_fd s(::socket(AF_INET, SOCK_STREAM, 0));
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(::bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
        socklen_t len = sizeof a;
        ::getsockname(s.get(), reinterpret_cast<sockaddr*>(&a), &len);
        port = ntohs(a.sin_port);
    }
    const rendezvous where = rendezvous::parse(fmt::format("tcp://127.0.0.1:{}", port));
    const auto start = std::chrono::steady_clock::now();
    const auto errors = on_ranks(3, [&](int r) {
        tcp_group g(r, 3, where, {.timeout_s = 20});
        g.barrier();
        if (r == 2) return;  // rank 2 leaves: its connection closes
        std::vector<double> x{1.0};
        for (int i = 0; i < 3; ++i) g.all_reduce_sum(std::span<double>(x));
    });
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    CHECK(errors[2] == "");
    CHECK(errors[0] == "rank 0: the connection was closed (the process exited or failed) by rank 2");
    // Rank 1 learns it from rank 0, which fails and closes its connections in turn.
    CHECK(errors[1] == "rank 1: the connection was closed (the process exited or failed) by rank 0 (rank 0, the hub "
                       "of the group)");
    CHECK(seconds < 10.0);  // at once, not after the 20 s timeout
}

TEST_CASE("rendezvous failures: no rank 0, a missing rank, a world-size mismatch") {
    const auto dir = fresh_dir("dist_failures");
    std::filesystem::create_directories(dir);
    const auto path = (dir / "r").string();
    const rendezvous where = rendezvous::parse("file:" + path);
    CHECK(contains(error_of([&] { tcp_group(1, 2, where, {.timeout_s = 0.3}); }),
                   "rendezvous: rank 1 found no rank 0 through '" + path + "' within 0.3 s (SGT_DIST_TIMEOUT): '" +
                       path + "' does not exist"));
    CHECK(error_of([&] { tcp_group(0, 3, where, {.timeout_s = 0.3}); }) ==
          "rendezvous: 0 of the 2 other ranks joined rank 0 at file:" + path +
              " within 0.3 s (SGT_DIST_TIMEOUT); missing: 1, 2");
    const auto errors = on_ranks(2, [&](int r) { tcp_group(r, r == 0 ? 2 : 3, where, {.timeout_s = 1}); });
    CHECK(contains(errors[1], "'" + path + "' was written by a rank 0 of world size 2, this rank has 3"));
    CHECK(contains(errors[0], "rendezvous: 0 of the 1 other ranks joined rank 0"));
    CHECK(error_of([] { tcp_group(0, 2, rendezvous{}, {}); }) ==
          "group: 2 processes need a rendezvous (file:PATH or tcp://HOST:PORT)");
    std::filesystem::remove_all(dir);
}

namespace {

using dp_model = model<double, test::tiny_bytes>;

struct run_record {
    std::vector<double> losses, grad_norms;
    std::vector<std::string> plans;  // Θ after each step
    std::vector<double> weights;
    std::vector<growth_event> events;
    std::vector<double> m, v;  // AdamW's moments of the whole buffer (with ZeRO-1: gathered, on rank 0 only)
    std::int64_t kept = 0;     // the moments' values this rank holds
};

// `steps` steps of SGT (growth from step 3, every 2 steps) on global batches of B sequences, as rank `rank` of
// `world` (sync null: one process over the whole batch).
// zero1: the optimizer sharded over the ranks.
run_record train_sgt(int B, int steps, int rank, int world, gradient_sync<double, cpu>* sync, int micro = 1,
                     bool zero1 = false) {
    dp_model m(B / world / micro, 16, 7);
    growth_options o = growth_options::from_budget(test::tiny_bytes.loops);
    o.t_start = 3;
    o.dt = 2;
    growth_operator<> g(dp_model::shape, o);
    trainer tr(m, g, cosine_schedule{.lr_max = 3e-3, .warmup = 2, .total = steps}, adamw_options{}, B, 16);
    tr.set_data_parallel(sync, zero1);
    k_hop_dataset data(k_hop_options{.symbols = 2});
    rng r(11);
    run_record rec;
    for (int t = 0; t < steps; ++t) {
        const batch mine = rank_rows(data.train_batch(r, B, 16), rank, world);
        std::vector<batch> parts;
        for (int i = 0; i < micro; ++i) parts.push_back(rank_rows(mine, i, micro));
        const step_stats s = tr.step(std::span<const batch>(parts));
        rec.losses.push_back(s.loss);
        rec.grad_norms.push_back(s.grad_norm);
        rec.plans.push_back(sgt::detail::plan_to_json(g.plan()).dump());
        rec.events.insert(rec.events.end(), s.events.begin(), s.events.end());
    }
    rec.weights.assign(m.parameters().begin(), m.parameters().end());
    auto state = tr.optimizer().state_to_host(m.parameters());
    rec.m = std::move(state.m);
    rec.v = std::move(state.v);
    rec.kept = std::int64_t(tr.optimizer().first_moment().size());
    return rec;
}

// A host sync that says its work can be recorded, as NCCL's does on a GPU (dist/nccl.hpp), so that the trainer
// takes its recorded-step path (on the CPU a recording simply runs); it counts the backwards and the waits.
class recordable_sync final : public gradient_sync<double, cpu> {
public:
    explicit recordable_sync(tcp_group& g) : inner_(g, 4096) {}
    int rank() const override { return inner_.rank(); }
    int world() const override { return inner_.world(); }
    std::vector<double> all_gather(std::span<const double> mine) override { return inner_.all_gather(mine); }
    void begin_backward(std::span<double> grads) override { inner_.begin_backward(grads); }
    void ready(param_range r) override { inner_.ready(r); }
    void end_backward() override {
        inner_.end_backward();
        ++backwards;
    }
    void share_ranges(void* data, std::size_t elem_bytes, std::span<const param_range> ranges) override {
        inner_.share_ranges(data, elem_bytes, ranges);
    }
    std::vector<std::byte> gather_to_root(std::span<const std::byte> mine) override {
        return inner_.gather_to_root(mine);
    }
    bool replayable() const override { return true; }
    void wait_step() override { ++waits; }
    int backwards = 0, waits = 0;

private:
    host_data_parallel<double, cpu> inner_;
};

double max_rel(const std::vector<double>& a, const std::vector<double>& b) {
    double m = 0.0;
    for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]) / std::max(1e-3, std::abs(b[i])));
    return m;
}

}  // namespace

TEST_CASE("data parallel training: 1, 2 and 4 ranks take the step of one process over the global batch") {
    constexpr int B = 8, steps = 10;
    const run_record one = train_sgt(B, steps, 0, 1, nullptr);
    REQUIRE(!one.events.empty());  // the loops grow during the run

    SUBCASE("one rank through the group is the plain trainer, bit for bit") {
        tcp_group g(0, 1, rendezvous{});
        host_data_parallel<double, cpu> sync(g);
        const run_record r = train_sgt(B, steps, 0, 1, &sync);
        CHECK(r.losses == one.losses);
        CHECK(r.grad_norms == one.grad_norms);
        CHECK(r.plans == one.plans);
        CHECK(r.weights == one.weights);
    }
    SUBCASE("2 and 4 ranks against one process over the same global batch") {
        for (const int world : {2, 4}) {
            CAPTURE(world);
            const auto dir = fresh_dir("dist_train" + std::to_string(world));
            std::filesystem::create_directories(dir);
            const rendezvous where = rendezvous::parse("file:" + (dir / "r").string());
            std::vector<run_record> ranks(world);
            const auto errors = on_ranks(world, [&](int r) {
                tcp_group g(r, world, where, {.timeout_s = 60});
                host_data_parallel<double, cpu> sync(g, 4096);  // small buckets: several per backward
                ranks[std::size_t(r)] = train_sgt(B, steps, r, world, &sync);
            });
            for (int r = 0; r < world; ++r) {
                CAPTURE(r);
                CHECK(errors[r] == "");
                // Θ and everything else is the same on every rank, bit for bit.
                CHECK(ranks[r].plans == ranks[0].plans);
                CHECK(ranks[r].losses == ranks[0].losses);
                CHECK(ranks[r].weights == ranks[0].weights);
            }
            // Against one process over the same global batch: the same growth, losses and weights up to the order of
            // the sums (double).
            CHECK(ranks[0].plans == one.plans);
            CHECK(max_rel(ranks[0].losses, one.losses) < 1e-12);
            CHECK(max_rel(ranks[0].grad_norms, one.grad_norms) < 1e-10);
            CHECK(max_rel(ranks[0].weights, one.weights) < 1e-10);
            std::filesystem::remove_all(dir);
        }
    }
    SUBCASE("ZeRO-1: 2 and 3 ranks with the optimizer sharded take the unsharded ranks' steps, bit for bit") {
        for (const int world : {2, 3}) {
            CAPTURE(world);
            const int b = world == 3 ? 6 : B;  // a global batch that splits over the ranks
            const run_record alone = world == 3 ? train_sgt(b, steps, 0, 1, nullptr) : one;
            std::vector<run_record> plain(static_cast<std::size_t>(world)), sharded(static_cast<std::size_t>(world));
            for (const bool zero1 : {false, true}) {
                const auto dir = fresh_dir("dist_zero1_" + std::to_string(world) + (zero1 ? "s" : "p"));
                std::filesystem::create_directories(dir);
                const rendezvous where = rendezvous::parse("file:" + (dir / "r").string());
                const auto errors = on_ranks(world, [&](int r) {
                    tcp_group g(r, world, where, {.timeout_s = 60});
                    host_data_parallel<double, cpu> sync(g, 4096);
                    (zero1 ? sharded : plain)[std::size_t(r)] = train_sgt(b, steps, r, world, &sync, 1, zero1);
                });
                CHECK(errors == std::vector<std::string>(std::size_t(world), ""));
                std::filesystem::remove_all(dir);
            }
            const std::int64_t n = std::int64_t(one.weights.size());
            std::int64_t kept = 0;
            for (int r = 0; r < world; ++r) {
                CAPTURE(r);
                CHECK(sharded[r].losses == plain[r].losses);
                CHECK(sharded[r].grad_norms == plain[r].grad_norms);
                CHECK(sharded[r].plans == plain[r].plans);
                CHECK(sharded[r].weights == plain[r].weights);
                CHECK(sharded[r].kept == shard_of(n, r, world).count);  // this rank's share of the state only
                CHECK(plain[r].kept == n);
                CHECK(sharded[r].m.empty() == (r != 0));  // the whole state is gathered on rank 0
                kept += sharded[r].kept;
            }
            CHECK(kept == n);
            CHECK(sharded[1].kept < n);
            // The gathered moments are the unsharded optimizer's, bit for bit.
            CHECK(sharded[0].m == plain[0].m);
            CHECK(sharded[0].v == plain[0].v);
            CHECK(sharded[0].plans == alone.plans);
            CHECK(max_rel(sharded[0].losses, alone.losses) < 1e-12);
        }
    }
    SUBCASE("a sync that can be recorded: the trainer's recorded-step path takes the same steps, one wait a step") {
        for (const bool zero1 : {false, true}) {
            CAPTURE(zero1);
            std::vector<run_record> eager(2), recorded(2);
            int backwards[2] = {}, waits[2] = {};
            for (const bool record : {false, true}) {
                const auto dir = fresh_dir(std::string("dist_recorded_") + (record ? "r" : "e") + (zero1 ? "s" : "p"));
                std::filesystem::create_directories(dir);
                const rendezvous where = rendezvous::parse("file:" + (dir / "r").string());
                const auto errors = on_ranks(2, [&](int r) {
                    tcp_group g(r, 2, where, {.timeout_s = 60});
                    if (record) {
                        recordable_sync sync(g);
                        recorded[std::size_t(r)] = train_sgt(B, steps, r, 2, &sync, 1, zero1);
                        backwards[r] = sync.backwards;
                        waits[r] = sync.waits;
                    } else {
                        host_data_parallel<double, cpu> sync(g, 4096);
                        eager[std::size_t(r)] = train_sgt(B, steps, r, 2, &sync, 1, zero1);
                    }
                });
                CHECK(errors == std::vector<std::string>{"", ""});
                std::filesystem::remove_all(dir);
            }
            for (int r = 0; r < 2; ++r) {
                CAPTURE(r);
                CHECK(backwards[r] == steps);
                CHECK(waits[r] == steps);  // once a step, after it
                CHECK(recorded[r].losses == eager[r].losses);
                CHECK(recorded[r].grad_norms == eager[r].grad_norms);
                CHECK(recorded[r].plans == eager[r].plans);
                CHECK(recorded[r].weights == eager[r].weights);
            }
            CHECK(recorded[0].plans == one.plans);
        }
    }
    SUBCASE("two ranks, each accumulating two micro-batches") {
        const auto dir = fresh_dir("dist_micro");
        std::filesystem::create_directories(dir);
        const rendezvous where = rendezvous::parse("file:" + (dir / "r").string());
        std::vector<run_record> ranks(2);
        const auto errors = on_ranks(2, [&](int r) {
            tcp_group g(r, 2, where, {.timeout_s = 60});
            host_data_parallel<double, cpu> sync(g);
            ranks[std::size_t(r)] = train_sgt(B, steps, r, 2, &sync, 2);
        });
        CHECK(errors == std::vector<std::string>{"", ""});
        CHECK(ranks[1].weights == ranks[0].weights);
        CHECK(ranks[0].plans == one.plans);
        CHECK(max_rel(ranks[0].losses, one.losses) < 1e-12);
        CHECK(max_rel(ranks[0].weights, one.weights) < 1e-10);
        std::filesystem::remove_all(dir);
    }
}

TEST_CASE("ZeRO-1 shares: contiguous, aligned to 64 elements, covering the buffer; refused without a sync") {
    for (const std::int64_t n : {0, 1, 63, 64, 1000, 123457}) {
        for (const int world : {1, 2, 3, 8}) {
            CAPTURE(n);
            CAPTURE(world);
            std::int64_t at = 0;
            for (int r = 0; r < world; ++r) {
                const param_range s = shard_of(n, r, world);
                CHECK(s.offset == at);
                CHECK(s.count >= 0);
                CHECK(s.offset % 64 == 0);
                if (n >= 64 * world) CHECK(std::abs(double(s.count) - double(n) / world) <= 64.0);
                at = s.end();
            }
            CHECK(at == n);
        }
    }
    CHECK(error_of([] { shard_of(10, 2, 2); }) == "data parallel: no share 2 of 10 over 2 ranks");

    dp_model m(2, 16, 7);
    growth_operator<> g(dp_model::shape, growth_options::from_budget(test::tiny_bytes.loops));
    trainer tr(m, g, cosine_schedule{.lr_max = 3e-3, .warmup = 2, .total = 4}, adamw_options{}, 2, 16);
    CHECK(error_of([&] { tr.set_data_parallel(nullptr, true); }) ==
          "training: a sharded optimizer (ZeRO-1) needs data parallelism");
    const std::int64_t n = std::int64_t(m.parameters().size());
    CHECK(error_of([&] { tr.optimizer().set_shard({0, n / 2}); }) == "adamw: a share of part of the buffer needs a gather");
    CHECK(error_of([&] { tr.optimizer().set_shard({n - 1, 2}); }) ==
          fmt::format("adamw: the share [{}, {}) is outside the buffer of {} parameters", n - 1, n + 1, n));
    // A sync that knows nothing of shares (written against the interface before ZeRO-1) refuses one when used.
    struct old_sync final : gradient_sync<double, cpu> {
        int rank() const override { return 0; }
        int world() const override { return 1; }
        std::vector<double> all_gather(std::span<const double> mine) override { return {mine.begin(), mine.end()}; }
        void begin_backward(std::span<double>) override {}
        void ready(param_range) override {}
        void end_backward() override {}
    } old;
    CHECK(error_of([&] { old.gather_to_root({}); }) ==
          "data parallel: this gradient sync cannot gather a sharded optimizer's state (ZeRO-1)");
}
