// sgt/io/safetensors.hpp: reading and writing the safetensors format (weights, fixtures, checkpoints).
//
// A safetensors file is an 8-byte little-endian length N, then N bytes of UTF-8 JSON mapping each tensor name
// to {"dtype", "shape", "data_offsets": [begin, end]} plus an optional "__metadata__" object of strings, then
// the data buffer: row-major, little-endian, offsets relative to its start, tensors tiling it without gaps.
// The reader trusts nothing in its input (it is fuzzed): every field is checked and a bad file throws
// sgt::error saying what was expected and what was found. The writer pads the header with spaces to a multiple
// of 8 bytes as the reference implementation does, and replaces files atomically (temp file, fsync, rename,
// directory fsync; io/file.hpp).
//
// Checksums: the writer stores the CRC-32C of every tensor's bytes in the metadata key "crc32c" (a JSON object
// from tensor name to 8 lowercase hex digits; other readers ignore it), and the reader verifies them whenever
// the key is present, so that a flipped bit in the data is an error instead of silently different weights.
// Also here: exact BF16/F16/F8 -> float and round-to-nearest-even float -> BF16/F16 conversions.
#pragma once

#include "sgt/core/error.hpp"
#include "sgt/core/json.hpp"
#include "sgt/io/file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cerrno>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <ranges>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace sgt::io {

// ---------------------------------------------------------------------------------------------------------
// Element types

// The element types of a safetensors file (the names are the header's "dtype" strings).
enum class dtype : std::uint8_t {
    boolean,  // BOOL, one byte, 0 or 1
    u8,       // U8
    i8,       // I8
    f8_e4m3,  // F8_E4M3 (the "fn" variant: no infinities, S.1111.111 is NaN)
    f8_e5m2,  // F8_E5M2
    i16,      // I16
    u16,      // U16
    f16,      // F16, IEEE binary16
    bf16,     // BF16, the upper half of a binary32
    i32,      // I32
    u32,      // U32
    f32,      // F32
    i64,      // I64
    u64,      // U64
    f64,      // F64
};

// Every dtype, in enum order.
inline constexpr std::array<dtype, 15> all_dtypes{
    dtype::boolean, dtype::u8,  dtype::i8,  dtype::f8_e4m3, dtype::f8_e5m2, dtype::i16, dtype::u16, dtype::f16,
    dtype::bf16,    dtype::i32, dtype::u32, dtype::f32,     dtype::i64,     dtype::u64, dtype::f64};

// Bytes per element.
constexpr std::size_t dtype_size(dtype t) {
    switch (t) {
        case dtype::boolean:
        case dtype::u8:
        case dtype::i8:
        case dtype::f8_e4m3:
        case dtype::f8_e5m2: return 1;
        case dtype::i16:
        case dtype::u16:
        case dtype::f16:
        case dtype::bf16: return 2;
        case dtype::i32:
        case dtype::u32:
        case dtype::f32: return 4;
        case dtype::i64:
        case dtype::u64:
        case dtype::f64: return 8;
    }
    return 0;
}

// The header's name of a dtype ("F32", "BF16", ...).
constexpr std::string_view dtype_name(dtype t) {
    switch (t) {
        case dtype::boolean: return "BOOL";
        case dtype::u8: return "U8";
        case dtype::i8: return "I8";
        case dtype::f8_e4m3: return "F8_E4M3";
        case dtype::f8_e5m2: return "F8_E5M2";
        case dtype::i16: return "I16";
        case dtype::u16: return "U16";
        case dtype::f16: return "F16";
        case dtype::bf16: return "BF16";
        case dtype::i32: return "I32";
        case dtype::u32: return "U32";
        case dtype::f32: return "F32";
        case dtype::i64: return "I64";
        case dtype::u64: return "U64";
        case dtype::f64: return "F64";
    }
    return "?";
}

// The dtype of a header name, or nullopt for a name this library does not know.
constexpr std::optional<dtype> dtype_from_name(std::string_view name) {
    for (dtype t : all_dtypes)
        if (dtype_name(t) == name) return t;
    return std::nullopt;
}

// True for the floating-point dtypes (F8_*, F16, BF16, F32, F64).
constexpr bool is_floating(dtype t) {
    return t == dtype::f8_e4m3 || t == dtype::f8_e5m2 || t == dtype::f16 || t == dtype::bf16 || t == dtype::f32 ||
           t == dtype::f64;
}

namespace detail {
template <class T>
inline constexpr bool has_dtype =
    std::is_same_v<T, bool> || std::is_same_v<T, std::uint8_t> || std::is_same_v<T, std::int8_t> ||
    std::is_same_v<T, std::int16_t> || std::is_same_v<T, std::uint16_t> || std::is_same_v<T, std::int32_t> ||
    std::is_same_v<T, std::uint32_t> || std::is_same_v<T, std::int64_t> || std::is_same_v<T, std::uint64_t> ||
    std::is_same_v<T, float> || std::is_same_v<T, double>;
}  // namespace detail

// A C++ type stored as a safetensors dtype: bool, the fixed-width integers, float, double.
template <class T>
concept element = detail::has_dtype<std::remove_cv_t<T>>;

// An element type that typed reads convert into (every element but bool).
template <class T>
concept numeric_element = element<T> && !std::is_same_v<std::remove_cv_t<T>, bool>;

