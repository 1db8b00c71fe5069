// sgt/core/json.hpp: reading JSON that came from a file (checkpoint metadata, saved schedules) without trusting
// it: typed field reads that throw sgt::error saying which field was expected as what, and what was found, in
// place of nlohmann's exceptions; and the short descriptions of JSON values those messages use.
#pragma once

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "sgt/core/error.hpp"

namespace sgt {

namespace detail {

// A string for a message, cut to a readable length.
inline std::string clip(std::string_view s, std::size_t max = 160) {
    if (s.size() <= max) return std::string(s);
    return fmt::format("{}... ({} bytes)", s.substr(0, max), s.size());
}

// What a JSON value is, for "found ..." in a message. Never recurses (a file may nest a million deep).
inline std::string describe(const nlohmann::json& v) {
    using json = nlohmann::json;
    switch (v.type()) {
        case json::value_t::null: return "null";
        case json::value_t::boolean: return v.get<bool>() ? "true" : "false";
        case json::value_t::string: return fmt::format("the string \"{}\"", clip(v.get_ref<const std::string&>()));
        case json::value_t::number_integer:
        case json::value_t::number_unsigned:
        case json::value_t::number_float: return fmt::format("the number {}", v.dump());
        case json::value_t::object: return fmt::format("an object of {} keys", v.size());
        case json::value_t::array: {
            const bool scalars =
                v.size() <= 16 && std::ranges::all_of(v, [](const json& e) { return e.is_primitive(); });
            if (!scalars) return fmt::format("an array of {} elements", v.size());
            std::string s = "[";
            for (std::size_t i = 0; i < v.size(); ++i)
                s += (i ? ", " : "") + clip(v[i].dump(-1, ' ', false, json::error_handler_t::replace), 40);
            return s + "]";
        }
        default: return "an unsupported JSON value";
    }
}

template <class T>
constexpr std::string_view json_kind() {
    if constexpr (std::is_same_v<T, bool>) return "true or false";
    else if constexpr (std::is_integral_v<T> && std::is_unsigned_v<T>) return "a non-negative integer";
    else if constexpr (std::is_integral_v<T>) return "an integer";
    else if constexpr (std::is_floating_point_v<T>) return "a finite number";
    else if constexpr (std::is_same_v<T, std::string>) return "a string";
    else return "a value";
}

// True when v holds a T (integers must fit T exactly; numbers must be finite).
template <class T>
bool json_is(const nlohmann::json& v) {
    if constexpr (std::is_same_v<T, bool>) {
        return v.is_boolean();
    } else if constexpr (std::is_integral_v<T>) {
        if (v.is_number_unsigned()) return std::in_range<T>(v.get<std::uint64_t>());
        if (v.is_number_integer()) return std::in_range<T>(v.get<std::int64_t>());
        return false;
    } else if constexpr (std::is_floating_point_v<T>) {
        return v.is_number() && std::isfinite(v.get<double>());
    } else {
        static_assert(std::is_same_v<T, std::string>, "json_get: unsupported type");
        return v.is_string();
    }
}

}  // namespace detail

// j[key] as T: an integer type, a floating-point type, bool or std::string, or a std::vector of one of them.
// `where` begins the message: "where: expected \"key\" to be an integer, found the string \"abc\"".
template <class T>
T json_get(const nlohmann::json& j, std::string_view key, std::string_view where) {
    require(j.is_object(), "{}: expected a JSON object with \"{}\", found {}", where, key, detail::describe(j));
    const auto it = j.find(key);
    require(it != j.end(), "{}: expected a field \"{}\", found none", where, key);
    const nlohmann::json& v = *it;
    if constexpr (requires { typename T::value_type; } && !std::is_same_v<T, std::string>) {
        using E = typename T::value_type;
        require(v.is_array(), "{}: expected \"{}\" to be a list of {}, found {}", where, key, detail::json_kind<E>(),
                detail::describe(v));
        T out;
        out.reserve(v.size());
        for (std::size_t i = 0; i < v.size(); ++i) {
            require(detail::json_is<E>(v[i]), "{}: expected \"{}\" to be a list of {}, found {} at index {}", where,
                    key, detail::json_kind<E>(), detail::describe(v[i]), i);
            out.push_back(v[i].template get<E>());
        }
        return out;
    } else {
        require(detail::json_is<T>(v), "{}: expected \"{}\" to be {}{}, found {}", where, key, detail::json_kind<T>(),
                std::is_integral_v<T> && !std::is_same_v<T, bool>
                    ? fmt::format(" in [{}, {}]", std::numeric_limits<T>::min(), std::numeric_limits<T>::max())
                    : std::string(),
                detail::describe(v));
        return v.template get<T>();
    }
}

// Parses `text` as JSON; sgt::error "where: not valid JSON: ..." otherwise.
inline nlohmann::json json_parse(std::string_view text, std::string_view where) {
    try {
        return nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
        fail("{}: not valid JSON: {}", where, detail::clip(e.what(), 300));
    }
}

}  // namespace sgt
