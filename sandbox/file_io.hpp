// File operations on descriptors a workspace resolved: bounded reads, writes through an
// exclusive temporary file renamed over the target (synced, with its directory), a bounded walk
// of a directory tree that never follows a symlink, and removal of a tree by descriptors.
#pragma once

#include "runtime/result.hpp"
#include "sandbox/workspace.hpp"

#include <cstdint>
#include <functional>
#include <string>
#include <sys/stat.h>

namespace keel::sandbox {

// Reads a regular file from an open descriptor, refusing anything else and anything larger
// than `bytes_max`.
result<std::string> read_regular(int fd, std::size_t bytes_max, const std::string& shown_as);

// Replaces (or creates) `at` with `content`: a temporary file made with O_CREAT|O_EXCL|O_NOFOLLOW
// in the same directory descriptor, synced, renamed over the name, and the directory synced.
// An existing file keeps its permission bits (setuid and setgid dropped).
result<void> write_replacing(const location& at, const std::string& content);

struct walk_limits {
  std::size_t entries_max = 100'000;  // directory entries looked at, in all
  std::size_t depth_max = 64;
  std::int64_t deadline_ms = 0;       // steady clock; 0: none
};

struct walk_entry {
  std::string relative;  // from the walk's start
  int directory_fd;      // holds `name`; valid during the visit only
  std::string name;
  struct stat st;        // of the entry itself (a symlink is a symlink)
};

// Why a walk stopped early; empty when it saw everything.
struct walk_outcome {
  std::string stopped_by;  // "entries", "time", or "" (the visitor's own stop is not reported)
  std::size_t entries = 0;
};

// Depth first, sorted within each directory. `descend` says whether to enter a directory;
// `visit` is called for everything that is not a directory and returns false to stop.
walk_outcome walk_tree(int start_fd, const walk_limits& limits,
                       const std::function<bool(const walk_entry&)>& descend,
                       const std::function<bool(const walk_entry&)>& visit);

// Removes a directory tree by descriptors (symlinks inside are removed, never followed).
void remove_tree(const std::string& path);


} // namespace keel::sandbox
