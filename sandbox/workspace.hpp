// A workspace directory and the resolution of every path a tool is given: relative paths are
// taken from the root; `..`, absolute paths and symlinks are resolved before anything is
// touched, and the result says whether the real path lies inside the workspace.
#pragma once

#include "runtime/result.hpp"

#include <string>
#include <string_view>

namespace keel::sandbox {

struct resolved_path {
  std::string real;      // absolute, with every existing symlink resolved
  bool inside = false;   // the real path is the root or below it
};

class workspace {
public:
  // Creates the directory when missing.
  static result<workspace> open(const std::string& root);
  const std::string& root() const { return root_; }
  resolved_path resolve(std::string_view path) const;
  // The path as a person reads it: relative to the root when inside.
  std::string display(const resolved_path& p) const;

private:
  std::string root_;  // canonical
};

} // namespace keel::sandbox
