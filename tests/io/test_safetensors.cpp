// Tests of sgt/io/safetensors.hpp: the format against hand-built bytes and the reference (Python) writer,
// round trips of every dtype, BF16/F16 rounding, every validation error, and the atomic write.
#include "sgt/io/safetensors.hpp"

#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

namespace fs = std::filesystem;
namespace io = sgt::io;

namespace {

// A file from a header string and a data buffer, the length field written byte by byte.
std::vector<std::byte> make_file(std::string_view header, const std::vector<std::uint8_t>& buffer = {}) {
    std::vector<std::byte> out;
    std::uint64_t n = header.size();
    for (int i = 0; i < 8; ++i, n >>= 8) out.push_back(std::byte(n & 0xFF));
    for (char c : header) out.push_back(std::byte(static_cast<unsigned char>(c)));
    for (std::uint8_t b : buffer) out.push_back(std::byte(b));
    return out;
}

std::vector<std::byte> length_field(std::uint64_t n) {
    std::vector<std::byte> out;
    for (int i = 0; i < 8; ++i, n >>= 8) out.push_back(std::byte(n & 0xFF));
    return out;
}

template <class T>
std::vector<std::byte> le_bytes(const std::vector<T>& values) {
    std::vector<std::byte> out;
    for (T v : values) {
        auto raw = std::bit_cast<std::array<std::byte, sizeof(T)>>(v);
        if constexpr (std::endian::native == std::endian::big) std::ranges::reverse(raw);
        out.insert(out.end(), raw.begin(), raw.end());
    }
    return out;
}

std::vector<std::byte> read_file(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::vector<char> chars((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<std::byte> out(chars.size());
    std::memcpy(out.data(), chars.data(), chars.size());
    return out;
}

void write_file(const fs::path& p, const std::vector<std::byte>& bytes) {
    std::ofstream out(p, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

std::vector<std::string> dir_entries(const fs::path& dir) {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
    std::ranges::sort(names);
    return names;
}

// A fresh directory under the system temp dir, removed (permissions restored first) at scope exit.
struct temp_dir {
    fs::path path;
    temp_dir() {
        std::random_device rd;
        path = fs::temp_directory_path() / fmt::format("sgt_io_test_{}_{:08x}", ::getpid(), rd());
        fs::create_directories(path);
    }
    ~temp_dir() {
        std::error_code ec;
        for (const auto& e : fs::recursive_directory_iterator(path, ec))
            if (e.is_directory(ec)) fs::permissions(e.path(), fs::perms::owner_all, fs::perm_options::add, ec);
        fs::permissions(path, fs::perms::owner_all, fs::perm_options::add, ec);
        fs::remove_all(path, ec);
    }
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;
};

// doctest's matcher for a message holding `s`.
doctest::Contains contains(const std::string& s) { return doctest::Contains(doctest::String(s.c_str())); }

std::string message_of_parse(const std::vector<std::byte>& bytes) {
    try {
        (void)io::safetensors::from_bytes(bytes);
    } catch (const sgt::error& e) {
        return e.what();
    }
    return "(no error)";
}

}  // namespace

TEST_CASE("dtype names and sizes") {
    CHECK(io::all_dtypes.size() == 15);
    for (io::dtype t : io::all_dtypes) {
        CAPTURE(io::dtype_name(t));
        CHECK(io::dtype_from_name(io::dtype_name(t)) == t);
        CHECK(io::dtype_size(t) >= 1);
    }
    CHECK(io::dtype_size(io::dtype::f32) == 4);
    CHECK(io::dtype_size(io::dtype::bf16) == 2);
    CHECK(io::dtype_size(io::dtype::f64) == 8);
    CHECK(io::dtype_size(io::dtype::boolean) == 1);
    CHECK(io::dtype_size(io::dtype::u64) == 8);
    CHECK(io::dtype_name(io::dtype::bf16) == "BF16");
    CHECK(io::dtype_name(io::dtype::boolean) == "BOOL");
    CHECK_FALSE(io::dtype_from_name("f32").has_value());
    CHECK_FALSE(io::dtype_from_name("F33").has_value());
    static_assert(io::dtype_of<float> == io::dtype::f32);
    static_assert(io::dtype_of<std::int64_t> == io::dtype::i64);
    static_assert(io::dtype_of<const std::uint8_t> == io::dtype::u8);
    static_assert(io::dtype_of<bool> == io::dtype::boolean);
    static_assert(!io::element<char> && !io::element<long double>);
    CHECK(io::is_floating(io::dtype::bf16));
    CHECK_FALSE(io::is_floating(io::dtype::i32));
}

TEST_CASE("bf16 conversion against hand-computed bits") {
    auto bits = [](std::uint32_t u) { return std::bit_cast<float>(u); };
    CHECK(io::float_to_bf16(1.0f) == 0x3F80);
    CHECK(io::float_to_bf16(-2.0f) == 0xC000);
    CHECK(io::float_to_bf16(0.0f) == 0x0000);
    CHECK(io::float_to_bf16(-0.0f) == 0x8000);
    CHECK(io::float_to_bf16(0.1f) == 0x3DCD);              // 0x3DCCCCCD: low half 0xCCCD > 0x8000 rounds up
    CHECK(io::float_to_bf16(bits(0x3F808000)) == 0x3F80);  // tie between 0x3F80 and 0x3F81: to even (down)
    CHECK(io::float_to_bf16(bits(0x3F818000)) == 0x3F82);  // tie between 0x3F81 and 0x3F82: to even (up)
    CHECK(io::float_to_bf16(bits(0x3F808001)) == 0x3F81);  // just above the tie
    CHECK(io::float_to_bf16(bits(0x3F807FFF)) == 0x3F80);  // just below the tie
    CHECK(io::float_to_bf16(bits(0x7F7FFFFF)) == 0x7F80);  // FLT_MAX rounds to infinity
    CHECK(io::float_to_bf16(std::numeric_limits<float>::infinity()) == 0x7F80);
    CHECK(io::float_to_bf16(-std::numeric_limits<float>::infinity()) == 0xFF80);
    CHECK(io::float_to_bf16(bits(0x00000001)) == 0x0000);  // the smallest subnormal rounds to zero
    // A NaN whose payload sits in the low half must stay a NaN, not round to infinity.
    const std::uint16_t nan = io::float_to_bf16(bits(0x7F800001));
    CHECK((nan & 0x7F80) == 0x7F80);
    CHECK((nan & 0x007F) != 0);
    CHECK(io::float_to_bf16(bits(0xFFC00000)) == 0xFFC0);

    CHECK(io::bf16_to_float(0x3F80) == 1.0f);
    CHECK(io::bf16_to_float(0xC000) == -2.0f);
    CHECK(io::bf16_to_float(0x3DCD) == bits(0x3DCD0000));
    CHECK(std::isinf(io::bf16_to_float(0x7F80)));
    CHECK(std::isnan(io::bf16_to_float(0x7FC0)));
    for (std::uint32_t h = 0; h <= 0xFFFF; ++h) {  // bf16 -> float -> bf16 is the identity (NaNs stay NaN)
        const float f = io::bf16_to_float(static_cast<std::uint16_t>(h));
        if (std::isnan(f)) {
            REQUIRE(std::isnan(io::bf16_to_float(io::float_to_bf16(f))));
        } else {
            REQUIRE(io::float_to_bf16(f) == h);
        }
    }
    static_assert(io::float_to_bf16(1.0f) == 0x3F80, "usable in constant expressions");
}

TEST_CASE("f16 and f8 conversions against hand-computed bits") {
    auto bits = [](std::uint32_t u) { return std::bit_cast<float>(u); };
    CHECK(io::float_to_f16(1.0f) == 0x3C00);
    CHECK(io::float_to_f16(-2.0f) == 0xC000);
    CHECK(io::float_to_f16(0.1f) == 0x2E66);
    CHECK(io::float_to_f16(65504.0f) == 0x7BFF);               // the largest half
    CHECK(io::float_to_f16(65519.99f) == 0x7BFF);              // below the tie with 65536
    CHECK(io::float_to_f16(65520.0f) == 0x7C00);               // the tie: to even, which is infinity
    CHECK(io::float_to_f16(std::ldexp(1.0f, -14)) == 0x0400);  // the smallest normal half
    CHECK(io::float_to_f16(std::ldexp(1.0f, -24)) == 0x0001);  // the smallest subnormal half
    CHECK(io::float_to_f16(std::ldexp(1.0f, -25)) == 0x0000);  // the tie between 0 and 2^-24: to even
    CHECK(io::float_to_f16(std::ldexp(1.5f, -25)) == 0x0001);
    CHECK(io::float_to_f16(std::ldexp(3.0f, -25)) == 0x0002);  // 1.5 units: tie between 1 and 2, to even
    CHECK(io::float_to_f16(std::ldexp(5.0f, -25)) == 0x0002);  // 2.5 units: tie between 2 and 3, to even
    CHECK(io::float_to_f16(bits(0x3F801000)) == 0x3C00);       // 1 + 2^-11: tie, to even (down)
    CHECK(io::float_to_f16(bits(0x3F803000)) == 0x3C02);       // 1 + 3*2^-11: tie, to even (up)
    CHECK(io::float_to_f16(std::numeric_limits<float>::infinity()) == 0x7C00);
    CHECK((io::float_to_f16(std::numeric_limits<float>::quiet_NaN()) & 0x7C00) == 0x7C00);
    CHECK((io::float_to_f16(bits(0x7F800001)) & 0x03FF) != 0);  // a NaN stays a NaN

    CHECK(io::f16_to_float(0x3C00) == 1.0f);
    CHECK(io::f16_to_float(0x0001) == std::ldexp(1.0f, -24));
    CHECK(io::f16_to_float(0x03FF) == std::ldexp(1023.0f, -24));
    CHECK(io::f16_to_float(0x3555) == 0.333251953125f);
    CHECK(io::f16_to_float(0x8000) == 0.0f);
    CHECK(std::signbit(io::f16_to_float(0x8000)));
    CHECK(std::isinf(io::f16_to_float(0xFC00)));
    for (std::uint32_t h = 0; h <= 0xFFFF; ++h) {  // f16 -> float -> f16 is the identity (NaNs stay NaN)
        const float f = io::f16_to_float(static_cast<std::uint16_t>(h));
        if (std::isnan(f)) {
            REQUIRE(std::isnan(io::f16_to_float(io::float_to_f16(f))));
        } else {
            REQUIRE(io::float_to_f16(f) == h);
        }
    }

    CHECK(io::f8_e4m3_to_float(0x38) == 1.0f);                  // 0 0111 000
    CHECK(io::f8_e4m3_to_float(0x7E) == 448.0f);                // 0 1111 110, the largest
    CHECK(io::f8_e4m3_to_float(0x01) == std::ldexp(1.0f, -9));  // the smallest subnormal
    CHECK(io::f8_e4m3_to_float(0xC4) == -3.0f);                 // 1 1000 100
    CHECK(std::isnan(io::f8_e4m3_to_float(0x7F)));
    CHECK(io::f8_e5m2_to_float(0x3C) == 1.0f);
    CHECK(io::f8_e5m2_to_float(0x01) == std::ldexp(1.0f, -16));
    CHECK(std::isinf(io::f8_e5m2_to_float(0x7C)));
}

TEST_CASE("a file built byte by byte is read as the format says") {
    // Header order (b, a) differs from buffer order (a, b); no padding; whitespace inside the JSON.
    const std::string header = R"({ "__metadata__": {"format": "pt", "note": "x\"y"},)"
                               R"( "b": {"dtype": "I32", "shape": [2, 1], "data_offsets": [8, 16]},)"
                               R"( "a": {"data_offsets": [0, 8], "shape": [2], "dtype": "F32"},)"
                               R"( "s": {"dtype": "U8", "shape": [], "data_offsets": [16, 17]},)"
                               R"( "z": {"dtype": "F64", "shape": [0, 5], "data_offsets": [8, 8]}})";
    const std::vector<std::uint8_t> buffer = {
        0x00, 0x00, 0x80, 0x3F,  // a[0] = 1.0f
        0x00, 0x00, 0x00, 0xC0,  // a[1] = -2.0f
        0x07, 0x00, 0x00, 0x00,  // b[0] = 7
        0xFF, 0xFF, 0xFF, 0xFF,  // b[1] = -1
        0xC8,                    // s = 200
    };
    const auto bytes = make_file(header, buffer);
    REQUIRE(bytes.size() == 8 + header.size() + 17);
    const auto f = io::safetensors::from_bytes(bytes);
    CHECK(f.size() == 4);
    CHECK(f.names() == std::vector<std::string>{"b", "a", "s", "z"});
    CHECK(f.metadata() == std::map<std::string, std::string>{{"format", "pt"}, {"note", "x\"y"}});
    CHECK(f.contains("a"));
    CHECK_FALSE(f.contains("__metadata__"));
    const io::tensor_view& a = f.at("a");
    CHECK(a.type == io::dtype::f32);
    CHECK(a.shape == std::vector<std::int64_t>{2});
    CHECK(a.numel() == 2);
    CHECK(a.bytes.size() == 8);
    CHECK(f.read_as<float>("a") == std::vector<float>{1.0f, -2.0f});
    CHECK(f.read_as<double>("a") == std::vector<double>{1.0, -2.0});
    CHECK(f.at("b").shape == std::vector<std::int64_t>{2, 1});
    CHECK(f.read_as<std::int32_t>("b", {2, 1}) == std::vector<std::int32_t>{7, -1});
    CHECK(f.read_as<std::int64_t>("b") == std::vector<std::int64_t>{7, -1});
    CHECK(f.read_as<float>("b") == std::vector<float>{7.0f, -1.0f});
    CHECK(f.at("s").shape.empty());
    CHECK(f.at("s").numel() == 1);
    CHECK(f.read_as<std::uint8_t>("s") == std::vector<std::uint8_t>{200});
    CHECK(f.read_as<std::int16_t>("s") == std::vector<std::int16_t>{200});
    CHECK(f.at("z").numel() == 0);
    CHECK(f.read_as<double>("z").empty());
    CHECK(f.source() == "safetensors buffer");

    // The free functions and read_into agree.
    CHECK(io::read_as<float>(f.at("a")) == std::vector<float>{1.0f, -2.0f});
    std::array<double, 2> out{};
    f.read_into("b", {2, 1}, std::span<double>(out));
    CHECK(out == std::array<double, 2>{7.0, -1.0});

    // The same with the header padded by trailing spaces, as the reference writer does.
    std::string padded = header;
    padded.append((8 - padded.size() % 8) % 8 + 8, ' ');
    const auto g = io::safetensors::from_bytes(make_file(padded, buffer));
    CHECK(g.read_as<float>("a") == std::vector<float>{1.0f, -2.0f});

    // An empty file: "{}" and no buffer.
    const auto e = io::safetensors::from_bytes(make_file("{}"));
    CHECK(e.size() == 0);
    CHECK(e.metadata().empty());

    // The object can move; the views stay valid.
    auto moved = io::safetensors::from_bytes(bytes);
    const io::safetensors keep = std::move(moved);
    CHECK(keep.read_as<float>("a") == std::vector<float>{1.0f, -2.0f});
}

TEST_CASE("a file written by Python's safetensors is read") {
    const fs::path p = fs::path(__FILE__).parent_path() / "data" / "python_written.safetensors";
    REQUIRE(fs::exists(p));
    const auto f = io::safetensors::from_file(p);
    // The reference writer orders tensors by dtype alignment, then name.
    CHECK(f.names() == std::vector<std::string>{"ids", "step", "weight", "scale"});
    CHECK(f.metadata() == std::map<std::string, std::string>{{"source", "tools/write_safetensors_sample.py"}});
    CHECK(f.at("weight").type == io::dtype::f32);
    CHECK(f.read_as<float>("weight", {2, 3}) == std::vector<float>{0.5f, -1.25f, 3.0f, 100.0f, -0.0f, 6.5f});
    CHECK(std::signbit(f.read_as<float>("weight")[4]));
    CHECK(f.at("scale").type == io::dtype::bf16);
    CHECK(f.read_as<float>("scale", {3}) == std::vector<float>{1.0f, -2.0f, 0.15625f});
    CHECK(f.at("ids").type == io::dtype::i64);
    CHECK(f.read_as<std::int64_t>("ids", {4}) ==
          std::vector<std::int64_t>{0, -1, std::int64_t{1} << 40, std::numeric_limits<std::int64_t>::max()});
    CHECK(f.read_as<std::int64_t>("step", {}) == std::vector<std::int64_t>{7});
}

TEST_CASE("the PyTorch fixtures parse and every tensor reads") {
    const fs::path dir = SGT_FIXTURE_DIR;
    int seen = 0;
    if (fs::is_directory(dir)) {
        for (const auto& e : fs::directory_iterator(dir)) {
            if (e.path().extension() != ".safetensors") continue;
            CAPTURE(e.path().string());
            const auto f = io::safetensors::from_file(e.path());
            CHECK(f.size() > 0);
            for (const auto& t : f.tensors()) CHECK(io::read_as<double>(t).size() == std::size_t(t.numel()));
            ++seen;
        }
    }
    if (seen == 0) MESSAGE("no fixtures in " << dir.string() << ": skipped");
}

TEST_CASE("round trip of every dtype with metadata") {
    const std::array<bool, 4> bools{true, false, true, true};
    const std::vector<std::uint8_t> u8{0, 1, 200, 255};
    const std::vector<std::int8_t> i8{-128, 0, 127};
    const std::vector<std::int16_t> i16{-32768, 32767};
    const std::vector<std::uint16_t> u16{0, 65535};
    const std::vector<std::int32_t> i32{std::numeric_limits<std::int32_t>::min(), 123456};
    const std::vector<std::uint32_t> u32{0, 4000000000u};
    const std::vector<std::int64_t> i64{std::numeric_limits<std::int64_t>::min(),
                                        std::numeric_limits<std::int64_t>::max()};
    const std::vector<std::uint64_t> u64{std::numeric_limits<std::uint64_t>::max()};
    const std::vector<float> f32{
        1.5f, -0.0f, std::numeric_limits<float>::infinity(), std::numeric_limits<float>::denorm_min(), 3.25e-20f, 7.0f};
    const std::vector<double> f64{1e300, -1e-300};
    const std::vector<float> to_bf16{1.0f, 0.1f, -3.5f};
    const std::vector<float> to_f16{0.5f, 65504.0f};
    const std::vector<std::byte> e4m3{std::byte{0x38}, std::byte{0x7E}};
    const std::vector<std::byte> e5m2{std::byte{0x3C}, std::byte{0x7C}};
    const std::vector<float> empty;
    const std::array<double, 1> scalar{2.5};

    io::safetensors_writer w;
    w.set_metadata("format", "pt");
    w.set_metadata("note", "\xc3\xbcnicode \"quoted\"\n\ttabbed");
    w.set_metadata("format", "sgt");  // replaces
    w.add("bool", {4}, bools);
    w.add("u8", {2, 2}, u8);
    w.add("i8", {3}, i8);
    w.add("i16", {2}, i16);
    w.add("u16", {2}, u16);
    w.add("i32", {2, 1}, i32);
    w.add("u32", {2}, u32);
    w.add("i64", {2}, i64);
    w.add("u64", {1}, u64);
    w.add("f32", {2, 3}, f32);
    w.add("f64", {2}, std::span<const double>(f64));
    w.add_bf16("bf16", {3}, to_bf16);
    w.add_f16("f16", {2}, to_f16);
    w.add("e4m3", io::dtype::f8_e4m3, {2}, e4m3);
    w.add("e5m2", io::dtype::f8_e5m2, {2}, e5m2);
    w.add("empty", {0, 3}, empty);
    w.add("scalar", {}, scalar);
    w.add("name with \"quotes\" and \xc3\xa9", {1}, std::vector<float>{9.0f});
    CHECK(w.size() == 18);
    CHECK(w.contains("bf16"));

    const std::vector<std::byte> bytes = w.to_bytes();
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | std::to_integer<std::uint64_t>(bytes[std::size_t(i)]);
    CHECK(n % 8 == 0);  // padded as the reference writer pads
    const std::string header(reinterpret_cast<const char*>(bytes.data() + 8), n);
    CHECK(header.front() == '{');
    CHECK(nlohmann::json::parse(header).is_object());
    CHECK(header.find("\"__metadata__\"") != std::string::npos);

    temp_dir dir;
    const fs::path path = dir.path / "all.safetensors";
    w.write(path);
    CHECK(read_file(path) == bytes);
    CHECK(dir_entries(dir.path) == std::vector<std::string>{"all.safetensors"});

    for (const auto& f : {io::safetensors::from_bytes(bytes), io::safetensors::from_file(path)}) {
        CHECK(f.names() == std::vector<std::string>{"bool", "u8", "i8", "i16", "u16", "i32", "u32", "i64", "u64", "f32",
                                                    "f64", "bf16", "f16", "e4m3", "e5m2", "empty", "scalar",
                                                    "name with \"quotes\" and \xc3\xa9"});
        auto metadata = f.metadata();
        CHECK(metadata.erase(std::string(io::checksum_key)) == 1);  // the writer adds the tensors' checksums
        CHECK(metadata ==
              std::map<std::string, std::string>{{"format", "sgt"}, {"note", "\xc3\xbcnicode \"quoted\"\n\ttabbed"}});
        CHECK(f.at("bool").type == io::dtype::boolean);
        CHECK(f.read_as<std::uint8_t>("bool") == std::vector<std::uint8_t>{1, 0, 1, 1});
        CHECK(f.at("u8").type == io::dtype::u8);
        CHECK(f.read_as<std::uint8_t>("u8", {2, 2}) == u8);
        CHECK(f.at("i8").type == io::dtype::i8);
        CHECK(f.read_as<std::int8_t>("i8") == i8);
        CHECK(f.at("i16").type == io::dtype::i16);
        CHECK(f.read_as<std::int16_t>("i16") == i16);
        CHECK(f.at("u16").type == io::dtype::u16);
        CHECK(f.read_as<std::uint16_t>("u16") == u16);
        CHECK(f.at("i32").type == io::dtype::i32);
        CHECK(f.read_as<std::int32_t>("i32", {2, 1}) == i32);
        CHECK(f.at("u32").type == io::dtype::u32);
        CHECK(f.read_as<std::uint32_t>("u32") == u32);
        CHECK(f.at("i64").type == io::dtype::i64);
        CHECK(f.read_as<std::int64_t>("i64") == i64);
        CHECK(f.at("u64").type == io::dtype::u64);
        CHECK(f.read_as<std::uint64_t>("u64") == u64);
        CHECK(f.at("f32").type == io::dtype::f32);
        CHECK(f.read_as<float>("f32", {2, 3}) == f32);
        CHECK(f.at("f32").bytes.size() == 24);
        CHECK(std::ranges::equal(f.at("f32").bytes, le_bytes(f32)));
        CHECK(f.at("f64").type == io::dtype::f64);
        CHECK(f.read_as<double>("f64") == f64);
        CHECK(f.at("bf16").type == io::dtype::bf16);
        CHECK(std::ranges::equal(f.at("bf16").bytes, le_bytes(std::vector<std::uint16_t>{0x3F80, 0x3DCD, 0xC060})));
        CHECK(f.read_as<float>("bf16") == std::vector<float>{1.0f, io::bf16_to_float(0x3DCD), -3.5f});
        CHECK(f.at("f16").type == io::dtype::f16);
        CHECK(std::ranges::equal(f.at("f16").bytes, le_bytes(std::vector<std::uint16_t>{0x3800, 0x7BFF})));
        CHECK(f.read_as<double>("f16") == std::vector<double>{0.5, 65504.0});
        CHECK(f.at("e4m3").type == io::dtype::f8_e4m3);
        CHECK(f.read_as<float>("e4m3") == std::vector<float>{1.0f, 448.0f});
        CHECK(f.at("e5m2").type == io::dtype::f8_e5m2);
        CHECK(f.read_as<float>("e5m2")[0] == 1.0f);
        CHECK(std::isinf(f.read_as<float>("e5m2")[1]));
        CHECK(f.at("empty").shape == std::vector<std::int64_t>{0, 3});
        CHECK(f.read_as<float>("empty").empty());
        CHECK(f.at("scalar").shape.empty());
        CHECK(f.read_as<double>("scalar", {}) == std::vector<double>{2.5});
        CHECK(f.read_as<float>("name with \"quotes\" and \xc3\xa9") == std::vector<float>{9.0f});
        // Integer dtypes convert to float and to wider or fitting integers.
        CHECK(f.read_as<double>("i64") == std::vector<double>{-9223372036854775808.0, 9223372036854775807.0});
        CHECK(f.read_as<std::int64_t>("u32") == std::vector<std::int64_t>{0, 4000000000});
        CHECK(f.read_as<float>("bool") == std::vector<float>{1, 0, 1, 1});
        CHECK(f.read_as<double>("f32")[0] == 1.5);
    }
}

TEST_CASE("typed reads refuse what they cannot convert") {
    io::safetensors_writer w;
    w.add("w", {2, 3}, std::vector<float>{1, 2, 3, 4, 5, 6});
    w.add("i", {3}, std::vector<std::int64_t>{5, -1, 300});
    w.add("big", {1}, std::vector<double>{1e300});
    w.add("u", {1}, std::vector<std::uint64_t>{std::numeric_limits<std::uint64_t>::max()});
    const auto f = io::safetensors::from_bytes(w.to_bytes());

    CHECK_THROWS_WITH_AS(f.at("nope"),
                         doctest::Contains("safetensors buffer: no tensor named 'nope' (it holds 4 tensors: 'w', 'i'"),
                         sgt::error);
    CHECK_THROWS_WITH_AS(f.read_as<float>("nope"), doctest::Contains("no tensor named 'nope'"), sgt::error);
    CHECK_THROWS_WITH_AS(
        f.read_as<std::int32_t>("w"),
        doctest::Contains("tensor 'w': cannot read F32 as I32: float to integer conversion is not allowed"),
        sgt::error);
    CHECK_THROWS_WITH_AS(f.read_as<float>("w", {3, 2}),
                         doctest::Contains("tensor 'w': expected shape [3, 2], found [2, 3]"), sgt::error);
    CHECK_THROWS_WITH_AS(f.read_as<float>("w", {6}), doctest::Contains("expected shape [6], found [2, 3]"), sgt::error);
    CHECK_THROWS_WITH_AS(f.read_as<std::uint8_t>("i"),
                         doctest::Contains("tensor 'i': element 1 is -1, which does not fit in U8 (reading I64 as U8)"),
                         sgt::error);
    CHECK_THROWS_WITH_AS(f.read_as<std::int8_t>("i"), doctest::Contains("element 2 is 300, which does not fit in I8"),
                         sgt::error);
    CHECK(f.read_as<std::int16_t>("i") == std::vector<std::int16_t>{5, -1, 300});
    CHECK_THROWS_WITH_AS(f.read_as<std::int64_t>("u"), doctest::Contains("element 0 is 18446744073709551615"),
                         sgt::error);
    CHECK_THROWS_WITH_AS(f.read_as<float>("big"), doctest::Contains("element 0 is 1e+300, which does not fit in F32"),
                         sgt::error);
    CHECK(f.read_as<double>("big") == std::vector<double>{1e300});
    std::vector<float> five(5);
    CHECK_THROWS_WITH_AS(f.read_into("w", std::span<float>(five)),
                         doctest::Contains("tensor 'w': the output holds 5 elements, expected 6 (shape [2, 3])"),
                         sgt::error);
    CHECK_THROWS_WITH_AS(io::read_as<std::int32_t>(f.at("w")), doctest::Contains("tensor 'w': cannot read F32 as I32"),
                         sgt::error);
}

TEST_CASE("malformed bytes are rejected with what was expected and what was found") {
    CHECK_THROWS_WITH_AS(io::safetensors::from_bytes(std::vector<std::byte>(3)),
                         doctest::Contains("expected at least 8 bytes (the header length), found 3 bytes"), sgt::error);
    CHECK_THROWS_WITH_AS(io::safetensors::from_bytes(std::vector<std::byte>{}), doctest::Contains("found 0 bytes"),
                         sgt::error);
    auto huge = length_field(200'000'000);
    huge.resize(64, std::byte{' '});
    CHECK_THROWS_WITH_AS(io::safetensors::from_bytes(huge),
                         doctest::Contains("header length 200000000 exceeds the limit of 100000000 bytes"), sgt::error);
    auto max = length_field(std::numeric_limits<std::uint64_t>::max());
    CHECK_THROWS_WITH_AS(io::safetensors::from_bytes(max),
                         doctest::Contains("header length 18446744073709551615 exceeds"), sgt::error);
    auto longer = length_field(100);
    longer.resize(18, std::byte{' '});
    CHECK_THROWS_WITH_AS(
        io::safetensors::from_bytes(longer),
        doctest::Contains("header length 100 is larger than the 10 bytes that follow the length field"), sgt::error);

    const std::string ok_a = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
    struct bad_case {
        std::string header;
        std::size_t buffer;
        std::string expected;
    };
    const std::string deep = "{\"a\":" + std::string(100000, '[') + std::string(100000, ']') + "}";
    const std::vector<bad_case> cases = {
        {"", 0, "the header is not valid JSON"},
        {"{not json", 0, "the header is not valid JSON"},
        {"{\"\xff\":1}", 0, "the header is not valid JSON"},  // not UTF-8
        {"{} trailing", 0, "the header is not valid JSON"},
        {"[1,2]", 0, "the header must be a JSON object, found [1, 2]"},
        {"\"text\"", 0, "the header must be a JSON object, found the string \"text\""},
        {R"({"a":5})", 0, "tensor 'a': expected an object with dtype, shape and data_offsets, found the number 5"},
        {deep, 0, "tensor 'a': expected an object with dtype, shape and data_offsets, found an array of 1 elements"},
        {R"({"a":{"shape":[2],"data_offsets":[0,8]}})", 8, "tensor 'a': missing \"dtype\""},
        {R"({"a":{"dtype":7,"shape":[2],"data_offsets":[0,8]}})", 8,
         "tensor 'a': dtype must be a string, found the number 7"},
        {R"({"a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}})", 8,
         "tensor 'a': unknown dtype \"F33\", expected one of BOOL, U8"},
        {R"({"a":{"dtype":"F32","data_offsets":[0,8]}})", 8, "tensor 'a': missing \"shape\""},
        {R"({"a":{"dtype":"F32","shape":3,"data_offsets":[0,8]}})", 8,
         "tensor 'a': shape must be a list of non-negative integers, found the number 3"},
        {R"({"a":{"dtype":"F32","shape":[2,-1],"data_offsets":[0,8]}})", 8,
         "shape must be a list of non-negative integers, found [2, -1] (dimension 1 is the number -1)"},
        {R"({"a":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})", 8, "(dimension 0 is the number 2.5)"},
        {R"({"a":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}})", 8, "(dimension 0 is the string \"2\")"},
        {R"({"a":{"dtype":"F32","shape":[[2]],"data_offsets":[0,8]}})", 8, "(dimension 0 is [2])"},
        {R"({"a":{"dtype":"F32","shape":[9223372036854775808],"data_offsets":[0,8]}})", 8,
         "(dimension 0 is the number 9223372036854775808)"},
        {R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8,
         "tensor 'a': the byte size of shape [4294967296, 4294967296] of F32 overflows 64 bits"},
        {R"({"a":{"dtype":"F32","shape":[2]}})", 8, "tensor 'a': missing \"data_offsets\""},
        {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", 8,
         "tensor 'a': data_offsets must be two non-negative integers [begin, end], found [0]"},
        {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8,16]}})", 8, "found [0, 8, 16]"},
        {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":["0",8]}})", 8, "found [\"0\", 8]"},
        {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,-8]}})", 8, "found [0, -8]"},
        {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":{"0":8}}})", 8, "found an object of 1 keys"},
        {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", 8,
         "tensor 'a': data_offsets [8, 4] end before they begin"},
        {R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8,
         "tensor 'a': data_offsets [0, 16] reach past the end of the data buffer, which holds 8 bytes"},
        {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 4,
         "tensor 'a': data_offsets [0, 4] span 4 bytes, expected 8 (shape [2] of F32)"},
        {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
         R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
         12, "the data buffer has a gap: bytes [4, 8) before tensor 'b' belong to no tensor"},
        {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8,
         "the data buffer has a gap: bytes [0, 4) before tensor 'a'"},
        {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
         R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
         12, "tensors 'a' and 'b' overlap: 'b' starts at byte 4, 'a' ends at 8"},
        {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
         R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
         8, "tensors 'a' and 'b' overlap"},
        {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 8,
         "the data buffer has 4 trailing bytes after the last tensor (the tensors end at byte 4, the buffer holds 8)"},
        {"{}", 3, "the data buffer has 3 trailing bytes"},
        {R"({"__metadata__":[1]})", 0, "__metadata__ must be an object of strings, found [1]"},
        {R"({"__metadata__":{"k":1}})", 0, "__metadata__ value of key 'k' must be a string, found the number 1"},
        {R"({"__metadata__":{"k":"v","j":{"x":"y"}}})", 0,
         "__metadata__ value of key 'j' must be a string, found an object of 1 keys"},
        {"{" + ok_a + "," + ok_a + "}", 8, "header key 'a' appears more than once"},
        {R"({"__metadata__":{},"__metadata__":{}})", 0, "header key '__metadata__' appears more than once"},
    };
    for (const bad_case& c : cases) {
        CAPTURE(c.header.substr(0, 200));
        const std::string message = message_of_parse(make_file(c.header, std::vector<std::uint8_t>(c.buffer)));
        CHECK_MESSAGE(message.find(c.expected) != std::string::npos, message);
        CHECK(message.starts_with("safetensors buffer: "));
    }

    // Accepted edge cases, so that the checks above are not simply rejecting everything.
    CHECK(io::safetensors::from_bytes(make_file("{" + ok_a + "}", std::vector<std::uint8_t>(8))).size() == 1);
    CHECK(io::safetensors::from_bytes(make_file(R"({"__metadata__":null})")).metadata().empty());
    CHECK(io::safetensors::from_bytes(make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})",
                                                std::vector<std::uint8_t>(8)))
              .size() == 1);  // unknown keys inside an entry are ignored, as the reference does
    CHECK(io::safetensors::from_bytes(
              make_file(
                  R"({"a":{"dtype":"F32","shape":[0,4611686018427387904,4611686018427387904],"data_offsets":[0,0]}})"))
              .at("a")
              .numel() == 0);
}

