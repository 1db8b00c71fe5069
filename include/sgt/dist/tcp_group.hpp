// sgt/dist/tcp_group.hpp: the processes of a data-parallel run, connected over TCP.
//
// Rank 0 is the hub: every other rank holds one connection to it. The group bootstraps the run (it carries
// NCCL's unique id to every rank, dist/nccl.hpp), carries the small host values of each step (target counts,
// loss sums, entropies: all_gather), and on a CPU backend the gradients themselves (all_reduce_sum). Every
// result is computed once, on rank 0, in rank order, and sent to all, so it is the same bytes on every rank:
// the entropies the growth operator reads, hence Θ, cannot drift apart between ranks.
//
// Failures end the run instead of hanging it: a rank that exits closes its connections, and the others fail
// at their next collective with an sgt::error naming it; a rank that stops answering is given up after the
// group's timeout (SGT_DIST_TIMEOUT seconds, default 300).
//
// Rendezvous (dist/launch.hpp): with tcp://HOST:PORT rank 0 listens on PORT and the others connect to
// HOST:PORT; with file:PATH rank 0 listens on a free port and writes "sgt-rendezvous 1 WORLD HOST PORT" to PATH
// (atomically), which the others poll for, and rank 0 removes the file once all have connected; with mpi rank 0
// listens on a free port and sends "HOST PORT" to the others by MPI_Bcast (dist/mpi.hpp).
#pragma once

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>
#include <sstream>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "sgt/core/error.hpp"
#include "sgt/dist/launch.hpp"

namespace sgt::dist {

struct group_options {
    double timeout_s = 300.0;  // the longest wait for the rendezvous or for a peer within a collective

    // SGT_DIST_TIMEOUT (seconds, > 0) when set.
    static group_options from_env(const env_reader& env = process_env) {
        group_options o;
        if (const auto v = env("SGT_DIST_TIMEOUT")) {
            char* end = nullptr;
            o.timeout_s = std::strtod(v->c_str(), &end);
            require(end != v->c_str() && *end == '\0' && o.timeout_s > 0.0,
                    "launch: expected SGT_DIST_TIMEOUT to be a positive number of seconds, found '{}'", *v);
        }
        return o;
    }
};

namespace detail {

using clock = std::chrono::steady_clock;

inline clock::time_point deadline_after(double seconds) {
    return clock::now() + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(seconds));
}
inline int ms_left(clock::time_point deadline) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now()).count();
    return int(std::clamp<long long>(left, 0, 1000));  // poll in slices of at most a second
}

// A connected socket to one peer; moves only; closes on destruction.
class socket_fd {
public:
    socket_fd() = default;
    explicit socket_fd(int fd) : fd_(fd) {}
    socket_fd(socket_fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    socket_fd& operator=(socket_fd&& o) noexcept {
        if (this != &o) {
            close();
            fd_ = std::exchange(o.fd_, -1);
        }
        return *this;
    }
    ~socket_fd() { close(); }
    int get() const { return fd_; }
    explicit operator bool() const { return fd_ >= 0; }
    void close() {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }

private:
    int fd_ = -1;
};

// Waits until fd is ready for `events` or the deadline passes; false on timeout.
inline bool wait_for(int fd, short events, clock::time_point deadline) {
    for (;;) {
        pollfd p{fd, events, 0};
        const int n = ::poll(&p, 1, ms_left(deadline));
        if (n > 0) return true;
        if (n < 0 && errno != EINTR) return true;  // let the read or write report the error
        if (clock::now() >= deadline) return false;
    }
}

enum class io_status { done, timed_out, broken };

// Sends (out) or receives `bytes` at p through fd, waiting for it as it needs, until all have gone, the deadline
// passes or the connection fails (broken: errno says why, 0 when the peer closed its end). Sending never writes
// through p.
inline io_status move_bytes(int fd, char* p, std::size_t bytes, bool out, clock::time_point deadline) {
    while (bytes > 0) {
        if (!wait_for(fd, out ? POLLOUT : POLLIN, deadline)) return io_status::timed_out;
        errno = 0;
        const ssize_t n = out ? ::send(fd, p, bytes, MSG_NOSIGNAL | MSG_DONTWAIT) : ::recv(fd, p, bytes, MSG_DONTWAIT);
        if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
        if (n <= 0) return io_status::broken;
        p += n;
        bytes -= std::size_t(n);
    }
    return io_status::done;
}

}  // namespace detail

