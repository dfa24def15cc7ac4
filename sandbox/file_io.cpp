#include "sandbox/file_io.hpp"

#include "runtime/secrets.hpp"

#include "runtime/clock.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include <dirent.h>
#include <fcntl.h>
#include <sys/random.h>
#include <unistd.h>

namespace keel::sandbox {

result<std::string> read_regular(int fd, std::size_t bytes_max, const std::string& shown_as) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return make_error(errc::io, "cannot read " + shown_as + ": " + std::strerror(errno));
  if (S_ISDIR(st.st_mode)) return make_error(errc::invalid_argument, shown_as + " is a directory");
  if (!S_ISREG(st.st_mode)) return make_error(errc::invalid_argument, shown_as + " is not a regular file");
  auto size = static_cast<std::size_t>(st.st_size);
  if (size > bytes_max)
    return make_error(errc::too_large, shown_as + " has " + std::to_string(size) +
                                         " bytes, over the limit of " + std::to_string(bytes_max));
  std::string content(size, '\0');
  std::size_t got = 0;
  while (got < size) {
    auto n = ::read(fd, content.data() + got, size - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return make_error(errc::io, "cannot read " + shown_as + ": " + std::strerror(errno));
    if (n == 0) break;  // shorter now than when asked: what is there
    got += static_cast<std::size_t>(n);
  }
  content.resize(got);
  return content;
}

result<void> write_replacing(const location& at, const std::string& content) {
  if (!at.parent.valid() || at.name == "." || at.name.empty())
    return make_error(errc::invalid_argument, at.real + " is a directory");
  const int dir = at.parent.get();
  mode_t mode = 0644;
  struct stat existing {};
  if (::fstatat(dir, at.name.c_str(), &existing, AT_SYMLINK_NOFOLLOW) == 0) {
    if (S_ISDIR(existing.st_mode)) return make_error(errc::invalid_argument, at.real + " is a directory");
    if (S_ISREG(existing.st_mode)) mode = existing.st_mode & 0777;
  }
  std::string temporary;
  int fd = -1;
  for (int attempt = 0; attempt < 8 && fd < 0; ++attempt) {
    temporary = ".keel-write-" + random_hex(8);
    fd = ::openat(dir, temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0 && errno != EEXIST)
      return make_error(errc::io, "cannot create a file beside " + at.real + ": " + std::strerror(errno));
  }
  if (fd < 0) return make_error(errc::io, "cannot create a temporary file beside " + at.real);
  unique_fd file(fd);
  auto fail = [&](const char* what) {
    int e = errno;
    ::unlinkat(dir, temporary.c_str(), 0);
    return make_error(e == ENOSPC || e == EDQUOT || e == EFBIG ? errc::too_large : errc::io,
                      std::string("cannot ") + what + " " + at.real + ": " + std::strerror(e));
  };
  ::fchmod(fd, mode);  // the umask may have taken bits away
  std::size_t written = 0;
  while (written < content.size()) {
    auto n = ::write(fd, content.data() + written, content.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return fail("write");
    written += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) return fail("sync");
  file.reset();
  if (::renameat(dir, temporary.c_str(), dir, at.name.c_str()) != 0) return fail("replace");
  unique_fd directory(::openat(dir, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (directory.valid()) ::fsync(directory.get());
  return success();
}

namespace {

// The names in a directory (without "." and ".."), at most `names_max` of them; `more` says
// whether some were left.
std::vector<std::string> list_directory(int dir_fd, std::size_t names_max, bool& more) {
  std::vector<std::string> names;
  more = false;
  int listing = ::openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (listing < 0) return names;
  DIR* d = ::fdopendir(listing);
  if (!d) {
    ::close(listing);
    return names;
  }
  while (auto* e = ::readdir(d)) {
    if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
    if (names.size() >= names_max) {
      more = true;
      break;
    }
    names.emplace_back(e->d_name);
  }
  ::closedir(d);
  return names;
}

struct walker {
  const walk_limits& limits;
  const std::function<bool(const walk_entry&)>& descend;
  const std::function<bool(const walk_entry&)>& visit;
  walk_outcome outcome;
  bool stop = false;

  void walk(int dir_fd, const std::string& prefix, std::size_t depth) {
    bool more = false;
    auto left = limits.entries_max > outcome.entries ? limits.entries_max - outcome.entries : 0;
    std::vector<std::string> names = list_directory(dir_fd, left, more);
    outcome.entries += names.size();
    if (more) {
      outcome.stopped_by = "entries";
      stop = true;
    }
    std::sort(names.begin(), names.end());
    for (const auto& name : names) {
      if (stop) return;
      if (limits.deadline_ms > 0 && steady_ms() >= limits.deadline_ms) {
        outcome.stopped_by = "time";
        stop = true;
        return;
      }
      walk_entry entry{prefix.empty() ? name : prefix + "/" + name, dir_fd, name, {}};
      if (::fstatat(dir_fd, name.c_str(), &entry.st, AT_SYMLINK_NOFOLLOW) != 0) continue;
      if (S_ISDIR(entry.st.st_mode)) {
        if (depth + 1 > limits.depth_max || !descend(entry)) continue;
        // O_NOFOLLOW: a directory swapped for a symlink since it was listed is not entered.
        int child = ::openat(dir_fd, name.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (child < 0) continue;
        unique_fd holder(child);
        walk(child, entry.relative, depth + 1);
        continue;
      }
      if (!visit(entry)) {
        stop = true;
        return;
      }
    }
  }
};

void remove_names(int dir_fd, const std::vector<std::string>& names, int depth);

void remove_entries(int dir_fd, int depth) {
  bool more = true;
  for (int round = 0; more && round < 1000; ++round) {  // in rounds: a huge directory is not listed whole
    std::vector<std::string> names = list_directory(dir_fd, 100'000, more);
    if (names.empty()) return;
    remove_names(dir_fd, names, depth);
  }
}

void remove_names(int dir_fd, const std::vector<std::string>& names, int depth) {
  for (const auto& name : names) {
    if (::unlinkat(dir_fd, name.c_str(), 0) == 0) continue;
    if (depth >= 256) continue;
    int child = ::openat(dir_fd, name.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (child < 0) continue;
    remove_entries(child, depth + 1);
    ::close(child);
    ::unlinkat(dir_fd, name.c_str(), AT_REMOVEDIR);
  }
}

} // namespace

walk_outcome walk_tree(int start_fd, const walk_limits& limits,
                       const std::function<bool(const walk_entry&)>& descend,
                       const std::function<bool(const walk_entry&)>& visit) {
  walker w{limits, descend, visit, {}, false};
  w.walk(start_fd, "", 0);
  return w.outcome;
}

void remove_tree(const std::string& path) {
  int fd = ::open(path.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    ::unlink(path.c_str());
    return;
  }
  remove_entries(fd, 0);
  ::close(fd);
  ::rmdir(path.c_str());
}

} // namespace keel::sandbox
