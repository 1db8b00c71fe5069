// sgt/core/error.hpp: the library's one exception type.
//
// User mistakes (a bad config, a bad file, a bad argument) throw sgt::error with a message that says what was
// expected and what was found. Library code never aborts and never clamps silently.
#pragma once

#if !defined(__CUDACC__)
#include <fmt/format.h>
#else
#include <sstream>
#endif

#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace sgt {

class error : public std::runtime_error {
public:
    explicit error(const std::string& what) : std::runtime_error(what) {}
};

#if !defined(__CUDACC__)
// Throws sgt::error with a fmt-formatted message (the format string checked at compile time).
template <class... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
    throw error(fmt::format(f, std::forward<Args>(args)...));
}

// Throws sgt::error with the formatted message when `ok` is false.
template <class... Args>
void require(bool ok, fmt::format_string<Args...> f, Args&&... args) {
    if (!ok) fail(f, std::forward<Args>(args)...);
}
#else
// The same, in the CUDA kernels' translation unit (backend/cuda/kernels.cu), which nvcc compiles and which
// cannot use fmt (fmt 9's constexpr machinery does not survive nvcc's C++20 host pass). Only the plain `{}`
// placeholder is supported there, each replaced by the next argument as an ostream prints it.
namespace detail {
inline void format_plain(std::ostringstream& out, std::string_view f) { out << f; }
template <class A, class... Rest>
void format_plain(std::ostringstream& out, std::string_view f, const A& a, const Rest&... rest) {
    const auto i = f.find("{}");
    if (i == std::string_view::npos) {
        out << f;
        return;
    }
    out << f.substr(0, i) << a;
    format_plain(out, f.substr(i + 2), rest...);
}
}  // namespace detail

template <class... Args>
[[noreturn]] void fail(std::string_view f, const Args&... args) {
    std::ostringstream out;
    detail::format_plain(out, f, args...);
    throw error(out.str());
}
template <class... Args>
void require(bool ok, std::string_view f, const Args&... args) {
    if (!ok) fail(f, args...);
}
#endif

}  // namespace sgt