// The dtype that stores T.
template <element T>
inline constexpr dtype dtype_of = [] {
    using U = std::remove_cv_t<T>;
    if constexpr (std::is_same_v<U, bool>)
        return dtype::boolean;
    else if constexpr (std::is_same_v<U, std::uint8_t>)
        return dtype::u8;
    else if constexpr (std::is_same_v<U, std::int8_t>)
        return dtype::i8;
    else if constexpr (std::is_same_v<U, std::int16_t>)
        return dtype::i16;
    else if constexpr (std::is_same_v<U, std::uint16_t>)
        return dtype::u16;
    else if constexpr (std::is_same_v<U, std::int32_t>)
        return dtype::i32;
    else if constexpr (std::is_same_v<U, std::uint32_t>)
        return dtype::u32;
    else if constexpr (std::is_same_v<U, std::int64_t>)
        return dtype::i64;
    else if constexpr (std::is_same_v<U, std::uint64_t>)
        return dtype::u64;
    else if constexpr (std::is_same_v<U, float>)
        return dtype::f32;
    else
        return dtype::f64;
}();

// ---------------------------------------------------------------------------------------------------------
// Half-precision conversions. To float they are exact; from float they round to nearest, ties to even,
// overflow to infinity, and keep NaN a NaN (quieted) with its sign.

// The bfloat16 bits nearest to f.
constexpr std::uint16_t float_to_bf16(float f) {
    const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
    if ((x & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<std::uint16_t>((x >> 16) | 0x0040u);  // NaN
    const std::uint32_t bias = 0x7FFFu + ((x >> 16) & 1u);  // ties go to the even result
    return static_cast<std::uint16_t>((x + bias) >> 16);
}

// The float a bfloat16 holds (exact).
constexpr float bf16_to_float(std::uint16_t h) { return std::bit_cast<float>(std::uint32_t{h} << 16); }

// The IEEE binary16 bits nearest to f (subnormals included).
constexpr std::uint16_t float_to_f16(float f) {
    const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
    const auto sign = static_cast<std::uint16_t>((x >> 16) & 0x8000u);
    const std::uint32_t ax = x & 0x7FFFFFFFu;
    if (ax > 0x7F800000u) return static_cast<std::uint16_t>(sign | 0x7E00u | ((ax >> 13) & 0x3FFu));  // NaN
    if (ax >= 0x477FF000u) return static_cast<std::uint16_t>(sign | 0x7C00u);  // >= 65520 rounds to infinity
    auto round_shift = [](std::uint32_t mant, std::uint32_t shift) {           // mant >> shift, ties to even
        std::uint32_t r = mant >> shift;
        const std::uint32_t rem = mant & ((1u << shift) - 1u), half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (r & 1u))) ++r;
        return r;
    };
    if (ax < 0x38800000u) {                                       // below 2^-14: a half subnormal or zero
        if (ax <= 0x33000000u) return sign;                       // at most 2^-25 (a tie at 2^-25 goes to the even 0)
        const std::uint32_t e = ax >> 23;                         // biased float exponent, 102..112
        const std::uint32_t mant = (ax & 0x7FFFFFu) | 0x800000u;  // value = mant * 2^(e-150), in units 2^-24
        return static_cast<std::uint16_t>(sign | round_shift(mant, 126u - e));  // may carry into 0x0400
    }
    const std::uint32_t e = (ax >> 23) - 127u + 15u;
    const std::uint32_t r = round_shift((e << 23) | (ax & 0x7FFFFFu), 13u);  // a carry bumps the exponent
    return static_cast<std::uint16_t>(sign | r);
}

// The float an IEEE binary16 holds (exact).
constexpr float f16_to_float(std::uint16_t h) {
    const std::uint32_t sign = std::uint32_t{h & 0x8000u} << 16;
    std::uint32_t exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu;
    if (exp == 0x1Fu) return std::bit_cast<float>(sign | 0x7F800000u | (mant << 13));
    if (exp == 0) {
        if (mant == 0) return std::bit_cast<float>(sign);
        std::uint32_t e = 113;  // 2^-14 as a biased float exponent; normalize the subnormal
        while (!(mant & 0x400u)) {
            mant <<= 1;
            --e;
        }
        return std::bit_cast<float>(sign | (e << 23) | ((mant & 0x3FFu) << 13));
    }
    return std::bit_cast<float>(sign | ((exp + 112u) << 23) | (mant << 13));
}

// The float an F8_E4M3 (fn: bias 7, no infinities, S.1111.111 is NaN) holds (exact).
constexpr float f8_e4m3_to_float(std::uint8_t b) {
    const std::uint32_t sign = std::uint32_t{b & 0x80u} << 24;
    std::uint32_t exp = (b >> 3) & 0xFu, mant = b & 0x7u;
    if (exp == 0xFu && mant == 0x7u) return std::bit_cast<float>(sign | 0x7FC00000u);
    if (exp == 0) {
        if (mant == 0) return std::bit_cast<float>(sign);
        std::uint32_t e = 121;  // 2^-6 as a biased float exponent
        while (!(mant & 0x8u)) {
            mant <<= 1;
            --e;
        }
        return std::bit_cast<float>(sign | (e << 23) | ((mant & 0x7u) << 20));
    }
    return std::bit_cast<float>(sign | ((exp + 120u) << 23) | (mant << 20));
}

