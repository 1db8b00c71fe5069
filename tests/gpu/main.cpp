// The doctest main of the GPU tests: without a CUDA device they exit 77, which CTest reports as skipped.
#define DOCTEST_CONFIG_IMPLEMENT
#include <cuda_runtime.h>
#include <doctest/doctest.h>

#include <cstdio>

int main(int argc, char** argv) {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
        std::printf("no CUDA device: the GPU tests are skipped\n");
        return 77;
    }
    doctest::Context context(argc, argv);
    return context.run();
}