TEST_CASE("mutated files throw sgt::error or parse, and never anything else") {
    io::safetensors_writer w;
    w.set_metadata("k", "v");
    w.add("a", {2, 2}, std::vector<float>{1, 2, 3, 4});
    w.add("b", {3}, std::vector<std::int64_t>{1, 2, 3});
    w.add_bf16("c", {1}, std::vector<float>{0.5f});
    const std::vector<std::byte> good = w.to_bytes();
    std::mt19937_64 gen(20240601);
    int parsed = 0, rejected = 0;
    for (int trial = 0; trial < 3000; ++trial) {
        std::vector<std::byte> bytes = good;
        const int edits = 1 + int(gen() % 4);
        for (int k = 0; k < edits; ++k) {
            switch (gen() % 4) {
                case 0: bytes[gen() % bytes.size()] = std::byte(gen() & 0xFF); break;
                case 1: bytes[8 + gen() % (bytes.size() - 8)] = std::byte("0123456789[]{},:\"-"[gen() % 18]); break;
                case 2: bytes.resize(gen() % (bytes.size() + 1)); break;
                default:
                    bytes.insert(bytes.begin() + std::ptrdiff_t(gen() % (bytes.size() + 1)), std::byte(gen() & 0xFF));
            }
            if (bytes.size() < 9) bytes.resize(9);
        }
        try {
            const auto f = io::safetensors::from_bytes(std::span<const std::byte>(bytes));
            for (const auto& t : f.tensors()) REQUIRE(io::read_as<double>(t).size() == std::size_t(t.numel()));
            ++parsed;
        } catch (const sgt::error&) {
            ++rejected;
        }
    }
    CHECK(parsed + rejected == 3000);
    CHECK(rejected > 1000);
    CHECK(parsed > 0);
}