// The float an F8_E5M2 holds (exact): it is the upper byte of a binary16.
constexpr float f8_e5m2_to_float(std::uint8_t b) { return f16_to_float(static_cast<std::uint16_t>(b << 8)); }

// ---------------------------------------------------------------------------------------------------------
// Details: little-endian loads and stores, message helpers, checked arithmetic

namespace detail {

using json = nlohmann::json;

template <class T>
T load_le(const std::byte* p) {
    std::array<std::byte, sizeof(T)> raw;
    std::memcpy(raw.data(), p, sizeof(T));
    if constexpr (std::endian::native == std::endian::big) std::ranges::reverse(raw);
    return std::bit_cast<T>(raw);
}

template <class T>
void store_le(std::byte* p, T v) {
    auto raw = std::bit_cast<std::array<std::byte, sizeof(T)>>(v);
    if constexpr (std::endian::native == std::endian::big) std::ranges::reverse(raw);
    std::memcpy(p, raw.data(), sizeof(T));
}

using sgt::detail::clip;
using sgt::detail::describe;

// "[2, 3]".
inline std::string shape_string(std::span<const std::int64_t> shape) {
    std::string s = "[";
    for (std::size_t i = 0; i < shape.size(); ++i) s += fmt::format("{}{}", i ? ", " : "", shape[i]);
    return s + "]";
}

// A non-negative JSON integer, or nullopt.
inline std::optional<std::uint64_t> json_u64(const json& v) {
    if (v.is_number_unsigned()) return v.get<std::uint64_t>();
    if (v.is_number_integer() && v.get<std::int64_t>() >= 0) return static_cast<std::uint64_t>(v.get<std::int64_t>());
    return std::nullopt;
}

// a * b, or nullopt on overflow.
inline std::optional<std::uint64_t> checked_mul(std::uint64_t a, std::uint64_t b) {
    if (a != 0 && b > std::numeric_limits<std::uint64_t>::max() / a) return std::nullopt;
    return a * b;
}

// The bytes that numel(shape) elements of `t` take, or nullopt when that overflows 64 bits.
inline std::optional<std::uint64_t> byte_size(std::span<const std::int64_t> shape, dtype t) {
    if (std::ranges::any_of(shape, [](std::int64_t d) { return d == 0; })) return 0;
    std::optional<std::uint64_t> n = dtype_size(t);
    for (std::int64_t d : shape) {
        n = checked_mul(*n, static_cast<std::uint64_t>(d));
        if (!n) return std::nullopt;
    }
    return n;
}

// A JSON string literal for s; throws sgt::error when s is not valid UTF-8.
inline std::string json_quote(std::string_view s, std::string_view what) {
    try {
        return json(std::string(s)).dump();
    } catch (const json::exception&) {
        fail("safetensors_writer: {} \"{}\" is not valid UTF-8", what, clip(s));
    }
}

inline std::string os_error(int err) { return std::generic_category().message(err); }

}  // namespace detail

// Longest header the reader accepts, as the reference implementation does (100 MB).
inline constexpr std::uint64_t max_header_bytes = 100'000'000;

// The metadata key of the per-tensor CRC-32C checksums.
inline constexpr std::string_view checksum_key = "crc32c";

namespace detail {
inline std::string crc_hex(std::uint32_t c) { return fmt::format("{:08x}", c); }
}  // namespace detail

// ---------------------------------------------------------------------------------------------------------
// Reading

// One tensor of a loaded file: its name, dtype, shape and raw bytes (row-major, little-endian, not aligned
// in general). The bytes point into the owning safetensors object.
struct tensor_view {
    std::string name;
    dtype type = dtype::f32;
    std::vector<std::int64_t> shape;  // [] for a scalar
    std::span<const std::byte> bytes;

    // Number of elements: the product of the shape (1 for a scalar). A zero dimension makes it 0 whatever the
    // others are (the parser bounds the product only of shapes without one, so it must not be multiplied out).
    std::int64_t numel() const {
        if (std::find(shape.begin(), shape.end(), std::int64_t(0)) != shape.end()) return 0;
        std::int64_t n = 1;
        for (std::int64_t d : shape) n *= d;
        return n;
    }
};

