// sgt/dist/mpi.hpp: the MPI rendezvous (launch.hpp's `mpi`, the default under mpirun in a build with MPI): rank 0
// listens on a free port and its address reaches the other ranks through one MPI_Bcast, so that no file and no
// address has to be agreed on before the launch. MPI does nothing else: the gradients then go over NCCL (GPUs) or
// the TCP group (CPUs), as with the other rendezvous.
//
// Built with MPI where SGT_WITH_MPI is defined (sgt's CMake defines it for its programs when it finds MPI, and
// links MPI::MPI_CXX); without it the rendezvous is an error that says so. MPI is initialised on first use if the
// program has not done it, and finalised at exit.
#pragma once

#include <cstdlib>
#include <cstring>
#include <string>

#if defined(SGT_WITH_MPI)
#include <mpi.h>
#endif

#include "sgt/core/error.hpp"

namespace sgt::dist {

#if defined(SGT_WITH_MPI)
inline constexpr bool mpi_built = true;
#else
inline constexpr bool mpi_built = false;
#endif

namespace detail {

constexpr std::size_t mpi_text_max = 255;

// Rank 0's `text` (at most mpi_text_max bytes), returned on every rank of MPI_COMM_WORLD: a collective call that
// each rank makes once; `rank` and `world` are the launcher's, which MPI must confirm.
inline std::string mpi_broadcast(const std::string& text, int rank, int world) {
#if defined(SGT_WITH_MPI)
    int ready = 0;
    MPI_Initialized(&ready);
    if (!ready) {
        require(MPI_Init(nullptr, nullptr) == MPI_SUCCESS, "rendezvous mpi: MPI_Init failed");
        std::atexit([] {
            int done = 0;
            MPI_Finalized(&done);
            if (!done) MPI_Finalize();
        });
    }
    int r = -1, w = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    MPI_Comm_size(MPI_COMM_WORLD, &w);
    require(r == rank && w == world,
            "rendezvous mpi: MPI places this process at rank {} of {}, the launcher's environment at rank {} of {}", r,
            w, rank, world);
    char buffer[mpi_text_max + 1] = {};
    if (rank == 0) {
        require(text.size() <= mpi_text_max, "rendezvous mpi: '{}' is longer than {} bytes", text, mpi_text_max);
        std::memcpy(buffer, text.data(), text.size());
    }
    require(MPI_Bcast(buffer, int(sizeof buffer), MPI_CHAR, 0, MPI_COMM_WORLD) == MPI_SUCCESS,
            "rendezvous mpi: MPI_Bcast failed");
    buffer[mpi_text_max] = '\0';
    return std::string(buffer);
#else
    (void)text;
    fail("rendezvous mpi: rank {} of {}: this build has no MPI (configure where CMake finds it, e.g. after apt-get "
         "install libopenmpi-dev, or define SGT_WITH_MPI and link MPI); use SGT_RENDEZVOUS=file:PATH or "
         "tcp://HOST:PORT",
         rank, world);
#endif
}

}  // namespace detail
}  // namespace sgt::dist
