// examples/launch.hpp: `train --nproc N` (and `train_cuda --nproc N`), a launcher on one host: the program starts
// N copies of itself with RANK, WORLD_SIZE, LOCAL_RANK and SGT_RENDEZVOUS (a file in a fresh temporary
// directory) set, as torchrun would, waits for them, and exits with the first failure's status. The ranks find
// each other and fail together (sgt/dist/tcp_group.hpp): a rank that dies makes the others exit; those still
// running 5 s after a failure (one waiting for the rendezvous, say) get SIGTERM, and SIGKILL 10 s later.
#pragma once

#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "sgt/core/threads.hpp"
#include "sgt/dist/tcp_group.hpp"

namespace examples {

namespace launcher {
// Set by the SIGTERM handler, which does nothing else (async-signal-safe); the wait loop passes it on.
inline volatile std::sig_atomic_t terminate_requested = 0;
inline void on_terminate(int) { terminate_requested = 1; }
inline void signal_all(const std::vector<pid_t>& pids, int sig) {
    for (const pid_t p : pids) ::kill(p, sig);
}
}  // namespace launcher

// Runs this program (argv) as `n` ranks and returns the exit status for the launcher.
inline int launch_ranks(int n, char** argv) {
    char dir_template[] = "/tmp/sgt-nproc-XXXXXX";
    const char* dir = ::mkdtemp(dir_template);
    sgt::require(dir != nullptr, "--nproc: cannot make a temporary directory in /tmp: {}", std::strerror(errno));
    const std::string meeting = std::string("file:") + dir + "/rendezvous";
    std::vector<pid_t> pids;  // the ranks not yet reaped (a reaped pid may be reused: it is never signalled)
    for (int r = 0; r < n; ++r) {
        const pid_t pid = ::fork();
        if (pid < 0) {
            const int e = errno;
            launcher::signal_all(pids, SIGKILL);
            for (const pid_t p : pids) ::waitpid(p, nullptr, 0);
            std::error_code ec;
            std::filesystem::remove_all(dir, ec);
            sgt::fail("--nproc: cannot start rank {}: {}", r, std::strerror(e));
        }
        if (pid == 0) {
            const std::string rank = std::to_string(r), world = std::to_string(n);
            ::setenv("RANK", rank.c_str(), 1);
            ::setenv("LOCAL_RANK", rank.c_str(), 1);
            ::setenv("WORLD_SIZE", world.c_str(), 1);
            ::setenv("SGT_RENDEZVOUS", meeting.c_str(), 1);
            const std::string threads = std::to_string(std::max(1, sgt::available_cores() / n));
            ::setenv("OMP_NUM_THREADS", threads.c_str(), 0);  // the cores shared out, unless set
            ::execv("/proc/self/exe", argv);
            ::_exit(127);
        }
        pids.push_back(pid);
    }
    // Ctrl-C reaches the ranks directly (one process group): they agree on a step, save and stop. A SIGTERM sent to
    // the launcher alone is passed on to them by the loop below, which polls so as to see it.
    ::signal(SIGINT, SIG_IGN);
    struct sigaction on_term {};
    on_term.sa_handler = launcher::on_terminate;
    sigemptyset(&on_term.sa_mask);
    ::sigaction(SIGTERM, &on_term, nullptr);
    int status = 0, running = n;
    using clock = std::chrono::steady_clock;
    std::optional<clock::time_point> failed_at;
    int signals_sent = 0;
    bool terminate_passed = false;
    while (running > 0) {
        if (launcher::terminate_requested && !terminate_passed) {
            launcher::signal_all(pids, SIGTERM);
            terminate_passed = true;
        }
        int st = 0;
        const pid_t done = ::waitpid(-1, &st, WNOHANG);
        if (done > 0) {
            --running;
            const int code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            if (code != 0 && status == 0) {
                status = code;
                if (code != 130) failed_at = clock::now();  // 130: interrupted and saved, as every rank will be
            }
            std::erase(pids, done);
            continue;
        }
        if (done < 0 && errno != EINTR) break;
        if (failed_at) {
            const auto since = clock::now() - *failed_at;
            if (signals_sent == 0 && since > std::chrono::seconds(5)) {
                launcher::signal_all(pids, SIGTERM);
                signals_sent = 1;
            } else if (signals_sent == 1 && since > std::chrono::seconds(15)) {
                launcher::signal_all(pids, SIGKILL);
                signals_sent = 2;
            }
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
    return status;
}

}  // namespace examples
