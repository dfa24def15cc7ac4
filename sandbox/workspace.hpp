// A workspace directory and the resolution of every path a tool is given. The kernel resolves
// each path from a descriptor of the root (openat2 with RESOLVE_BENEATH), so `..`, absolute
// symlinks and symlinks that climb out are caught by the kernel itself, and what is acted on is
// the directory descriptor that was checked, never the name again.
#pragma once

#include "runtime/result.hpp"
#include "sandbox/unique_fd.hpp"

#include <memory>
#include <string>
#include <string_view>

namespace keel::sandbox {

// What a path names, pinned: the directory that holds it, open, and its name in there.
struct location {
  bool inside = false;        // beneath the workspace root
  bool exists = false;
  bool is_directory = false;
  std::string real;           // absolute, every symlink resolved by the kernel
  unique_fd parent;           // O_PATH descriptor of the directory that holds `name`; invalid
                              // when that directory does not exist yet (see locate)
  std::string name;           // "." when the location is that directory itself
};

enum class outside_paths { resolve, leave };  // leave: an escape is reported, never followed

class workspace {
public:
  // Opens the directory, creating it when missing; `root` is trusted (config and checked names).
  static result<workspace> open(const std::string& root);
  const std::string& root() const { return root_; }
  int root_fd() const { return root_fd_->get(); }

  // Resolves `given` (relative to the root, or absolute). With `create_parents`, missing
  // directories of an inside path are made, one checked component at a time; without, such a
  // path is returned with its real path planned and no parent. A path that
  // leaves the workspace is resolved (without following anything more than the kernel does
  // for an ordinary open) only when `outside` says so; otherwise the result is !inside with
  // an empty `real`.
  result<location> locate(std::string_view given, outside_paths outside,
                          bool create_parents = false) const;

  // The path as a person reads it: relative to the root when inside.
  std::string display(const location& at) const;

  // Opens the pinned location: the final name is never a symlink (it was resolved).
  result<unique_fd> open_file(const location& at, int flags) const;
  result<unique_fd> open_directory(const location& at) const;

private:
  result<location> locate_inside(std::string rel, outside_paths outside, bool create_parents,
                                 int depth) const;
  result<location> locate_outside(const std::string& absolute, outside_paths outside, int depth) const;
  result<location> locate_planned(const std::string& rel, outside_paths outside, int depth) const;
  result<location> pin(unique_fd target) const;
  result<void> make_directories(const std::string& rel) const;
  bool is_inside(const std::string& real) const;

  std::string root_;                    // canonical
  std::shared_ptr<unique_fd> root_fd_;  // O_PATH|O_DIRECTORY
};

// openat2(2) with `resolve` flags, retried on EAGAIN and EINTR; -1 with errno on failure.
int open_beneath(int dir_fd, const std::string& path, int flags, unsigned long long resolve);

// The real path of an open descriptor, as the kernel has it.
result<std::string> real_path_of(int fd);

// A message for an errno met while resolving `given`.
error path_error(int error_number, std::string_view given);

} // namespace keel::sandbox
