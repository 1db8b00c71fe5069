// sgt/io/file.hpp: the file operations the library's writers go through, every one checked, and CRC-32C.
//
// Writers (safetensors files, checkpoints, the programs' logs) use these instead of iostreams so that every
// failure is seen: each operation reports its errno, and the checked forms throw sgt::error naming the path,
// what was being done and the OS error. A write that ends short retries; a write that cannot go on (a full disk,
// EIO) fails. Files replaced atomically are written to a temporary file beside the target, fsynced, renamed
// over it, and the directory is fsynced, so that after a crash the path holds the old or the new contents.
//
// Fault injection: a test installs a file_fault_injector (scoped_file_faults); every operation here first asks it
// and, when it answers with an errno, fails with that error without doing anything. So full disks (ENOSPC),
// I/O errors (EIO), read-only file systems (EROFS) and a process killed between two steps (the injector calls
// _exit) are reproduced exactly where they happen, also as root, on any file system.
//
// CRC-32C (Castagnoli, the checksum of iSCSI, ext4 and Btrfs metadata): the SSE4.2 instruction when the build
// targets it, else slicing-by-8 tables; both give the same values.
#pragma once

#include "sgt/core/error.hpp"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#if defined(__SSE4_2__)
#include <nmmintrin.h>
#endif

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

