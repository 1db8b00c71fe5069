// sgt/dist/shared_library.hpp: a shared library loaded at run time (dlopen), for the optional libraries a program
// needs only on some runs (NCCL: only with several GPU processes). What it could not load, and why, is an
// sgt::error that names every file it tried and says how to provide one.
#pragma once

#include <dlfcn.h>

#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "sgt/core/error.hpp"

namespace sgt::dist {

// The files to try for a library: the one an environment variable names (a path or a file name), when it is set
// and not empty, else the defaults in order.
inline std::vector<std::string> library_candidates(const char* env_var, std::vector<std::string> defaults) {
    if (const char* v = std::getenv(env_var); v != nullptr && *v != '\0') return {v};
    return defaults;
}

class shared_library {
public:
    // Opens the first of `files` that loads (RTLD_NOW | RTLD_GLOBAL). Throws sgt::error naming `what`, each file
    // tried with the loader's reason, and `hint`, when none does.
    shared_library(const std::vector<std::string>& files, std::string_view what, std::string_view hint) {
        std::string tried;
        for (const std::string& f : files) {
            handle_ = ::dlopen(f.c_str(), RTLD_NOW | RTLD_GLOBAL);
            if (handle_ != nullptr) {
                file_ = f;
                return;
            }
            const char* e = ::dlerror();
            tried += (tried.empty() ? "" : "; ") + (e ? std::string(e) : f + ": not found");  // dlerror names f
        }
        fail("{} is not available at run time ({}); {}", what, tried.empty() ? std::string("no file to try") : tried,
             hint);
    }
    // Kept open for the life of the process (what it provides may be used until exit).
    shared_library(const shared_library&) = delete;
    shared_library& operator=(const shared_library&) = delete;

    const std::string& file() const { return file_; }

    // The function `name` as a pointer of type F; throws sgt::error when the library lacks it.
    template <class F>
    F function(const char* name) const {
        void* p = ::dlsym(handle_, name);
        require(p != nullptr, "{} has no function {}", file_, name);
        return reinterpret_cast<F>(p);
    }

private:
    void* handle_ = nullptr;
    std::string file_;
};

}  // namespace sgt::dist
