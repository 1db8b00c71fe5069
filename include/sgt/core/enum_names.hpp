// sgt/core/enum_names.hpp: names of enumerations for logs, JSON and command lines, and their parsing.
//
// An enum E gets names by specialising detail::enum_names<E> with `what` (for messages) and `names` (in the
// order of E's values); to_string(e) and detail::parse_enum<E>(s) then work, the latter with an sgt::error
// that lists the accepted names.
#pragma once

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstddef>
#include <iterator>
#include <string_view>

#include "sgt/core/error.hpp"

namespace sgt {

namespace detail {

template <class E>
struct enum_names;

template <class E>
E parse_enum(std::string_view s) {
    const auto& names = enum_names<E>::names;
    for (std::size_t i = 0; i < std::size(names); ++i)
        if (names[i] == s) return static_cast<E>(i);
    fail("{}: expected one of {}, found \"{}\"", enum_names<E>::what, fmt::join(names, ", "), s);
}

}  // namespace detail

template <class E>
    requires requires { detail::enum_names<E>::names; }
constexpr std::string_view to_string(E e) {
    return detail::enum_names<E>::names[static_cast<std::size_t>(e)];
}

}  // namespace sgt