namespace sgt::io {

// ---------------------------------------------------------------------------------------------------------
// Fault injection

// The operations of this header, as a fault injector sees them.
enum class file_op { open, write, fsync, close, rename, exchange, mkdir, remove, read };

constexpr std::string_view to_string(file_op op) {
    switch (op) {
        case file_op::open: return "open";
        case file_op::write: return "write";
        case file_op::fsync: return "fsync";
        case file_op::close: return "close";
        case file_op::rename: return "rename";
        case file_op::exchange: return "exchange";
        case file_op::mkdir: return "mkdir";
        case file_op::remove: return "remove";
        case file_op::read: return "read";
    }
    return "?";
}

// Called before each operation with its kind and path (for a rename or an exchange, the source); returns 0 to
// let it happen, or the errno it fails with instead.
using file_fault_injector = std::function<int(file_op, const std::filesystem::path&)>;

inline file_fault_injector& file_faults() {
    static file_fault_injector injector;
    return injector;
}

// Installs an injector for a scope (tests). Not to be changed while another thread does I/O.
class scoped_file_faults {
public:
    explicit scoped_file_faults(file_fault_injector f) : previous_(std::exchange(file_faults(), std::move(f))) {}
    ~scoped_file_faults() { file_faults() = std::move(previous_); }
    scoped_file_faults(const scoped_file_faults&) = delete;
    scoped_file_faults& operator=(const scoped_file_faults&) = delete;

private:
    file_fault_injector previous_;
};

namespace detail {

inline int injected(file_op op, const std::filesystem::path& p) {
    const auto& f = file_faults();
    return f ? f(op, p) : 0;
}

inline std::string errno_text(int err) { return std::generic_category().message(err); }

}  // namespace detail

// ---------------------------------------------------------------------------------------------------------
// Single operations: each returns 0 or the errno it failed with.

inline int try_rename(const std::filesystem::path& from, const std::filesystem::path& to) {
    if (const int e = detail::injected(file_op::rename, from)) return e;
    return ::rename(from.c_str(), to.c_str()) == 0 ? 0 : errno;
}

// Swaps two existing paths atomically (renameat2 RENAME_EXCHANGE): at every instant each path names one of the
// two. EINVAL or ENOSYS where the file system or kernel cannot do it.
inline int try_exchange(const std::filesystem::path& a, const std::filesystem::path& b) {
    if (const int e = detail::injected(file_op::exchange, a)) return e;
#if defined(RENAME_EXCHANGE)
    return ::renameat2(AT_FDCWD, a.c_str(), AT_FDCWD, b.c_str(), RENAME_EXCHANGE) == 0 ? 0 : errno;
#else
    return ENOSYS;
#endif
}

inline int try_mkdir(const std::filesystem::path& dir) {
    if (const int e = detail::injected(file_op::mkdir, dir)) return e;
    return ::mkdir(dir.c_str(), 0777) == 0 ? 0 : errno;
}

// fsync of a directory, which makes the renames and creations inside it durable.
inline int try_fsync_dir(const std::filesystem::path& dir) {
    if (const int e = detail::injected(file_op::fsync, dir)) return e;
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return errno;
    const int r = ::fsync(fd) == 0 ? 0 : errno;
    ::close(fd);
    return r == EINVAL ? 0 : r;  // some file systems cannot sync a directory; their renames are then as durable as they get
}

// Removes a file or a directory tree; a path that does not exist is not an error.
inline int try_remove_all(const std::filesystem::path& p) {
    if (const int e = detail::injected(file_op::remove, p)) return e;
    std::error_code ec;
    std::filesystem::remove_all(p, ec);
    return ec ? ec.value() : 0;
}

// ---------------------------------------------------------------------------------------------------------
// Checked forms

inline void rename_path(const std::filesystem::path& from, const std::filesystem::path& to) {
    if (const int e = try_rename(from, to))
        fail("cannot rename '{}' to '{}': {}", from.string(), to.string(), detail::errno_text(e));
}

inline void fsync_dir(const std::filesystem::path& dir) {
    if (const int e = try_fsync_dir(dir)) fail("cannot fsync the directory '{}': {}", dir.string(), detail::errno_text(e));
}

// Creates `dir` and its missing parents; an existing directory is fine, an existing file of that name is not.
inline void make_directories(const std::filesystem::path& dir) {
    std::error_code ec;
    if (std::filesystem::is_directory(dir, ec)) return;
    const std::filesystem::path parent = dir.parent_path();
    if (!parent.empty() && parent != dir) make_directories(parent);
    const int e = try_mkdir(dir);
    if (e == EEXIST && std::filesystem::is_directory(dir, ec)) return;
    if (e == EEXIST) fail("cannot create the directory '{}': a file of that name exists", dir.string());
    if (e) fail("cannot create the directory '{}': {}", dir.string(), detail::errno_text(e));
}

// Bytes available to an unprivileged writer on the file system of `path`, or -1 when it cannot be told.
inline std::int64_t free_bytes(const std::filesystem::path& path) {
    struct ::statvfs s {};
    if (::statvfs(path.c_str(), &s) != 0) return -1;
    return std::int64_t(s.f_bavail) * std::int64_t(s.f_frsize);
}

// "1.50 GiB", for messages about sizes.
inline std::string human_bytes(double n) {
    const char* unit[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (n >= 1024.0 && u < 4) {
        n /= 1024.0;
        ++u;
    }
    return u == 0 ? fmt::format("{:.0f} bytes", n) : fmt::format("{:.2f} {}", n, unit[u]);
}

// A file open for writing, written with checked writes. Every failure throws sgt::error naming the file; the
// destructor closes without checking (call close() to see the error of the last step).
class output_file {
public:
    enum class mode { truncate, append, create_new };

    output_file(std::filesystem::path path, mode m) : path_(std::move(path)) {
        if (const int e = detail::injected(file_op::open, path_))
            fail("cannot open '{}' for writing: {}", path_.string(), detail::errno_text(e));
        int flags = O_WRONLY | O_CREAT | O_CLOEXEC;
        flags |= m == mode::append ? O_APPEND : m == mode::truncate ? O_TRUNC : O_EXCL;
        fd_ = ::open(path_.c_str(), flags, 0666);
        if (fd_ < 0) fail("cannot open '{}' for writing: {}", path_.string(), detail::errno_text(errno));
        struct ::stat st {};
        if (::fstat(fd_, &st) == 0) {
            if (S_ISDIR(st.st_mode)) {  // open(O_WRONLY) refuses a directory; kept for clarity
                ::close(fd_);
                fd_ = -1;
                fail("cannot open '{}' for writing: it is a directory", path_.string());
            }
            size_ = S_ISREG(st.st_mode) ? std::int64_t(st.st_size) : 0;
        }
    }
    output_file(const output_file&) = delete;
    output_file& operator=(const output_file&) = delete;
    output_file(output_file&& o) noexcept
        : path_(std::move(o.path_)), fd_(std::exchange(o.fd_, -1)), size_(o.size_) {}
    ~output_file() {
        if (fd_ >= 0) ::close(fd_);
    }

    // Writes all of `bytes`. On a failure the file is cut back to its size before this call (best effort), so
    // that a record is either whole or absent, and sgt::error says how much was being written where.
    void write(std::span<const std::byte> bytes) {
        const auto* p = reinterpret_cast<const char*>(bytes.data());
        std::size_t left = bytes.size();
        while (left > 0) {
            int err = detail::injected(file_op::write, path_);
            ::ssize_t r = -1;
            if (err == 0) {
                r = ::write(fd_, p, std::min<std::size_t>(left, std::size_t(1) << 30));
                if (r < 0 && errno == EINTR) continue;
                err = r < 0 ? errno : r == 0 ? EIO : 0;
            }
            if (err) {
                [[maybe_unused]] const int cut = ::ftruncate(fd_, size_);  // best effort: the write's error is reported
                fail("cannot write to '{}': writing {} bytes at byte {} failed: {}", path_.string(), bytes.size(),
                     size_, detail::errno_text(err));
            }
            p += r;
            left -= std::size_t(r);
        }
        size_ += std::int64_t(bytes.size());
    }
    void write(std::string_view text) { write(std::as_bytes(std::span<const char>(text.data(), text.size()))); }

    // Flushes the file to the disk.
    void sync() {
        int err = detail::injected(file_op::fsync, path_);
        if (err == 0 && ::fsync(fd_) != 0) err = errno;
        if (err == EINVAL) err = 0;  // a pipe or a terminal: nothing to sync
        if (err) fail("cannot write to '{}': fsync failed: {}", path_.string(), detail::errno_text(err));
    }

    void close() {
        if (fd_ < 0) return;
        int err = detail::injected(file_op::close, path_);
        const int r = ::close(fd_);
        fd_ = -1;
        if (err == 0 && r != 0) err = errno;
        if (err) fail("cannot write to '{}': close failed: {}", path_.string(), detail::errno_text(err));
    }

    const std::filesystem::path& path() const { return path_; }
    std::int64_t size() const { return size_; }

private:
    std::filesystem::path path_;
    int fd_ = -1;
    std::int64_t size_ = 0;
};

// Replaces the file at `path` with `parts` (concatenated): written to "<path>.tmp.<pid>" beside it, fsynced,
// renamed over `path`, and the directory fsynced. On a failure the temporary file is removed, `path` is as it
// was, and sgt::error names the path, the step and the OS error.
inline void write_file_atomically(const std::filesystem::path& path,
                                  std::initializer_list<std::span<const std::byte>> parts) {
    const std::filesystem::path tmp = path.string() + ".tmp." + std::to_string(::getpid());
    try {
        output_file out(tmp, output_file::mode::truncate);
        for (const auto& p : parts) out.write(p);
        out.sync();
        out.close();
        rename_path(tmp, path);
    } catch (const sgt::error&) {
        std::error_code ec;
        std::filesystem::remove(tmp, ec);
        throw;
    }
    const std::filesystem::path dir = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
    fsync_dir(dir);
}

inline void write_file_atomically(const std::filesystem::path& path, std::string_view text) {
    write_file_atomically(path, {std::as_bytes(std::span<const char>(text.data(), text.size()))});
}

// Reads at most `max_bytes` of the file at `path` (a regular file, or a device or pipe, which may never end:
// /dev/zero gives exactly max_bytes). A directory, a missing file or a read error throw sgt::error.
inline std::string read_prefix(const std::filesystem::path& path, std::size_t max_bytes) {
    if (const int e = detail::injected(file_op::open, path))
        fail("cannot read '{}': {}", path.string(), detail::errno_text(e));
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail("cannot read '{}': {}", path.string(), detail::errno_text(errno));
    std::string out;
    try {
        struct ::stat st {};
        if (::fstat(fd, &st) != 0) fail("cannot read '{}': {}", path.string(), detail::errno_text(errno));
        require(!S_ISDIR(st.st_mode), "cannot read '{}': it is a directory, expected a file", path.string());
        if (S_ISREG(st.st_mode)) max_bytes = std::min<std::size_t>(max_bytes, std::size_t(st.st_size));
        out.resize(max_bytes);
        std::size_t done = 0;
        while (done < max_bytes) {
            int err = detail::injected(file_op::read, path);
            ::ssize_t r = -1;
            if (err == 0) {
                r = ::read(fd, out.data() + done, std::min<std::size_t>(max_bytes - done, std::size_t(1) << 30));
                if (r < 0 && errno == EINTR) continue;
                err = r < 0 ? errno : 0;
            }
            if (err) fail("cannot read '{}': reading at byte {} failed: {}", path.string(), done, detail::errno_text(err));
            if (r == 0) break;
            done += std::size_t(r);
        }
        out.resize(done);
    } catch (...) {
        ::close(fd);
        throw;
    }
    ::close(fd);
    return out;
}

// ---------------------------------------------------------------------------------------------------------
// CRC-32C

namespace detail {

// Slicing-by-8 tables of the reflected Castagnoli polynomial 0x82F63B78.
inline constexpr auto crc32c_tables = [] {
    std::array<std::array<std::uint32_t, 256>, 8> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
        std::uint32_t c = i;
        for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
        t[0][i] = c;
    }
    for (std::size_t s = 1; s < 8; ++s)
        for (std::uint32_t i = 0; i < 256; ++i) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xFFu];
    return t;
}();

}  // namespace detail