namespace detail {

template <class Src, class T, class Load>
void convert_elements(const tensor_view& t, std::span<T> out, std::string_view where, Load load) {
    const std::byte* p = t.bytes.data();
    const std::size_t stride = dtype_size(t.type);
    if constexpr (std::is_floating_point_v<Src> && std::is_integral_v<T>) {
        fail("{}tensor '{}': cannot read {} as {}: float to integer conversion is not allowed", where, clip(t.name),
             dtype_name(t.type), dtype_name(dtype_of<T>));
    } else {
        for (std::size_t i = 0; i < out.size(); ++i) {
            const Src v = load(p + i * stride);
            if constexpr (std::is_same_v<Src, double> && std::is_same_v<T, float>) {
                if (std::isfinite(v) && std::abs(v) > double(std::numeric_limits<float>::max()))
                    fail("{}tensor '{}': element {} is {}, which does not fit in F32 (reading F64 as F32)", where,
                         clip(t.name), i, v);
            }
            if constexpr (std::is_integral_v<T>) {
                if (!std::in_range<T>(v))
                    fail("{}tensor '{}': element {} is {}, which does not fit in {} (reading {} as {})", where,
                         clip(t.name), i, v, dtype_name(dtype_of<T>), dtype_name(t.type), dtype_name(dtype_of<T>));
            }
            out[i] = static_cast<T>(v);
        }
    }
}

// Converts t's elements into out (out.size() == t.numel()); `where` prefixes messages.
template <numeric_element T>
void convert(const tensor_view& t, std::span<T> out, std::string_view where) {
    require(static_cast<std::uint64_t>(t.numel()) == out.size(),
            "{}tensor '{}': the output holds {} elements, expected {} (shape {})", where, clip(t.name), out.size(),
            t.numel(), shape_string(t.shape));
    const std::byte* p = t.bytes.data();
    if (t.type == dtype_of<T> && std::endian::native == std::endian::little) {
        if (!out.empty()) std::memcpy(out.data(), p, out.size_bytes());
        return;
    }
    switch (t.type) {
        case dtype::boolean:
            return convert_elements<std::uint8_t>(
                t, out, where, [](const std::byte* q) { return static_cast<std::uint8_t>(*q != std::byte{0}); });
        case dtype::u8: return convert_elements<std::uint8_t>(t, out, where, load_le<std::uint8_t>);
        case dtype::i8: return convert_elements<std::int8_t>(t, out, where, load_le<std::int8_t>);
        case dtype::i16: return convert_elements<std::int16_t>(t, out, where, load_le<std::int16_t>);
        case dtype::u16: return convert_elements<std::uint16_t>(t, out, where, load_le<std::uint16_t>);
        case dtype::i32: return convert_elements<std::int32_t>(t, out, where, load_le<std::int32_t>);
        case dtype::u32: return convert_elements<std::uint32_t>(t, out, where, load_le<std::uint32_t>);
        case dtype::i64: return convert_elements<std::int64_t>(t, out, where, load_le<std::int64_t>);
        case dtype::u64: return convert_elements<std::uint64_t>(t, out, where, load_le<std::uint64_t>);
        case dtype::f32: return convert_elements<float>(t, out, where, load_le<float>);
        case dtype::f64: return convert_elements<double>(t, out, where, load_le<double>);
        case dtype::f16:
            return convert_elements<float>(t, out, where,
                                           [](const std::byte* q) { return f16_to_float(load_le<std::uint16_t>(q)); });
        case dtype::bf16:
            return convert_elements<float>(t, out, where,
                                           [](const std::byte* q) { return bf16_to_float(load_le<std::uint16_t>(q)); });
        case dtype::f8_e4m3:
            return convert_elements<float>(
                t, out, where, [](const std::byte* q) { return f8_e4m3_to_float(load_le<std::uint8_t>(q)); });
        case dtype::f8_e5m2:
            return convert_elements<float>(
                t, out, where, [](const std::byte* q) { return f8_e5m2_to_float(load_le<std::uint8_t>(q)); });
    }
}

inline void check_shape(const tensor_view& t, const std::vector<std::int64_t>& expected, std::string_view where) {
    require(t.shape == expected, "{}tensor '{}': expected shape {}, found {}", where, clip(t.name),
            shape_string(expected), shape_string(t.shape));
}

}  // namespace detail

// Converts a tensor's elements into out, whose size must be t.numel(). Any integer or float dtype converts to
// float/double (BF16, F16 and F8 exactly; F64 to float rounds, and a finite value beyond float's range is an
// error); integer dtypes (and BOOL, as 0/1) convert to an integer T when every value fits; a float dtype into an
// integer T is an error.
template <numeric_element T>
void read_into(const tensor_view& t, std::span<T> out) {
    detail::convert(t, out, "");
}

// A tensor's elements converted to T (the rules of read_into).
template <numeric_element T>
std::vector<T> read_as(const tensor_view& t) {
    std::vector<T> out(static_cast<std::size_t>(t.numel()));
    detail::convert(t, std::span<T>(out), "");
    return out;
}

