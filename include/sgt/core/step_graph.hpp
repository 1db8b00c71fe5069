// sgt/core/step_graph.hpp: the primary template of step_graph, which backends specialise.
#pragma once

namespace sgt {

// A step that runs many times with the same shapes and buffers (a decode step). On a host backend it simply
// runs; a GPU backend specialises it to record the step once as a graph and replay it (backend/cuda/runtime.hpp).
template <class Backend>
class step_graph {
public:
    template <class F>
    void run(F&& step) {
        step();
    }
    void reset() {}
    bool captured() const { return false; }
    void set_enabled(bool) {}
    void set_product_tuning(bool) {}
};

}  // namespace sgt