// CRC-32C of `bytes`, continuing from `crc` (the CRC of what came before; 0 to start).
inline std::uint32_t crc32c(std::span<const std::byte> bytes, std::uint32_t crc = 0) {
    const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
    std::size_t n = bytes.size();
    std::uint32_t c = ~crc;
#if defined(__SSE4_2__)
    std::uint64_t c64 = c;
    for (; n >= 8; n -= 8, p += 8) {
        std::uint64_t w;
        std::memcpy(&w, p, 8);
        c64 = _mm_crc32_u64(c64, w);
    }
    c = std::uint32_t(c64);
    for (; n > 0; --n, ++p) c = _mm_crc32_u8(c, *p);
#else
    const auto& t = detail::crc32c_tables;
    for (; n >= 8; n -= 8, p += 8) {
        const std::uint32_t lo = c ^ (std::uint32_t(p[0]) | std::uint32_t(p[1]) << 8 | std::uint32_t(p[2]) << 16 |
                                      std::uint32_t(p[3]) << 24);
        c = t[7][lo & 0xFFu] ^ t[6][(lo >> 8) & 0xFFu] ^ t[5][(lo >> 16) & 0xFFu] ^ t[4][lo >> 24] ^ t[3][p[4]] ^
            t[2][p[5]] ^ t[1][p[6]] ^ t[0][p[7]];
    }
    for (; n > 0; --n, ++p) c = (c >> 8) ^ t[0][(c ^ *p) & 0xFFu];
#endif
    return ~c;
}

// The same CRC by the byte-at-a-time table, whatever the build targets (tests compare the two).
inline std::uint32_t crc32c_bytewise(std::span<const std::byte> bytes, std::uint32_t crc = 0) {
    std::uint32_t c = ~crc;
    for (std::byte b : bytes) c = (c >> 8) ^ detail::crc32c_tables[0][(c ^ std::to_integer<std::uint32_t>(b)) & 0xFFu];
    return ~c;
}

}  // namespace sgt::io