// A parsed safetensors file. It owns the bytes; the tensor_views point into them and stay valid for the
// object's lifetime, moves included (a moved std::vector keeps its buffer). Not copyable.
class safetensors {
public:
    // Reads and validates a file. Messages name the path.
    static safetensors from_file(const std::filesystem::path& path) {
        const std::string source = fmt::format("safetensors file '{}'", path.string());
        const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) fail("{}: cannot open it for reading: {}", source, detail::os_error(errno));
        std::vector<std::byte> bytes;
        try {
            struct ::stat st {};
            if (::fstat(fd, &st) != 0) fail("{}: cannot stat it: {}", source, detail::os_error(errno));
            require(S_ISREG(st.st_mode), "{}: expected a regular file, found {}", source,
                    S_ISDIR(st.st_mode) ? "a directory" : "a special file");
            bytes.resize(static_cast<std::size_t>(st.st_size));
            std::size_t done = 0;
            while (done < bytes.size()) {
                const ::ssize_t r =
                    ::read(fd, bytes.data() + done, std::min<std::size_t>(bytes.size() - done, 1u << 30));
                if (r < 0 && errno == EINTR) continue;
                if (r < 0) fail("{}: reading it failed: {}", source, detail::os_error(errno));
                if (r == 0) fail("{}: the file ended after {} of its {} bytes", source, done, bytes.size());
                done += static_cast<std::size_t>(r);
            }
        } catch (...) {
            ::close(fd);
            throw;
        }
        ::close(fd);
        return parse(std::move(bytes), source);
    }

    // Parses and validates an in-memory file, taking ownership of the bytes.
    static safetensors from_bytes(std::vector<std::byte> bytes) {
        return parse(std::move(bytes), "safetensors buffer");
    }

    // Parses and validates an in-memory file (copied). Safe on any input: it throws sgt::error and does
    // nothing else for a malformed one.
    static safetensors from_bytes(std::span<const std::byte> bytes) {
        return from_bytes(std::vector<std::byte>(bytes.begin(), bytes.end()));
    }

    safetensors(safetensors&&) noexcept = default;
    safetensors& operator=(safetensors&&) noexcept = default;
    safetensors(const safetensors&) = delete;
    safetensors& operator=(const safetensors&) = delete;
    ~safetensors() = default;

    // True when the file holds a tensor of that name.
    bool contains(std::string_view name) const { return index_.find(name) != index_.end(); }

    // The tensor of that name; throws sgt::error naming it when absent.
    const tensor_view& at(std::string_view name) const {
        const auto it = index_.find(name);
        if (it == index_.end()) {
            std::string some;
            for (std::size_t i = 0; i < tensors_.size() && i < 8; ++i)
                some += fmt::format("{}'{}'", i ? ", " : "", detail::clip(tensors_[i].name, 80));
            fail("{}: no tensor named '{}' (it holds {} tensors{}{}{})", source_, detail::clip(name), tensors_.size(),
                 tensors_.empty() ? "" : ": ", some, tensors_.size() > 8 ? ", ..." : "");
        }
        return tensors_[it->second];
    }

    // The tensors in header order.
    const std::vector<tensor_view>& tensors() const { return tensors_; }

    // Tensor names in header order.
    std::vector<std::string> names() const {
        std::vector<std::string> out;
        out.reserve(tensors_.size());
        for (const auto& t : tensors_) out.push_back(t.name);
        return out;
    }

    // Number of tensors.
    std::size_t size() const { return tensors_.size(); }

    // The "__metadata__" pairs (empty when the header has none).
    const std::map<std::string, std::string>& metadata() const { return metadata_; }

    // Where the bytes came from, as messages name it: "safetensors file '<path>'" or "safetensors buffer".
    const std::string& source() const { return source_; }

    // Tensor `name` converted to T (see read_into for the rules).
    template <numeric_element T>
    std::vector<T> read_as(std::string_view name) const {
        const tensor_view& t = at(name);
        std::vector<T> out(static_cast<std::size_t>(t.numel()));
        detail::convert(t, std::span<T>(out), prefix());
        return out;
    }

    // As read_as(name), after checking the shape: "expected shape [..], found [..]".
    template <numeric_element T>
    std::vector<T> read_as(std::string_view name, const std::vector<std::int64_t>& expected_shape) const {
        detail::check_shape(at(name), expected_shape, prefix());
        return read_as<T>(name);
    }

    // Tensor `name` converted into out, whose size must be its element count (see the free read_into).
    template <numeric_element T>
    void read_into(std::string_view name, std::span<T> out) const {
        detail::convert(at(name), out, prefix());
    }

    // As read_into(name, out), after checking the shape.
    template <numeric_element T>
    void read_into(std::string_view name, const std::vector<std::int64_t>& expected_shape, std::span<T> out) const {
        detail::check_shape(at(name), expected_shape, prefix());
        detail::convert(at(name), out, prefix());
    }

