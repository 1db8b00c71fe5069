// examples/generate: text from a checkpoint of examples/train, with a KV cache whose slots follow the model's
// frozen loop structure (spec Sec. 7): greedy or sampled (temperature, top-k, top-p, seed), streamed as it comes,
// then prefill and decode tokens/s.
//
//     generate --checkpoint ck --prompt "ROMEO:" --tokens 200 --seed 1 --temperature 0.8 --top-k 40
#include "generate_main.hpp"

int main(int argc, char** argv) { return examples::generate_main<sgt::cpu, float, double>(argc, argv); }