class tcp_group {
public:
    // Joins the group of `world` processes as `rank`, meeting at `where` (unused when world is 1). Returns when
    // every rank has joined; throws sgt::error when the rendezvous fails or times out, or when a rank was
    // started with another world size.
    tcp_group(int rank, int world, const rendezvous& where, group_options o = {})
        : rank_(rank), world_(world), timeout_s_(o.timeout_s), wait_s_(o.timeout_s) {
        require(world >= 1 && rank >= 0 && rank < world, "group: rank {} of world size {} is impossible", rank, world);
        require(o.timeout_s > 0.0, "group: expected a positive timeout, found {} s", o.timeout_s);
        if (world == 1) return;
        require(where.how != rendezvous::kind::none,
                "group: {} processes need a rendezvous (file:PATH or tcp://HOST:PORT)", world);
        if (rank == 0)
            host(where);
        else
            join(where);
    }
    tcp_group(const launch_env& e, group_options o = group_options::from_env()) : tcp_group(e.rank, e.world, e.meeting, o) {}

    tcp_group(const tcp_group&) = delete;
    tcp_group& operator=(const tcp_group&) = delete;

    int rank() const { return rank_; }
    int size() const { return world_; }
    double timeout_s() const { return timeout_s_; }

    // Every rank's `mine` (the same length on every rank), rank by rank: identical on every rank.
    template <class T>
        requires std::is_trivially_copyable_v<T>
    std::vector<T> all_gather(std::span<const T> mine) {
        std::vector<T> all(mine.size() * std::size_t(world_));
        std::copy(mine.begin(), mine.end(), all.begin() + std::ptrdiff_t(mine.size()) * rank_);
        if (world_ == 1) return all;
        const std::size_t bytes = mine.size_bytes();
        if (rank_ == 0) {
            for (int r = 1; r < world_; ++r) recv(r, all.data() + mine.size() * std::size_t(r), bytes);
            for (int r = 1; r < world_; ++r) send(r, all.data(), bytes * std::size_t(world_));
        } else {
            send(0, mine.data(), bytes);
            recv(0, all.data(), bytes * std::size_t(world_));
        }
        return all;
    }

    // Every rank's `mine` (any length, also 0) on rank 0, rank by rank, one after the other; an empty vector on
    // the other ranks.
    std::vector<std::byte> gather(std::span<const std::byte> mine) {
        if (rank_ != 0) {
            const std::uint64_t n = mine.size();
            send(0, &n, sizeof n);
            if (n > 0) send(0, mine.data(), mine.size());
            return {};
        }
        std::vector<std::byte> all(mine.begin(), mine.end());
        for (int r = 1; r < world_; ++r) {
            std::uint64_t n = 0;
            recv(r, &n, sizeof n);
            const std::size_t at = all.size();
            all.resize(at + std::size_t(n));
            if (n > 0) recv(r, all.data() + at, std::size_t(n));
        }
        return all;
    }

    // Rank r's bytes [at[r].first, at[r].first + at[r].second) of `data` (a buffer of the same layout on every
    // rank), received into the same place on rank 0.
    void gather_in_place(std::byte* data, std::span<const std::pair<std::size_t, std::size_t>> at) {
        require(int(at.size()) == world_, "group: expected a range for each of {} ranks, found {}", world_, at.size());
        if (rank_ != 0) {
            const auto [offset, bytes] = at[std::size_t(rank_)];
            if (bytes > 0) send(0, data + offset, bytes);
            return;
        }
        for (int r = 1; r < world_; ++r)
            if (at[std::size_t(r)].second > 0) recv(r, data + at[std::size_t(r)].first, at[std::size_t(r)].second);
    }

    // Rank 0's `data` to every rank (the same length on every rank).
    template <class T>
        requires std::is_trivially_copyable_v<T>
    void broadcast(std::span<T> data) {
        if (world_ == 1) return;
        if (rank_ == 0)
            for (int r = 1; r < world_; ++r) send(r, data.data(), data.size_bytes());
        else
            recv(0, data.data(), data.size_bytes());
    }