private:
    safetensors() = default;

    std::string prefix() const { return source_ + ": "; }

    static safetensors parse(std::vector<std::byte> bytes, std::string source) {
        using detail::clip;
        using detail::describe;
        using json = detail::json;
        safetensors s;
        s.source_ = std::move(source);
        s.data_ = std::move(bytes);
        const std::string& src = s.source_;
        const std::vector<std::byte>& d = s.data_;

        require(d.size() >= 8, "{}: expected at least 8 bytes (the header length), found {} bytes", src, d.size());
        const auto n = detail::load_le<std::uint64_t>(d.data());
        require(n <= max_header_bytes, "{}: header length {} exceeds the limit of {} bytes", src, n, max_header_bytes);
        require(n <= d.size() - 8, "{}: header length {} is larger than the {} bytes that follow the length field", src,
                n, d.size() - 8);
        const auto* h = reinterpret_cast<const char*>(d.data() + 8);
        const std::span<const std::byte> buffer(d.data() + 8 + n, d.size() - 8 - n);

        // Top-level keys in header order, and the first one that repeats (a std::map-backed json keeps only
        // the last of equal keys, so repeats are caught while parsing).
        std::vector<std::string> order;
        std::set<std::string, std::less<>> seen;
        std::optional<std::string> repeated;
        const json::parser_callback_t on_event = [&](int depth, json::parse_event_t event, json& parsed) {
            if (depth == 1 && event == json::parse_event_t::key) {
                const auto& key = parsed.get_ref<const std::string&>();
                if (seen.insert(key).second)
                    order.push_back(key);
                else if (!repeated)
                    repeated = key;
            }
            return true;
        };
        json header;
        try {
            header = json::parse(h, h + n, on_event);
        } catch (const json::exception& e) {
            fail("{}: the header is not valid JSON: {}", src, clip(e.what(), 300));
        }
        require(header.is_object(), "{}: the header must be a JSON object, found {}", src, describe(header));
        if (repeated) fail("{}: header key '{}' appears more than once", src, clip(*repeated));

        if (const auto it = header.find("__metadata__"); it != header.end() && !it->is_null()) {
            require(it->is_object(), "{}: __metadata__ must be an object of strings, found {}", src, describe(*it));
            for (const auto& [key, value] : it->items()) {
                require(value.is_string(), "{}: __metadata__ value of key '{}' must be a string, found {}", src,
                        clip(key), describe(value));
                s.metadata_.emplace(key, value.get<std::string>());
            }
        }

        struct span_of {
            std::uint64_t begin, end;
            std::size_t tensor;
        };
        std::vector<span_of> spans;
        for (const std::string& name : order) {
            if (name == "__metadata__") continue;
            const json& e = *header.find(name);
            const std::string at = fmt::format("{}: tensor '{}'", src, clip(name));
            require(e.is_object(), "{}: expected an object with dtype, shape and data_offsets, found {}", at,
                    describe(e));

            const auto dt = e.find("dtype");
            require(dt != e.end(), "{}: missing \"dtype\"", at);
            require(dt->is_string(), "{}: dtype must be a string, found {}", at, describe(*dt));
            const std::optional<dtype> type = dtype_from_name(dt->get_ref<const std::string&>());
            if (!type) {
                std::string known;
                for (dtype t : all_dtypes) known += fmt::format("{}{}", known.empty() ? "" : ", ", dtype_name(t));
                fail("{}: unknown dtype \"{}\", expected one of {}", at, clip(dt->get_ref<const std::string&>()),
                     known);
            }

            const auto sh = e.find("shape");
            require(sh != e.end(), "{}: missing \"shape\"", at);
            require(sh->is_array(), "{}: shape must be a list of non-negative integers, found {}", at, describe(*sh));
            std::vector<std::int64_t> shape;
            shape.reserve(sh->size());
            for (const json& dim : *sh) {
                const auto v = detail::json_u64(dim);
                require(v && *v <= std::uint64_t(std::numeric_limits<std::int64_t>::max()),
                        "{}: shape must be a list of non-negative integers, found {} (dimension {} is {})", at,
                        describe(*sh), shape.size(), describe(dim));
                shape.push_back(static_cast<std::int64_t>(*v));
            }
            const auto nbytes = detail::byte_size(shape, *type);
            require(nbytes.has_value(), "{}: the byte size of shape {} of {} overflows 64 bits", at,
                    detail::shape_string(shape), dtype_name(*type));

            const auto off = e.find("data_offsets");
            require(off != e.end(), "{}: missing \"data_offsets\"", at);
            const bool two = off->is_array() && off->size() == 2;
            const auto begin = two ? detail::json_u64((*off)[0]) : std::nullopt;
            const auto end = two ? detail::json_u64((*off)[1]) : std::nullopt;
            require(begin && end, "{}: data_offsets must be two non-negative integers [begin, end], found {}", at,
                    describe(*off));
            require(*begin <= *end, "{}: data_offsets [{}, {}] end before they begin", at, *begin, *end);
            require(*end <= buffer.size(),
                    "{}: data_offsets [{}, {}] reach past the end of the data buffer, which holds {} bytes", at, *begin,
                    *end, buffer.size());
            require(*end - *begin == *nbytes, "{}: data_offsets [{}, {}] span {} bytes, expected {} (shape {} of {})",
                    at, *begin, *end, *end - *begin, *nbytes, detail::shape_string(shape), dtype_name(*type));

            spans.push_back({*begin, *end, s.tensors_.size()});
            s.index_.emplace(name, s.tensors_.size());
            s.tensors_.push_back(
                tensor_view{name, *type, std::move(shape),
                            buffer.subspan(static_cast<std::size_t>(*begin), static_cast<std::size_t>(*end - *begin))});
        }

        // The tensors must tile the buffer: sorted by offset, each starts where the previous one ends.
        std::ranges::sort(spans, [](const span_of& a, const span_of& b) {
            return std::tie(a.begin, a.end) < std::tie(b.begin, b.end);
        });
        std::uint64_t covered = 0;
        const tensor_view* previous = nullptr;
        for (const span_of& sp : spans) {
            const tensor_view& t = s.tensors_[sp.tensor];
            require(sp.begin >= covered, "{}: tensors '{}' and '{}' overlap: '{}' starts at byte {}, '{}' ends at {}",
                    src, clip(previous ? previous->name : ""), clip(t.name), clip(t.name), sp.begin,
                    clip(previous ? previous->name : ""), covered);
            require(sp.begin == covered,
                    "{}: the data buffer has a gap: bytes [{}, {}) before tensor '{}' belong to no tensor", src,
                    covered, sp.begin, clip(t.name));
            covered = sp.end;
            previous = &t;
        }
        require(covered == buffer.size(),
                "{}: the data buffer has {} trailing bytes after the last tensor (the tensors end at byte {}, the "
                "buffer holds {})",
                src, buffer.size() - covered, covered, buffer.size());
        s.verify_checksums();
        return s;
    }

    // When the metadata holds checksums: one per tensor, each matching the tensor's bytes.
    void verify_checksums() const {
        using detail::clip;
        const auto it = metadata_.find(std::string(checksum_key));
        if (it == metadata_.end()) return;
        detail::json sums;
        try {
            sums = detail::json::parse(it->second);
        } catch (const detail::json::exception& e) {
            fail("{}: metadata '{}' is not valid JSON: {}", source_, checksum_key, clip(e.what(), 200));
        }
        require(sums.is_object(), "{}: metadata '{}' must be a JSON object from tensor name to CRC-32C, found {}",
                source_, checksum_key, detail::describe(sums));
        for (const auto& [name, value] : sums.items())
            require(contains(name), "{}: metadata '{}' has a checksum of '{}', which is no tensor of the file", source_,
                    checksum_key, clip(name));
        for (const tensor_view& t : tensors_) {
            const auto v = sums.find(t.name);
            require(v != sums.end(), "{}: tensor '{}' has no checksum in metadata '{}' (every tensor needs one)",
                    source_, clip(t.name), checksum_key);
            const bool hex = v->is_string() && v->get_ref<const std::string&>().size() == 8 &&
                             std::ranges::all_of(v->get_ref<const std::string&>(), [](char c) {
                                 return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
                             });
            require(hex, "{}: the checksum of tensor '{}' must be 8 lowercase hex digits, found {}", source_,
                    clip(t.name), detail::describe(*v));
            const std::string computed = detail::crc_hex(crc32c(t.bytes));
            require(computed == v->get_ref<const std::string&>(),
                    "{}: tensor '{}' fails its CRC-32C check (stored {}, computed {}): its {} bytes of data are "
                    "corrupt",
                    source_, clip(t.name), v->get_ref<const std::string&>(), computed, t.bytes.size());
        }
    }

    std::vector<std::byte> data_;  // the whole file
    std::vector<tensor_view> tensors_;
    std::map<std::string, std::size_t, std::less<>> index_;  // name -> position in tensors_
    std::map<std::string, std::string> metadata_;
    std::string source_;
};