TEST_CASE("reading a file: errors name the path") {
    temp_dir dir;
    const fs::path missing = dir.path / "missing.safetensors";
    CHECK_THROWS_WITH_AS(io::safetensors::from_file(missing),
                         contains(fmt::format("safetensors file '{}': cannot open it for reading: No such file "
                                              "or directory",
                                              missing.string())),
                         sgt::error);
    CHECK_THROWS_WITH_AS(io::safetensors::from_file(dir.path),
                         doctest::Contains("expected a regular file, found a directory"), sgt::error);

    const fs::path shorter = dir.path / "short.safetensors";
    write_file(shorter, std::vector<std::byte>(5));
    CHECK_THROWS_WITH_AS(
        io::safetensors::from_file(shorter),
        contains(fmt::format("safetensors file '{}': expected at least 8 bytes (the header length), found 5 bytes",
                             shorter.string())),
        sgt::error);

    io::safetensors_writer w;
    w.add("a", {2}, std::vector<float>{1, 2});
    auto bytes = w.to_bytes();
    bytes.pop_back();  // truncated: the last tensor no longer fits
    const fs::path truncated = dir.path / "truncated.safetensors";
    write_file(truncated, bytes);
    CHECK_THROWS_WITH_AS(io::safetensors::from_file(truncated),
                         contains(fmt::format("safetensors file '{}': tensor 'a': data_offsets [0, 8] reach "
                                              "past the end of the data buffer, which holds 7 bytes",
                                              truncated.string())),
                         sgt::error);
    const auto f = io::safetensors::from_bytes(w.to_bytes());
    CHECK(f.read_as<float>("a") == std::vector<float>{1, 2});
}

