// sgt/dist/launch.hpp: where this process stands in a data-parallel run, from its launcher's environment.
//
// One process per GPU (or per CPU worker), launched by mpirun, torchrun, srun or `train --nproc N`. Each reads
//   rank, world size   RANK / WORLD_SIZE (torchrun, `--nproc`), OMPI_COMM_WORLD_RANK / _SIZE (Open MPI),
//                      PMI_RANK / PMI_SIZE (MPICH, Intel MPI), SLURM_PROCID / SLURM_NTASKS (srun)
//   local rank         LOCAL_RANK, OMPI_COMM_WORLD_LOCAL_RANK, MPI_LOCALRANKID, SLURM_LOCALID (the GPU it takes)
//   rendezvous         SGT_RENDEZVOUS ("file:PATH", "tcp://HOST:PORT" or "mpi"), else MASTER_ADDR + MASTER_PORT
//                      (torchrun's) as tcp://MASTER_ADDR:MASTER_PORT, else, under mpirun (Open MPI's or PMI's
//                      variables) in a build with MPI, mpi (dist/mpi.hpp)
// The first family that is set wins, and its members must agree (a rank below the world size, a local rank
// below it too). No variable set: a run of one process.
#pragma once

#include <charconv>
#include <cstdlib>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "sgt/core/error.hpp"
#include "sgt/dist/mpi.hpp"

namespace sgt::dist {

// How the processes of a run find each other (dist/tcp_group.hpp).
struct rendezvous {
    enum class kind { none, file, tcp, mpi } how = kind::none;
    std::string path;  // file: a path every rank can read; rank 0 writes its address there
    std::string host;  // tcp: rank 0's address, where it listens
    int port = 0;      // tcp: 1..65535

    // "file:/shared/run1/rendezvous", "tcp://10.0.0.1:29500" (a bare "HOST:PORT" is taken as tcp) or "mpi" (rank
    // 0's address through MPI_Bcast, dist/mpi.hpp).
    static rendezvous parse(std::string_view s) {
        rendezvous r;
        if (s == "mpi") {
            r.how = kind::mpi;
            return r;
        }
        if (s.starts_with("file:")) {
            r.how = kind::file;
            r.path = std::string(s.substr(5));
            require(!r.path.empty(), "rendezvous: expected file:PATH, found '{}' (no path)", s);
            return r;
        }
        std::string_view rest = s.starts_with("tcp://") ? s.substr(6) : s;
        const auto colon = rest.rfind(':');
        require(colon != std::string_view::npos && colon > 0,
                "rendezvous: expected file:PATH, tcp://HOST:PORT or mpi, found '{}'", s);
        r.how = kind::tcp;
        r.host = std::string(rest.substr(0, colon));
        if (r.host.size() > 2 && r.host.front() == '[' && r.host.back() == ']') r.host = r.host.substr(1, r.host.size() - 2);
        const std::string_view p = rest.substr(colon + 1);
        const auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), r.port);
        require(ec == std::errc{} && end == p.data() + p.size() && r.port >= 1 && r.port <= 65535,
                "rendezvous: expected a port in 1..65535 after the ':' of '{}', found '{}'", s, p);
        return r;
    }
    std::string str() const {
        switch (how) {
            case kind::file: return "file:" + path;
            case kind::tcp: return fmt::format("tcp://{}:{}", host, port);
            case kind::mpi: return "mpi";
            default: return "none";
        }
    }
};

struct launch_env {
    int rank = 0;
    int world = 1;
    int local_rank = 0;
    std::string source;  // which launcher's variables were read ("" for a single process)
    rendezvous meeting;
    bool distributed() const { return world > 1; }  // a launcher's single process trains as one
};

using env_reader = std::function<std::optional<std::string>(const char*)>;

inline std::optional<std::string> process_env(const char* name) {
    const char* v = std::getenv(name);
    if (v == nullptr) return std::nullopt;
    return std::string(v);
}

namespace detail {
inline int env_int(const env_reader& env, const char* name, int fallback, int lo) {
    const auto v = env(name);
    if (!v) return fallback;
    int x = 0;
    const auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), x);
    require(ec == std::errc{} && end == v->data() + v->size() && x >= lo,
            "launch: expected an integer >= {} in {}, found '{}'", lo, name, *v);
    return x;
}
}  // namespace detail

// The launch environment (see the top of this file); `env` reads a variable (the process's by default).
inline launch_env read_launch_env(const env_reader& env = process_env) {
    struct family {
        const char *rank, *world, *source;
    };
    static constexpr family families[] = {{"RANK", "WORLD_SIZE", "RANK/WORLD_SIZE"},
                                          {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "Open MPI"},
                                          {"PMI_RANK", "PMI_SIZE", "PMI"},
                                          {"SLURM_PROCID", "SLURM_NTASKS", "Slurm"}};
    launch_env e;
    for (const auto& f : families) {
        const bool has_rank = env(f.rank).has_value(), has_world = env(f.world).has_value();
        if (!has_rank && !has_world) continue;
        require(has_rank && has_world, "launch: {} is set but {} is not; a launcher sets both", has_rank ? f.rank : f.world,
                has_rank ? f.world : f.rank);
        e.rank = detail::env_int(env, f.rank, 0, 0);
        e.world = detail::env_int(env, f.world, 1, 1);
        require(e.rank < e.world, "launch: {} = {} is not below {} = {}", f.rank, e.rank, f.world, e.world);
        e.source = f.source;
        break;
    }
    for (const char* name : {"LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"})
        if (env(name)) {
            e.local_rank = detail::env_int(env, name, 0, 0);
            require(e.local_rank < e.world || e.source.empty(), "launch: {} = {} is not below the world size {}", name,
                    e.local_rank, e.world);
            break;
        }
    if (const auto r = env("SGT_RENDEZVOUS"); r && !r->empty()) {
        e.meeting = rendezvous::parse(*r);
    } else if (const auto addr = env("MASTER_ADDR"), port = env("MASTER_PORT"); addr && port) {
        e.meeting = rendezvous::parse(*addr + ":" + *port);
    } else if (mpi_built && (e.source == "Open MPI" || e.source == "PMI")) {
        e.meeting.how = rendezvous::kind::mpi;
    }
    require(e.world == 1 || e.meeting.how != rendezvous::kind::none,
            "launch: {} processes ({}) but no rendezvous: set SGT_RENDEZVOUS=file:PATH (a path every rank can read) "
            "or tcp://HOST:PORT (rank 0's address), or MASTER_ADDR and MASTER_PORT{}",
            e.world, e.source, mpi_built ? "" : " (or run under mpirun a build with MPI)");
    return e;
}

}  // namespace sgt::dist