// ---------------------------------------------------------------------------------------------------------
// Writing

// Builds a safetensors file in memory, tensors in the order added, then returns its bytes or writes it
// atomically. Names must be unique, valid UTF-8 and not "__metadata__". Unless set_checksums(false), the
// metadata key "crc32c" is (re)written with the checksum of every tensor.
class safetensors_writer {
public:
    // Whether the file carries the CRC-32C of every tensor (default: yes).
    void set_checksums(bool on) { checksums_ = on; }

    // Adds a tensor from raw little-endian bytes, whose size must be numel(shape) * dtype_size(type).
    void add(std::string name, dtype type, std::vector<std::int64_t> shape, std::span<const std::byte> data) {
        const std::uint64_t n = check_new(name, type, shape);
        require(n == data.size(), "safetensors_writer: tensor '{}': shape {} of {} takes {} bytes, found {}",
                detail::clip(name), detail::shape_string(shape), dtype_name(type), n, data.size());
        const std::span<std::byte> out = append(std::move(name), type, std::move(shape), n);
        if (!data.empty()) std::memcpy(out.data(), data.data(), data.size());
    }

    // Adds a tensor of T's dtype (float -> F32, std::int64_t -> I64, bool -> BOOL, ...) from any contiguous
    // range: a std::vector, std::array, std::span. Its size must be numel(shape).
    template <std::ranges::contiguous_range R>
    requires element<std::ranges::range_value_t<R>>
    void add(std::string name, std::vector<std::int64_t> shape, const R& data) {
        using T = std::remove_cv_t<std::ranges::range_value_t<R>>;
        const std::span<const T> values(std::ranges::data(data), std::ranges::size(data));
        store(std::move(name), dtype_of<T>, std::move(shape), values, [](std::byte* p, T v) {
            if constexpr (std::is_same_v<T, bool>) *p = std::byte{static_cast<std::uint8_t>(v)};
            else detail::store_le(p, v);
        });
    }

    // Adds float data stored as BF16, each value rounded to nearest, ties to even.
    void add_bf16(std::string name, std::vector<std::int64_t> shape, std::span<const float> data) {
        store(std::move(name), dtype::bf16, std::move(shape), data,
              [](std::byte* p, float v) { detail::store_le(p, float_to_bf16(v)); });
    }

    // Adds float data stored as F16, each value rounded to nearest, ties to even.
    void add_f16(std::string name, std::vector<std::int64_t> shape, std::span<const float> data) {
        store(std::move(name), dtype::f16, std::move(shape), data,
              [](std::byte* p, float v) { detail::store_le(p, float_to_f16(v)); });
    }

    // Sets a "__metadata__" pair (replacing an earlier value of the key).
    void set_metadata(std::string key, std::string value) {
        detail::json_quote(key, "metadata key");
        detail::json_quote(value, "metadata value");
        metadata_.insert_or_assign(std::move(key), std::move(value));
    }

    // True when a tensor of that name was added.
    bool contains(std::string_view name) const { return names_.find(name) != names_.end(); }

    // Number of tensors added.
    std::size_t size() const { return entries_.size(); }