    // x ← x₀ + x₁ + … + x_{W−1}, element by element, summed on rank 0 in rank order in type Sum (T by default),
    // rounded once to T and sent to all, so the same values on every rank. For host memory.
    template <class T, class Sum = T>
    void all_reduce_sum(std::span<T> x) {
        if (world_ == 1 || x.empty()) return;
        constexpr std::size_t chunk = std::size_t(1) << 20;  // elements per message: bounded scratch
        std::vector<T> part;
        std::vector<Sum> acc;
        for (std::size_t at = 0; at < x.size(); at += chunk) {
            const std::span<T> piece = x.subspan(at, std::min(chunk, x.size() - at));
            if (rank_ == 0) {
                part.resize(piece.size());
                acc.assign(piece.begin(), piece.end());
                for (int r = 1; r < world_; ++r) {
                    recv(r, part.data(), piece.size_bytes());
                    for (std::size_t i = 0; i < piece.size(); ++i) acc[i] += Sum(part[i]);
                }
                for (std::size_t i = 0; i < piece.size(); ++i) piece[i] = T(acc[i]);
                for (int r = 1; r < world_; ++r) send(r, piece.data(), piece.size_bytes());
            } else {
                send(0, piece.data(), piece.size_bytes());
                recv(0, piece.data(), piece.size_bytes());
            }
        }
    }

    // Returns when every rank has called it. `timeout_s`: how long to wait (the group's timeout by default; a
    // rank that exits is noticed at once either way), e.g. longer while rank 0 alone evaluates or saves.
    void barrier(double timeout_s = 0.0) {
        const double saved = wait_s_;
        if (timeout_s > 0.0) wait_s_ = timeout_s;
        const char c = 0;
        try {
            (void)all_gather(std::span<const char>(&c, 1));
        } catch (...) {
            wait_s_ = saved;
            throw;
        }
        wait_s_ = saved;
    }

