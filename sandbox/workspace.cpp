#include "sandbox/workspace.hpp"

#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>
#include <vector>

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace keel::sandbox {

namespace fs = std::filesystem;

namespace {

constexpr unsigned long long inside_resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
constexpr unsigned long long resolved_resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
constexpr std::size_t components_max = 256;  // of a path whose directories are made

std::pair<std::string, std::string> split_last(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos) return {".", path};
  if (slash == 0) return {"/", path.substr(1)};
  return {path.substr(0, slash), path.substr(slash + 1)};
}

std::string strip_trailing_slashes(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

} // namespace

int open_beneath(int dir_fd, const std::string& path, int flags, unsigned long long resolve) {
  open_how how{};
  how.flags = static_cast<unsigned long long>(flags | O_CLOEXEC);
  how.mode = (flags & O_CREAT) ? 0644 : 0;
  how.resolve = resolve;
  for (int attempt = 0; attempt < 16; ++attempt) {
    long fd = ::syscall(SYS_openat2, dir_fd, path.c_str(), &how, sizeof how);
    if (fd >= 0) return static_cast<int>(fd);
    if (errno != EAGAIN && errno != EINTR) return -1;
  }
  return -1;
}

result<std::string> real_path_of(int fd) {
  char link[64];
  std::snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  std::string out(PATH_MAX, '\0');
  auto n = ::readlink(link, out.data(), out.size());
  if (n < 0) return make_error(errc::io, std::string("cannot read the real path of a descriptor: ") + std::strerror(errno));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

error path_error(int error_number, std::string_view given) {
  std::string p(given);
  switch (error_number) {
    case ENOENT: return make_error(errc::not_found, "no such file or directory: " + p);
    case ENOTDIR: return make_error(errc::invalid_argument, "a part of " + p + " is not a directory");
    case ELOOP:
      return make_error(errc::invalid_argument,
                        p + ": too many levels of symbolic links, or a symbolic link where the path "
                            "was already resolved (it changed while in use)");
    case ENAMETOOLONG: return make_error(errc::invalid_argument, p + ": a name in the path is too long");
    case EACCES: case EPERM: return make_error(errc::denied, p + ": permission denied");
    case EXDEV: return make_error(errc::denied, p + " is outside the workspace");
    case EISDIR: return make_error(errc::invalid_argument, p + " is a directory");
    default: return make_error(errc::io, p + ": " + std::strerror(error_number));
  }
}

result<workspace> workspace::open(const std::string& root) {
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) return make_error(errc::io, "cannot create workspace " + root + ": " + ec.message());
  int fd = ::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return make_error(errc::io, "cannot open workspace " + root + ": " + std::strerror(errno));
  workspace w;
  w.root_fd_ = std::make_shared<unique_fd>(fd);
  auto real = real_path_of(fd);
  if (!real) return real.error();
  w.root_ = *real;
  return w;
}

bool workspace::is_inside(const std::string& real) const {
  return real == root_ || (real.size() > root_.size() && real.compare(0, root_.size(), root_) == 0 &&
                           real[root_.size()] == '/');
}

std::string workspace::display(const location& at) const {
  if (!at.inside) return at.real;
  if (at.real == root_) return ".";
  return at.real.substr(root_.size() + 1);
}

result<location> workspace::locate(std::string_view given, outside_paths outside, bool create_parents) const {
  if (given.find('\0') != std::string_view::npos)
    return make_error(errc::invalid_argument, "the path contains a NUL byte");
  if (given.size() >= PATH_MAX) return path_error(ENAMETOOLONG, given.substr(0, 64));
  std::string path = given.empty() ? std::string(".") : std::string(given);
  if (path[0] == '/') {
    std::string clean = strip_trailing_slashes(path);
    if (clean == root_) return locate_inside(".", outside, create_parents, 0);
    if (is_inside(clean)) return locate_inside(path.substr(root_.size() + 1), outside, create_parents, 0);
    return locate_outside(path, outside, 0);
  }
  return locate_inside(path, outside, create_parents, 0);
}

// The location of an open descriptor: its real path, and its directory opened again by that
// path with no symlink allowed (so the pair names what the descriptor names, or fails).
result<location> workspace::pin(unique_fd target) const {
  auto real = real_path_of(target.get());
  if (!real) return real.error();
  struct stat st {};
  if (::fstat(target.get(), &st) != 0) return path_error(errno, *real);
  location at;
  at.exists = true;
  at.is_directory = S_ISDIR(st.st_mode);
  at.real = *real;
  at.inside = is_inside(*real);
  if (*real == "/" ) {
    at.parent = std::move(target);
    at.name = ".";
    return at;
  }
  if (at.inside && *real == root_) {
    at.parent = unique_fd(::fcntl(root_fd(), F_DUPFD_CLOEXEC, 0));
    at.name = ".";
    return at;
  }
  auto [dir, name] = split_last(*real);
  int parent = at.inside ? open_beneath(root_fd(), dir == root_ ? "." : dir.substr(root_.size() + 1),
                                        O_PATH | O_DIRECTORY, resolved_resolve)
                         : open_beneath(AT_FDCWD, dir, O_PATH | O_DIRECTORY,
                                        RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS);
  if (parent < 0) return path_error(errno, *real);
  at.parent = unique_fd(parent);
  at.name = name;
  return at;
}

result<location> workspace::locate_inside(std::string rel, outside_paths outside, bool create_parents,
                                          int depth) const {
  int fd = open_beneath(root_fd(), rel, O_PATH, inside_resolve);
  if (fd >= 0) return pin(unique_fd(fd));
  int first_error = errno;
  if (first_error == EXDEV) return locate_outside(root_ + "/" + rel, outside, depth);
  if (first_error != ENOENT) return path_error(first_error, rel);
  // It does not exist: its directory must, inside (or be made, when asked).
  std::string clean = strip_trailing_slashes(rel);
  if (clean.size() != rel.size()) return path_error(ENOENT, rel);  // "dir/" names a directory
  auto [dir, name] = split_last(clean);
  if (name == "." || name == ".." || name.empty()) return path_error(ENOENT, rel);
  int parent = open_beneath(root_fd(), dir, O_PATH | O_DIRECTORY, inside_resolve);
  if (parent < 0 && errno == ENOENT && create_parents) {
    if (auto made = make_directories(dir); !made) return made.error();
    parent = open_beneath(root_fd(), dir, O_PATH | O_DIRECTORY, inside_resolve);
  } else if (parent < 0 && errno == ENOENT) {
    return locate_planned(clean, outside, depth);
  }
  if (parent < 0) {
    if (errno == EXDEV) return locate_outside(root_ + "/" + rel, outside, depth);
    return path_error(errno, rel);
  }
  auto at = pin(unique_fd(parent));
  if (!at) return at.error();
  if (!at->inside) return at;  // a mount inside that leads elsewhere: treated as outside
  location out;
  out.inside = true;
  out.exists = false;
  out.real = (at->real == "/" ? "" : at->real) + "/" + name;
  out.parent = unique_fd(open_beneath(at->parent.get(), at->name, O_PATH | O_DIRECTORY, resolved_resolve));
  if (!out.parent.valid()) return path_error(errno, rel);
  out.name = name;
  return out;
}

result<location> workspace::locate_outside(const std::string& absolute, outside_paths outside,
                                           int depth) const {
  if (outside == outside_paths::leave || depth > 1) {
    location at;
    at.inside = false;
    return at;
  }
  // Resolved as an ordinary open would: what the person is shown is where it leads.
  int fd = ::open(absolute.c_str(), O_PATH | O_CLOEXEC);
  if (fd >= 0) {
    auto at = pin(unique_fd(fd));
    if (at && at->inside) return locate_inside(at->real == root_ ? "." : at->real.substr(root_.size() + 1),
                                               outside, false, depth + 1);
    return at;
  }
  if (errno != ENOENT) return path_error(errno, absolute);
  std::string clean = strip_trailing_slashes(absolute);
  auto [dir, name] = split_last(clean);
  if (name == "." || name == ".." || name.empty()) return path_error(ENOENT, absolute);
  int parent = ::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (parent < 0) return path_error(errno, dir);
  auto at = pin(unique_fd(parent));
  if (!at) return at.error();
  std::string real = (at->real == "/" ? "" : at->real) + "/" + name;
  if (at->inside)
    return locate_inside(real.substr(root_.size() + 1), outside, false, depth + 1);
  location out;
  out.inside = false;
  out.exists = false;
  out.real = real;
  out.parent = unique_fd(open_beneath(at->parent.get(), at->name, O_PATH | O_DIRECTORY,
                                      RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS));
  if (!out.parent.valid()) return path_error(errno, dir);
  out.name = name;
  return out;
}

// A path whose directories do not all exist yet: its deepest existing directory, resolved by
// the kernel, and the rest, which may hold no `..` or `.`. Nothing is pinned: the directories
// are made (and the path resolved again) only when the call runs.
result<location> workspace::locate_planned(const std::string& rel, outside_paths outside, int depth) const {
  std::vector<std::string> parts;
  for (std::size_t start = 0; start <= rel.size();) {
    auto end = rel.find('/', start);
    if (end == std::string::npos) end = rel.size();
    auto part = rel.substr(start, end - start);
    if (!part.empty()) parts.push_back(part);
    start = end + 1;
  }
  if (parts.size() > components_max) return path_error(ENAMETOOLONG, rel);
  for (std::size_t existing = parts.size(); existing-- > 0;) {
    std::string prefix;
    for (std::size_t k = 0; k < existing; ++k) prefix += (k ? "/" : "") + parts[k];
    int fd = open_beneath(root_fd(), prefix.empty() ? "." : prefix, O_PATH | O_DIRECTORY, inside_resolve);
    if (fd < 0 && errno == EXDEV) return locate_outside(root_ + "/" + rel, outside, depth);
    if (fd < 0) continue;
    unique_fd holder(fd);
    std::string rest;
    for (std::size_t k = existing; k < parts.size(); ++k) {
      if (parts[k] == ".." || parts[k] == ".") return path_error(ENOENT, rel);
      rest += "/" + parts[k];
    }
    auto real = real_path_of(fd);
    if (!real) return real.error();
    location out;
    out.inside = is_inside(*real);
    out.exists = false;
    out.real = (*real == "/" ? "" : *real) + rest;
    return out;
  }
  return path_error(ENOENT, rel);
}

result<void> workspace::make_directories(const std::string& rel) const {
  std::vector<std::string> parts;
  for (std::size_t start = 0; start <= rel.size();) {
    auto end = rel.find('/', start);
    if (end == std::string::npos) end = rel.size();
    auto part = rel.substr(start, end - start);
    if (!part.empty() && part != ".") parts.push_back(part);
    start = end + 1;
  }
  if (parts.size() > components_max)
    return make_error(errc::invalid_argument, rel + " has more than " + std::to_string(components_max) + " parts");
  std::string prefix;
  for (const auto& part : parts) {
    std::string next = prefix.empty() ? part : prefix + "/" + part;
    int fd = open_beneath(root_fd(), next, O_PATH | O_DIRECTORY, inside_resolve);
    if (fd >= 0) {
      ::close(fd);
      prefix = next;
      continue;
    }
    if (errno != ENOENT || part == "..") return path_error(errno, next);
    int parent = open_beneath(root_fd(), prefix.empty() ? "." : prefix, O_PATH | O_DIRECTORY, inside_resolve);
    if (parent < 0) return path_error(errno, prefix);
    unique_fd holder(parent);
    if (::mkdirat(parent, part.c_str(), 0755) != 0 && errno != EEXIST) return path_error(errno, next);
    prefix = next;
  }
  return success();
}

result<unique_fd> workspace::open_file(const location& at, int flags) const {
  if (!at.parent.valid()) return make_error(errc::invalid_argument, "nothing was resolved to open");
  int fd = open_beneath(at.parent.get(), at.name, flags | O_NOFOLLOW | O_NOCTTY, resolved_resolve);
  if (fd < 0) return path_error(errno, at.real);
  return unique_fd(fd);
}

result<unique_fd> workspace::open_directory(const location& at) const {
  return open_file(at, O_RDONLY | O_DIRECTORY);
}

} // namespace keel::sandbox