    // The complete file.
    std::vector<std::byte> to_bytes() const {
        const std::string head = header_block();
        std::vector<std::byte> out(head.size() + data_.size());
        std::memcpy(out.data(), head.data(), head.size());
        if (!data_.empty()) std::memcpy(out.data() + head.size(), data_.data(), data_.size());
        return out;
    }

    // Writes the file atomically: into "<path>.tmp.<pid>" in the same directory, fsync, rename over `path`,
    // fsync of the directory (io::write_file_atomically). On failure the temporary file is removed, an existing
    // file at `path` is left as it was, and sgt::error names the path and the OS error.
    void write(const std::filesystem::path& path) const {
        const std::string head = header_block();
        try {
            write_file_atomically(path, {std::as_bytes(std::span<const char>(head.data(), head.size())),
                                         std::span<const std::byte>(data_)});
        } catch (const sgt::error& e) {
            fail("cannot write safetensors file '{}': {}", path.string(), e.what());
        }
    }

private:
    struct entry {
        std::string name;
        dtype type;
        std::vector<std::int64_t> shape;
        std::uint64_t begin, end;
    };

    // Validates a new tensor; returns its byte size.
    std::uint64_t check_new(const std::string& name, dtype type, const std::vector<std::int64_t>& shape) const {
        require(name != "__metadata__", "safetensors_writer: the name '__metadata__' is reserved for the metadata");
        detail::json_quote(name, "tensor name");
        require(!contains(name), "safetensors_writer: tensor '{}' was already added", detail::clip(name));
        for (std::size_t i = 0; i < shape.size(); ++i)
            require(shape[i] >= 0, "safetensors_writer: tensor '{}': shape {} has the negative dimension {} at {}",
                    detail::clip(name), detail::shape_string(shape), shape[i], i);
        const auto n = detail::byte_size(shape, type);
        require(n.has_value() && *n <= std::numeric_limits<std::size_t>::max() - data_.size(),
                "safetensors_writer: tensor '{}': the byte size of shape {} of {} overflows", detail::clip(name),
                detail::shape_string(shape), dtype_name(type));
        return *n;
    }

    // Records a validated tensor of n bytes and grows the buffer for it; returns the new bytes.
    std::span<std::byte> append(std::string name, dtype type, std::vector<std::int64_t> shape, std::uint64_t n) {
        const std::uint64_t begin = data_.size();
        data_.resize(static_cast<std::size_t>(begin + n));
        names_.insert(name);
        entries_.push_back({std::move(name), type, std::move(shape), begin, begin + n});
        return std::span<std::byte>(data_).subspan(static_cast<std::size_t>(begin));
    }

    template <class T, class Store>
    void store(std::string name, dtype type, std::vector<std::int64_t> shape, std::span<const T> values,
               Store store_one) {
        const std::uint64_t n = check_new(name, type, shape);
        const std::uint64_t numel = n / dtype_size(type);
        require(numel == values.size(), "safetensors_writer: tensor '{}': shape {} holds {} elements, found {} values",
                detail::clip(name), detail::shape_string(shape), numel, values.size());
        const std::span<std::byte> out = append(std::move(name), type, std::move(shape), n);
        const std::size_t size = dtype_size(type);
        for (std::size_t i = 0; i < values.size(); ++i) store_one(out.data() + i * size, values[i]);
    }

    // The length field and the JSON header, padded with spaces to a multiple of 8 bytes.
    std::string header_block() const {
        std::string h = "{";
        auto metadata = metadata_;
        if (checksums_) {
            detail::json sums = detail::json::object();
            for (const entry& e : entries_)
                sums[e.name] = detail::crc_hex(crc32c(std::span<const std::byte>(data_).subspan(
                    static_cast<std::size_t>(e.begin), static_cast<std::size_t>(e.end - e.begin))));
            metadata.insert_or_assign(std::string(checksum_key), sums.dump());
        }
        if (!metadata.empty()) {
            h += "\"__metadata__\":{";
            bool first = true;
            for (const auto& [key, value] : metadata) {
                h += fmt::format("{}{}:{}", first ? "" : ",", detail::json_quote(key, "metadata key"),
                                 detail::json_quote(value, "metadata value"));
                first = false;
            }
            h += "}";
        }
        for (const entry& e : entries_) {
            std::string shape;
            for (std::size_t i = 0; i < e.shape.size(); ++i) shape += fmt::format("{}{}", i ? "," : "", e.shape[i]);
            h += fmt::format("{}{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
                             h.size() > 1 ? "," : "", detail::json_quote(e.name, "tensor name"), dtype_name(e.type),
                             shape, e.begin, e.end);
        }
        h += "}";
        h.append((8 - h.size() % 8) % 8, ' ');
        require(h.size() <= max_header_bytes,
                "safetensors_writer: the header takes {} bytes, more than the limit of {}", h.size(), max_header_bytes);
        std::string block(8, '\0');
        detail::store_le(reinterpret_cast<std::byte*>(block.data()), static_cast<std::uint64_t>(h.size()));
        return block + h;
    }

    std::vector<entry> entries_;
    std::set<std::string, std::less<>> names_;
    std::map<std::string, std::string> metadata_;
    std::vector<std::byte> data_;
    bool checksums_ = true;
};

}  // namespace sgt::io