TEST_CASE("the writer rejects bad tensors and stays unchanged") {
    io::safetensors_writer w;
    w.add("w", {2, 3}, std::vector<float>(6, 1.0f));
    CHECK_THROWS_WITH_AS(w.add("w", {1}, std::vector<float>{1}), doctest::Contains("tensor 'w' was already added"),
                         sgt::error);
    CHECK_THROWS_WITH_AS(w.add("x", {2, 3}, std::vector<float>(5)),
                         doctest::Contains("tensor 'x': shape [2, 3] holds 6 elements, found 5 values"), sgt::error);
    CHECK_THROWS_WITH_AS(w.add_bf16("y", {4}, std::vector<float>(3)),
                         doctest::Contains("tensor 'y': shape [4] holds 4 elements, found 3 values"), sgt::error);
    CHECK_THROWS_WITH_AS(w.add("z", io::dtype::f32, {2, 3}, std::vector<std::byte>(20)),
                         doctest::Contains("tensor 'z': shape [2, 3] of F32 takes 24 bytes, found 20"), sgt::error);
    CHECK_THROWS_WITH_AS(w.add("n", {2, -1}, std::vector<float>{}),
                         doctest::Contains("tensor 'n': shape [2, -1] has the negative dimension -1 at 1"), sgt::error);
    CHECK_THROWS_WITH_AS(
        w.add("o", io::dtype::f64, {std::int64_t{1} << 62, 4}, std::vector<std::byte>{}),
        doctest::Contains("tensor 'o': the byte size of shape [4611686018427387904, 4] of F64 overflows"), sgt::error);
    CHECK_THROWS_WITH_AS(w.add("__metadata__", {1}, std::vector<float>{1}), doctest::Contains("is reserved"),
                         sgt::error);
    CHECK_THROWS_WITH_AS(w.add("bad\xff", {1}, std::vector<float>{1}),
                         doctest::Contains("tensor name \"bad\xff\" is not valid UTF-8"), sgt::error);
    CHECK_THROWS_WITH_AS(w.set_metadata("k", "\xc3"), doctest::Contains("metadata value"), sgt::error);
    CHECK(w.size() == 1);
    CHECK_FALSE(w.contains("x"));
    const auto f = io::safetensors::from_bytes(w.to_bytes());
    CHECK(f.names() == std::vector<std::string>{"w"});
    CHECK(f.read_as<float>("w", {2, 3}) == std::vector<float>(6, 1.0f));
    CHECK(f.metadata().size() == 1);  // the checksums only
    CHECK(f.metadata().contains(std::string(io::checksum_key)));
}

