// examples/train_cuda: examples/train on the GPU, with the same flags, plus --precision fp32|bf16 (bf16 mixed
// precision: bf16 weights copy and activations, fp32 master weights, AdamW state and loss). Growth, entropy
// logging and evaluation work as on the CPU: the model, attention, growth and trainer are the same templates.
// Several GPUs: `--nproc N` on one host, or N processes from mpirun / torchrun / srun (README, "Several GPUs"),
// over NCCL, which is loaded at run time.
//
//     train_cuda --data input.txt --preset char_small --batch 64 --seq 256 --steps 2000 --variant sgt --precision bf16
#include "sgt/cuda.hpp"
#if __has_include(<nccl.h>)
#include "sgt/dist/nccl.hpp"
#else
#include "sgt/dist/data_parallel.hpp"
namespace sgt::dist {  // built without NCCL's header (CMake did not find it): one GPU only
template <class T>
std::unique_ptr<gradient_sync<T, cuda>> make_gradient_sync(cuda, tcp_group&, const sync_options&) {
    fail("train_cuda was built without NCCL (CMake found no nccl.h): it trains on one GPU; rebuild with NCCL for "
         "several");
}
inline void select_device(cuda, const launch_env&) {}
}  // namespace sgt::dist
#endif
#include "train_main.hpp"

int main(int argc, char** argv) { return examples::train_main<sgt::cuda, float, __nv_bfloat16>(argc, argv); }
