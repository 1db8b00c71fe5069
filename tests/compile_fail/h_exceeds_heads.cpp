// Must NOT compile: a loop budget whose h exceeds the head count (tests/CMakeLists.txt checks the message).
#include "sgt/model.hpp"

constexpr sgt::model_config bad{.shape = {.layers = 2, .heads = 2, .head_dim = 4, .d_ff = 8, .vocab = 16, .max_seq = 8},
                                .loops = {.h = 3, .L = 1, .k_max = 1}};
int main() { sgt::model<float, bad> m(1, 4); }