TEST_CASE("atomic write: failures leave the target intact and no temporary file") {
    io::safetensors_writer old_w;
    old_w.add("old", {1}, std::vector<float>{1.0f});
    io::safetensors_writer new_w;
    new_w.add("new", {2}, std::vector<float>{2.0f, 3.0f});

    SUBCASE("replacing an existing file") {
        temp_dir dir;
        const fs::path target = dir.path / "model.safetensors";
        old_w.write(target);
        CHECK(io::safetensors::from_file(target).names() == std::vector<std::string>{"old"});
        new_w.write(target);
        CHECK(read_file(target) == new_w.to_bytes());
        CHECK(dir_entries(dir.path) == std::vector<std::string>{"model.safetensors"});
    }
    SUBCASE("into a missing directory") {
        temp_dir dir;
        const fs::path target = dir.path / "no" / "such" / "model.safetensors";
        CHECK_THROWS_WITH_AS(new_w.write(target),
                             contains(fmt::format("cannot write safetensors file '{}'", target.string())), sgt::error);
        CHECK_THROWS_WITH_AS(new_w.write(target), doctest::Contains("No such file or directory"), sgt::error);
        CHECK_FALSE(fs::exists(dir.path / "no"));
        CHECK(dir_entries(dir.path).empty());
    }
    SUBCASE("into a read-only directory") {
        temp_dir dir;
        const fs::path target = dir.path / "model.safetensors";
        old_w.write(target);
        const std::vector<std::byte> before = read_file(target);
        fs::permissions(dir.path, fs::perms::owner_read | fs::perms::owner_exec);
        const fs::path probe = dir.path / "probe";
        const bool writable = std::ofstream(probe).is_open();  // as root, permission bits do not stop writes
        if (writable) {
            fs::remove(probe);
            MESSAGE("the read-only directory is still writable (running as root?): sub-case skipped");
        } else {
            CHECK_THROWS_WITH_AS(new_w.write(target),
                                 contains(fmt::format("cannot write safetensors file '{}'", target.string())),
                                 sgt::error);
            CHECK_THROWS_WITH_AS(new_w.write(target), doctest::Contains("Permission denied"), sgt::error);
            CHECK(read_file(target) == before);
            CHECK(dir_entries(dir.path) == std::vector<std::string>{"model.safetensors"});
        }
        fs::permissions(dir.path, fs::perms::owner_all);
    }
    SUBCASE("a read-only file system, a full disk, an I/O error (injected, so also as root)") {
        temp_dir dir;
        const fs::path target = dir.path / "model.safetensors";
        old_w.write(target);
        const std::vector<std::byte> before = read_file(target);
        for (const auto& fault : {std::tuple{io::file_op::open, EROFS, "Read-only file system"},
                                  std::tuple{io::file_op::write, ENOSPC, "No space left on device"},
                                  std::tuple{io::file_op::fsync, EIO, "Input/output error"},
                                  std::tuple{io::file_op::rename, EIO, "Input/output error"}}) {
            const io::file_op op = std::get<0>(fault);  // not a structured binding: CAPTURE's lambda reads op
            const int err = std::get<1>(fault);
            const char* const text = std::get<2>(fault);
            CAPTURE(io::to_string(op));
            io::scoped_file_faults faults([op, err](io::file_op o, const fs::path&) { return o == op ? err : 0; });
            CHECK_THROWS_WITH_AS(new_w.write(target),
                                 contains(fmt::format("cannot write safetensors file '{}'", target.string())),
                                 sgt::error);
            CHECK_THROWS_WITH_AS(new_w.write(target), doctest::Contains(text), sgt::error);
            CHECK(read_file(target) == before);
            CHECK(dir_entries(dir.path) == std::vector<std::string>{"model.safetensors"});
        }
    }
    SUBCASE("the final rename fails after the temporary file was written") {
        temp_dir dir;
        const fs::path target = dir.path / "model.safetensors";  // a non-empty directory: rename cannot replace it
        fs::create_directories(target);
        write_file(target / "keep", std::vector<std::byte>(3, std::byte{7}));
        CHECK_THROWS_WITH_AS(new_w.write(target), doctest::Contains("cannot rename"), sgt::error);
        CHECK_THROWS_WITH_AS(new_w.write(target),
                             contains(fmt::format("cannot write safetensors file '{}'", target.string())), sgt::error);
        CHECK(dir_entries(dir.path) == std::vector<std::string>{"model.safetensors"});
        CHECK(dir_entries(target) == std::vector<std::string>{"keep"});
        CHECK(read_file(target / "keep") == std::vector<std::byte>(3, std::byte{7}));
    }
}

