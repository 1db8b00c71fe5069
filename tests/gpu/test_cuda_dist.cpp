// Data parallelism on GPUs over NCCL (dist/nccl.hpp). One rank through NCCL is the plain trainer bit for bit
// (fp32, bf16, bf16 summed in fp32, buckets small enough that a backward fills several). Where the machine has
// two GPUs or more: 2 ranks (threads here, one GPU each) take the steps of one GPU over the global batch (fp32
// within 1e-5 over 10 steps), with the same growth decisions on both ranks.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <unistd.h>

#include "sgt/dist/nccl.hpp"
#include "../support.hpp"
#include "support.hpp"

using namespace sgt;
using test::bf16;

namespace {
using test::tiny_bytes;

template <class T>
struct record {
    std::vector<double> losses;
    std::vector<std::string> plans;
    std::vector<T> weights;
};

// 12 steps of SGT growth (from step 3, Δt = 2) on global batches of 4 sequences, as rank `rank` of `world`.
template <class T>
record<T> train(int rank, int world, dist::gradient_sync<T, cuda>* sync) {
    model<T, tiny_bytes, cuda> m(4 / world, 16, 11);
    growth_options o = growth_options::from_budget(tiny_bytes.loops);
    o.t_start = 3;
    o.dt = 2;
    growth_operator<> g(tiny_bytes.shape, o);
    trainer tr(m, g, cosine_schedule{.lr_max = 1e-2, .warmup = 2, .total = 12}, adamw_options{}, 4, 16);
    tr.set_data_parallel(sync);
    k_hop_dataset data(k_hop_options{.symbols = 2});
    rng r(3);
    record<T> out;
    for (int t = 0; t < 12; ++t) {
        out.losses.push_back(tr.step(dist::rank_rows(data.train_batch(r, 4, 16), rank, world)).loss);
        out.plans.push_back(sgt::detail::plan_to_json(g.plan()).dump());
    }
    out.weights = m.parameters_to_host();
    return out;
}
}  // namespace

TEST_CASE_TEMPLATE("one rank through NCCL is the plain trainer, bit for bit", T, float, bf16) {
    const record<T> plain = train<T>(0, 1, nullptr);
    REQUIRE(plain.plans.front() != plain.plans.back());  // the loops grow
    dist::tcp_group g(0, 1, {});
    for (const bool fp32_reduce : {false, true}) {
        for (const std::int64_t bucket : {std::int64_t(25) << 20, std::int64_t(4096)}) {
            CAPTURE(fp32_reduce);
            CAPTURE(bucket);
            dist::nccl_data_parallel<T> sync(g, {.fp32_reduce = fp32_reduce, .bucket_bytes = bucket});
            if (!fp32_reduce && bucket > 4096)
                std::printf("  %s: NCCL %d loaded\n", precision_name<T>::value, sync.nccl_version());
            const record<T> one = train<T>(0, 1, &sync);
            CHECK(one.losses == plain.losses);
            CHECK(one.plans == plain.plans);
            REQUIRE(one.weights.size() == plain.weights.size());
            CHECK(std::memcmp(one.weights.data(), plain.weights.data(), plain.weights.size() * sizeof(T)) == 0);
        }
    }
}

TEST_CASE("two GPUs: two ranks take the steps of one GPU over the global batch (fp32), with the same Θ") {
    int devices = 0;
    SGT_CUDA_CHECK(cudaGetDeviceCount(&devices));
    if (devices < 2) {
        std::printf("  one GPU: the two-rank test is skipped\n");
        return;
    }
    const record<float> one = train<float>(0, 1, nullptr);
    const auto dir = std::filesystem::temp_directory_path() / ("sgt_gpu_dist_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    const auto where = dist::rendezvous::parse("file:" + (dir / "r").string());
    record<float> ranks[2];
    std::string errors[2];
    std::thread threads[2];
    for (int r = 0; r < 2; ++r)
        threads[r] = std::thread([&, r] {
            errors[r] = test::error_of([&] {
                dist::select_device(cuda{}, {.rank = r, .world = 2, .local_rank = r});
                dist::tcp_group g(r, 2, where, {.timeout_s = 60});
                dist::nccl_data_parallel<float> sync(g, {.bucket_bytes = 4096});
                ranks[r] = train<float>(r, 2, &sync);
            });
        });
    for (auto& t : threads) t.join();
    std::filesystem::remove_all(dir);
    CHECK(errors[0] == "");
    CHECK(errors[1] == "");
    CHECK(ranks[1].plans == ranks[0].plans);
    CHECK(ranks[1].losses == ranks[0].losses);
    CHECK(ranks[0].plans == one.plans);
    for (std::size_t i = 0; i < one.losses.size(); ++i)
        CHECK(std::abs(ranks[0].losses[i] - one.losses[i]) <= 1e-5 * std::abs(one.losses[i]));
}
