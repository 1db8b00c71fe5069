// sgt/core/error.hpp: the library's one exception type.
//
// User mistakes (a bad config, a bad file, a bad argument) throw sgt::error with a message that says what was
// expected and what was found. Library code never aborts and never clamps silently.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>
#include <utility>

namespace sgt {

class error : public std::runtime_error {
public:
    explicit error(const std::string& what) : std::runtime_error(what) {}
};

// Throws sgt::error with a fmt-formatted message.
template <class... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
    throw error(fmt::format(f, std::forward<Args>(args)...));
}

// Throws sgt::error with the formatted message when `ok` is false.
template <class... Args>
void require(bool ok, fmt::format_string<Args...> f, Args&&... args) {
    if (!ok) fail(f, std::forward<Args>(args)...);
}

}  // namespace sgt