TEST_CASE("CRC-32C: the standard check value, the two implementations agree, and continuation") {
    const std::string_view check = "123456789";
    const auto bytes = std::as_bytes(std::span<const char>(check.data(), check.size()));
    CHECK(io::crc32c(bytes) == 0xE3069283u);  // the check value of CRC-32C (Castagnoli) in the CRC catalogue
    CHECK(io::crc32c_bytewise(bytes) == 0xE3069283u);
    CHECK(io::crc32c({}) == 0u);
    std::mt19937 gen(7);
    std::vector<std::byte> data(1000);
    for (auto& b : data) b = std::byte(gen() & 0xFF);
    for (std::size_t n : {1u, 7u, 8u, 9u, 63u, 64u, 1000u}) {
        CAPTURE(n);
        const std::span<const std::byte> part(data.data(), n);
        CHECK(io::crc32c(part) == io::crc32c_bytewise(part));
        CHECK(io::crc32c(part.subspan(n / 2), io::crc32c(part.first(n / 2))) == io::crc32c(part));
    }
}

TEST_CASE("checksums: every tensor's CRC-32C is written, verified on load, and a changed byte is an error") {
    io::safetensors_writer w;
    w.add("a", {2, 2}, std::vector<float>{1, 2, 3, 4});
    w.add("b", {3}, std::vector<std::int32_t>{5, 6, 7});
    w.set_metadata("note", "x");
    const std::vector<std::byte> bytes = w.to_bytes();
    const auto f = io::safetensors::from_bytes(bytes);
    const auto sums = nlohmann::json::parse(f.metadata().at(std::string(io::checksum_key)));
    CHECK(sums.at("a") == fmt::format("{:08x}", io::crc32c(f.at("a").bytes)));
    CHECK(sums.at("b") == fmt::format("{:08x}", io::crc32c(f.at("b").bytes)));
    CHECK(sums.size() == 2);

    SUBCASE("a changed data byte") {
        std::vector<std::byte> bad = bytes;
        bad[bad.size() - 5] ^= std::byte{0x10};  // inside tensor b
        const std::string msg = message_of_parse(bad);
        CHECK(msg.find("tensor 'b' fails its CRC-32C check") != std::string::npos);
        CHECK(msg.find(fmt::format("stored {}", sums.at("b").get<std::string>())) != std::string::npos);
        CHECK(msg.find("its 12 bytes of data are corrupt") != std::string::npos);
    }
    SUBCASE("malformed checksum metadata") {
        auto with = [&](const std::string& value) {
            io::safetensors_writer v;
            v.set_checksums(false);
            v.add("a", {2, 2}, std::vector<float>{1, 2, 3, 4});
            v.set_metadata(std::string(io::checksum_key), value);
            return message_of_parse(v.to_bytes());
        };
        const std::string good = fmt::format("{:08x}", io::crc32c(f.at("a").bytes));
        CHECK(with(fmt::format("{{\"a\":\"{}\"}}", good)) == "(no error)");
        CHECK(with("[1]").find("metadata 'crc32c' must be a JSON object from tensor name to CRC-32C, found [1]") !=
              std::string::npos);
        CHECK(with("{").find("metadata 'crc32c' is not valid JSON") != std::string::npos);
        CHECK(with("{}").find("tensor 'a' has no checksum in metadata 'crc32c'") != std::string::npos);
        CHECK(with(fmt::format("{{\"a\":\"{}\",\"z\":\"00000000\"}}", good))
                  .find("has a checksum of 'z', which is no tensor of the file") != std::string::npos);
        CHECK(with("{\"a\":\"XYZ\"}").find("the checksum of tensor 'a' must be 8 lowercase hex digits, found the "
                                              "string \"XYZ\"") != std::string::npos);
        CHECK(with("{\"a\":12}").find("must be 8 lowercase hex digits, found the number 12") != std::string::npos);
    }
    SUBCASE("without checksums: no key, and such files (as Python writes them) load unverified") {
        io::safetensors_writer v;
        v.set_checksums(false);
        v.add("a", {1}, std::vector<float>{1});
        CHECK(io::safetensors::from_bytes(v.to_bytes()).metadata().empty());
    }
}
