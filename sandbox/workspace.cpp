#include "sandbox/workspace.hpp"

#include <filesystem>

namespace keel::sandbox {

namespace fs = std::filesystem;

result<workspace> workspace::open(const std::string& root) {
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) return make_error(errc::io, "cannot create workspace " + root + ": " + ec.message());
  auto canonical = fs::canonical(root, ec);
  if (ec) return make_error(errc::io, "cannot resolve workspace " + root + ": " + ec.message());
  workspace w;
  w.root_ = canonical.string();
  return w;
}

resolved_path workspace::resolve(std::string_view path) const {
  fs::path p(path.empty() ? std::string(".") : std::string(path));
  if (p.is_relative()) p = fs::path(root_) / p;
  std::error_code ec;
  // weakly_canonical resolves symlinks along the part that exists (a symlinked parent, or a
  // symlink as the last part) and normalises the rest, `..` included.
  fs::path real = fs::weakly_canonical(p, ec);
  if (ec) real = p.lexically_normal();
  resolved_path out;
  out.real = real.string();
  if (out.real.size() > 1 && out.real.back() == '/') out.real.pop_back();
  out.inside = out.real == root_ || out.real.rfind(root_ + "/", 0) == 0;
  return out;
}

std::string workspace::display(const resolved_path& p) const {
  if (!p.inside) return p.real;
  if (p.real == root_) return ".";
  return p.real.substr(root_.size() + 1);
}

} // namespace keel::sandbox
