// sgt/core/threads.hpp: how many threads the CPU backend uses, and the cores the process may run on.
//
// The CPU ops parallelise over blocks whose bounds depend on the problem size only (backend/cpu/backend.hpp's
// parallel_blocks), never on the thread count, and every reduction adds its blocks' partial results in block
// order: a run gives the same bits on 1 thread or 16. The thread count is then a speed setting only.
//
// The default is OpenMP's (OMP_NUM_THREADS, else one per core it sees), capped at the cores this process may use:
// its CPU affinity mask (taskset, cpusets) and its cgroup's CPU quota (a container's --cpus), so that a default
// run does not oversubscribe the cores it was given.
#pragma once

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "sgt/core/error.hpp"

namespace sgt {

namespace detail {

// ceil(quota / period) of a cgroup v2 "cpu.max" line ("max 100000" is no quota), or 0 when there is none.
inline int cgroup_cpu_quota(const std::string& cpu_max_line) {
    long long quota = 0, period = 0;
    if (std::sscanf(cpu_max_line.c_str(), "%lld %lld", &quota, &period) != 2 || quota <= 0 || period <= 0) return 0;
    return int(std::max<long long>(1, (quota + period - 1) / period));
}

inline std::atomic<int>& thread_setting() {
    static std::atomic<int> n{0};  // 0: the default
    return n;
}

}  // namespace detail

namespace detail {
inline int read_available_cores() {
    int n = 0;
    cpu_set_t set;
    CPU_ZERO(&set);
    if (::sched_getaffinity(0, sizeof(set), &set) == 0) n = CPU_COUNT(&set);
    if (n <= 0) n = int(std::max(1u, std::thread::hardware_concurrency()));
    std::ifstream in("/sys/fs/cgroup/cpu.max");
    std::string line;
    if (in && std::getline(in, line))
        if (const int quota = cgroup_cpu_quota(line); quota > 0) n = std::min(n, quota);
    return n;
}
}  // namespace detail

// The cores this process may run on: the CPUs of its affinity mask, capped by a cgroup v2 CPU quota. Read once, the
// first time it is asked for (every CPU op asks, through threads(): reading the cgroup file each time cost about
// 5 µs per op, docs/BENCHMARKS.md).
inline int available_cores() {
    static const int n = detail::read_available_cores();
    return n;
}

// OpenMP's thread count (OMP_NUM_THREADS, or its default) capped at available_cores(); 1 without OpenMP.
inline int default_threads() {
#if defined(_OPENMP)
    return std::max(1, std::min(omp_get_max_threads(), available_cores()));
#else
    return 1;
#endif
}

// The threads the CPU ops use: set_threads' value, else default_threads().
inline int threads() {
    const int n = detail::thread_setting().load(std::memory_order_relaxed);
    return n > 0 ? n : default_threads();
}

// Sets the threads of the CPU ops (n ≥ 1), or back to the default (n = 0). Results do not depend on it.
inline void set_threads(int n) {
    require(n >= 0, "threads: expected a thread count >= 1 (or 0 for the default), found {}", n);
    detail::thread_setting().store(n, std::memory_order_relaxed);
}

}  // namespace sgt