    // A rank this one is connected to (every rank for rank 0; rank 0 for the others) whose connection is closed:
    // it exited. -1 when none is. Reads nothing (data already sent for the next collective stays queued).
    int closed_peer() {
        for (std::size_t i = 0; i < peers_.size(); ++i) {
            if (!peers_[i]) continue;
            pollfd p{peers_[i].get(), POLLIN, 0};
            if (::poll(&p, 1, 0) <= 0) continue;
            char c = 0;
            if (::recv(peers_[i].get(), &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0) return rank_ == 0 ? int(i) : 0;
        }
        return -1;
    }

    // Closes every connection now: the other ranks fail at their next collective instead of waiting.
    void abort() {
        for (auto& p : peers_) p.close();
        listener_.close();
    }

private:
    static constexpr std::uint32_t magic = 0x53475444;  // "SGTD"
    struct hello {
        std::uint32_t magic;
        std::int32_t rank, world;
    };
    struct reply {
        std::int32_t status;  // 0 joined; 1 world size differs; 2 rank taken
        std::int32_t world;
    };

    [[noreturn]] void lost(int peer, const std::string& what) const {
        fail("rank {}: {} rank {}{}", rank_, what, peer,
             peer == 0 ? " (rank 0, the hub of the group)" : "");
    }
    // After a failed send or recv (errno set, or 0 from recv: the peer closed its end).
    [[noreturn]] void broken(int r) const {
        if (errno == 0 || errno == ECONNRESET || errno == EPIPE)
            lost(r, "the connection was closed (the process exited or failed) by");
        lost(r, fmt::format("lost the connection ({}) to", std::strerror(errno)));
    }
    detail::socket_fd& peer(int r) { return peers_[std::size_t(rank_ == 0 ? r : 0)]; }

    void send(int r, const void* data, std::size_t bytes) {
        auto& s = peer(r);
        if (!s) lost(r, "the connection is closed to");
        char* p = const_cast<char*>(static_cast<const char*>(data));  // only read
        switch (detail::move_bytes(s.get(), p, bytes, true, detail::deadline_after(wait_s_))) {
            case detail::io_status::timed_out:
                lost(r, fmt::format("waited {} s (SGT_DIST_TIMEOUT) to send to", wait_s_));
            case detail::io_status::broken: broken(r);
            case detail::io_status::done: return;
        }
    }
    void recv(int r, void* data, std::size_t bytes) {
        auto& s = peer(r);
        if (!s) lost(r, "the connection is closed to");
        switch (detail::move_bytes(s.get(), static_cast<char*>(data), bytes, false, detail::deadline_after(wait_s_))) {
            case detail::io_status::timed_out:
                lost(r, fmt::format("waited {} s (SGT_DIST_TIMEOUT) in vain for data from", wait_s_));
            case detail::io_status::broken: broken(r);
            case detail::io_status::done: return;
        }
    }

    static void no_delay(int fd) {
        const int one = 1;
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }

    // Rank 0: listen, accept world − 1 ranks, check their hellos, answer all once all are in.
    void host(const rendezvous& where) {
        listener_ = detail::socket_fd(::socket(AF_INET, SOCK_STREAM, 0));
        require(bool(listener_), "rendezvous: cannot open a socket: {}", std::strerror(errno));
        const int one = 1;
        ::setsockopt(listener_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_ANY);
        a.sin_port = htons(std::uint16_t(where.how == rendezvous::kind::tcp ? where.port : 0));
        if (::bind(listener_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
            const int e = errno;
            fail("rendezvous: rank 0 cannot listen on port {}: {}", ntohs(a.sin_port), std::strerror(e));
        }
        if (::listen(listener_.get(), world_) != 0) {
            const int e = errno;
            fail("rendezvous: listen failed: {}", std::strerror(e));
        }
        if (where.how == rendezvous::kind::file || where.how == rendezvous::kind::mpi) {
            socklen_t len = sizeof a;
            ::getsockname(listener_.get(), reinterpret_cast<sockaddr*>(&a), &len);
            char name[256] = {};
            ::gethostname(name, sizeof name - 1);
            if (where.how == rendezvous::kind::file)
                write_rendezvous_file(where.path,
                                      fmt::format("sgt-rendezvous 1 {} {} {}\n", world_, name, ntohs(a.sin_port)));
            else
                detail::mpi_broadcast(fmt::format("{} {}", name, ntohs(a.sin_port)), 0, world_);
        }
        peers_.resize(std::size_t(world_));
        const auto deadline = detail::deadline_after(timeout_s_);
        int joined = 0;
        while (joined < world_ - 1) {
            if (!detail::wait_for(listener_.get(), POLLIN, deadline)) {
                std::string missing;
                for (int r = 1; r < world_; ++r)
                    if (!peers_[std::size_t(r)]) missing += fmt::format("{}{}", missing.empty() ? "" : ", ", r);
                remove_file(where);
                fail("rendezvous: {} of the {} other ranks joined rank 0 at {} within {} s (SGT_DIST_TIMEOUT); "
                     "missing: {}",
                     joined, world_ - 1, where.str(), timeout_s_, missing);
            }
            detail::socket_fd s(::accept(listener_.get(), nullptr, nullptr));
            if (!s) continue;
            hello h{};
            if (!read_exact(s.get(), &h, sizeof h, detail::deadline_after(10.0)) || h.magic != magic)
                continue;  // not one of ours (a port scan, a stale client): ignore it
            reply rep{0, world_};
            if (h.world != world_) rep.status = 1;
            else if (h.rank < 1 || h.rank >= world_ || peers_[std::size_t(h.rank)]) rep.status = 2;
            if (rep.status != 0) {
                ::send(s.get(), &rep, sizeof rep, MSG_NOSIGNAL);
                remove_file(where);
                require(rep.status != 1, "rendezvous: rank {} was started with world size {}, rank 0 with {}", h.rank,
                        h.world, world_);
                fail("rendezvous: two processes claim rank {} (or it is outside 1..{})", h.rank, world_ - 1);
            }
            no_delay(s.get());
            peers_[std::size_t(h.rank)] = std::move(s);
            ++joined;
        }
        remove_file(where);
        listener_.close();
        const reply ok{0, world_};
        for (int r = 1; r < world_; ++r) send(r, &ok, sizeof ok);
    }

    // Rank r > 0: find rank 0 (reading the file until it is there, or told by MPI), connect, say hello, wait for
    // the answer.
    void join(rendezvous where) {
        peers_.resize(1);
        if (where.how == rendezvous::kind::mpi) {  // rank 0's "HOST PORT", then as tcp://HOST:PORT
            const std::string at = detail::mpi_broadcast("", rank_, world_);
            std::istringstream in(at);
            require(bool(in >> where.host >> where.port), "rendezvous mpi: rank {} received '{}' from rank 0", rank_,
                    at);
        }
        const auto deadline = detail::deadline_after(timeout_s_);
        std::string last_problem = "nothing tried yet";
        for (;;) {
            if (detail::clock::now() >= deadline) {
                if (where.how == rendezvous::kind::file)
                    fail("rendezvous: rank {} found no rank 0 through '{}' within {} s (SGT_DIST_TIMEOUT): {}; start "
                         "rank 0 with the same SGT_RENDEZVOUS, a path every rank can read",
                         rank_, where.path, timeout_s_, last_problem);
                fail("rendezvous: rank {} could not reach rank 0 at {}:{} within {} s (SGT_DIST_TIMEOUT): {}", rank_,
                     where.host, where.port, timeout_s_, last_problem);
            }
            std::string host_name = where.host;
            int port = where.port;
            if (where.how == rendezvous::kind::file && !read_rendezvous_file(where.path, host_name, port, last_problem)) {
                std::this_thread::sleep_for(std::chrono::milliseconds(50));
                continue;
            }
            if (try_connect(host_name, port, last_problem)) break;
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        const hello h{magic, rank_, world_};
        send(0, &h, sizeof h);
        reply rep{};
        recv(0, &rep, sizeof rep);
        require(rep.status != 1, "rendezvous: rank {} was started with world size {}, rank 0 with {}", rank_, world_,
                rep.world);
        require(rep.status == 0, "rendezvous: rank {} is taken by another process", rank_);
    }

    bool read_rendezvous_file(const std::string& path, std::string& host_name, int& port, std::string& problem) {
        std::ifstream in(path);
        if (!in) {
            problem = fmt::format("'{}' does not exist", path);
            return false;
        }
        std::string tag;
        int version = 0, world = 0;
        if (!(in >> tag >> version >> world >> host_name >> port) || tag != "sgt-rendezvous" || version != 1) {
            problem = fmt::format("'{}' is not a rendezvous file of sgt", path);
            return false;
        }
        if (world != world_) {  // a stale file of another run, or a real mismatch: wait for rank 0 to rewrite it
            problem = fmt::format("'{}' was written by a rank 0 of world size {}, this rank has {}", path, world, world_);
            return false;
        }
        return true;
    }

    // One attempt to connect to rank 0 (at most 5 s). A host name that does not resolve is tried as 127.0.0.1
    // when it is this machine's own name (a container's host name need not resolve).
    bool try_connect(const std::string& host_name, int port, std::string& problem) {
        char own[256] = {};
        ::gethostname(own, sizeof own - 1);
        std::string name = host_name;
        addrinfo hints{};
        hints.ai_family = AF_INET;
        hints.ai_socktype = SOCK_STREAM;
        addrinfo* res = nullptr;
        if (::getaddrinfo(name.c_str(), std::to_string(port).c_str(), &hints, &res) != 0 || res == nullptr) {
            if (name != own) {
                problem = fmt::format("cannot resolve '{}'", name);
                return false;
            }
            name = "127.0.0.1";
            if (::getaddrinfo(name.c_str(), std::to_string(port).c_str(), &hints, &res) != 0 || res == nullptr) {
                problem = "cannot resolve 127.0.0.1";
                return false;
            }
        }
        detail::socket_fd s(::socket(res->ai_family, res->ai_socktype | SOCK_NONBLOCK, res->ai_protocol));
        int rc = s ? ::connect(s.get(), res->ai_addr, res->ai_addrlen) : -1;
        int e = errno;
        ::freeaddrinfo(res);
        if (rc != 0 && s && e == EINPROGRESS) {  // wait for the handshake, then read its outcome
            if (detail::wait_for(s.get(), POLLOUT, detail::deadline_after(5.0))) {
                socklen_t len = sizeof e;
                ::getsockopt(s.get(), SOL_SOCKET, SO_ERROR, &e, &len);
                rc = e == 0 ? 0 : -1;
            } else {
                e = ETIMEDOUT;
            }
        }
        if (rc != 0) {
            problem = fmt::format("connecting to {}:{}: {}", name, port, std::strerror(e));
            return false;
        }
        no_delay(s.get());
        peers_[0] = std::move(s);
        return true;
    }

    static bool read_exact(int fd, void* data, std::size_t bytes, detail::clock::time_point deadline) {
        return detail::move_bytes(fd, static_cast<char*>(data), bytes, false, deadline) == detail::io_status::done;
    }

    static void write_rendezvous_file(const std::string& path, const std::string& text) {
        const std::string tmp = path + ".tmp" + std::to_string(::getpid());
        {
            std::ofstream out(tmp, std::ios::trunc);
            require(bool(out << text), "rendezvous: cannot write '{}' (for '{}')", tmp, path);
        }
        std::error_code ec;
        std::filesystem::rename(tmp, path, ec);
        require(!ec, "rendezvous: cannot create '{}': {}", path, ec.message());
    }
    static void remove_file(const rendezvous& where) {
        std::error_code ec;
        if (where.how == rendezvous::kind::file) std::filesystem::remove(where.path, ec);
    }

    int rank_ = 0, world_ = 1;
    double timeout_s_ = 300.0;
    double wait_s_ = 300.0;  // the current wait of send and recv: timeout_s_, or a barrier's
    detail::socket_fd listener_;
    std::vector<detail::socket_fd> peers_;  // rank 0: one per rank (index 0 unused); others: [0] = rank 0
};

}  // namespace sgt::dist
