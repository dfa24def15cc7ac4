// Path resolution in a workspace (sandbox/workspace.cpp) on any path a model could send: a
// workspace with files, directories and symlinks (inside, climbing out, absolute, looping) next
// to a secret directory. Checked: nothing crashes; whatever is found inside is beneath the root
// and never the secret; with escapes left alone (outside_paths::leave) nothing outside is
// resolved; with create_parents, nothing is ever made outside the root.
#include "sandbox/workspace.hpp"

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <unistd.h>

namespace fs = std::filesystem;
using namespace keel::sandbox;

namespace {

struct sandbox_dir {
  std::string base, root, secret;
  sandbox_dir() {
    char pattern[] = "/tmp/keel-paths-fuzz-XXXXXX";
    base = ::mkdtemp(pattern);
    root = base + "/ws";
    secret = base + "/secret";
    fs::create_directories(root + "/src/deep");
    fs::create_directories(secret);
    std::FILE* f = std::fopen((secret + "/key").c_str(), "w");
    std::fputs("secret", f);
    std::fclose(f);
    f = std::fopen((root + "/src/a.txt").c_str(), "w");
    std::fclose(f);
    fs::create_symlink("../secret", root + "/up");                 // climbs out
    fs::create_symlink(secret, root + "/abs");                     // absolute, outside
    fs::create_symlink("src/deep", root + "/in");                  // inside
    fs::create_symlink("loop", root + "/loop");                    // loops
    fs::create_symlink("../../secret/key", root + "/src/key");     // climbs out to a file
    fs::create_symlink("/proc/self/root" + secret, root + "/proc");  // out through /proc
  }
  // Removes whatever an input made: the workspace goes back to what the constructor made.
  void clean() const {
    std::error_code ec;
    for (const auto& [dir, keep] : {std::pair<std::string, std::vector<std::string>>{root, {"src", "up", "abs", "in", "loop", "proc"}},
                                    {root + "/src", {"deep", "a.txt", "key"}},
                                    {root + "/src/deep", {}}}) {
      std::vector<fs::path> extra;
      for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
        auto name = it->path().filename().string();
        if (std::find(keep.begin(), keep.end(), name) == keep.end()) extra.push_back(it->path());
      }
      for (const auto& p : extra) fs::remove_all(p, ec);
    }
  }
  ~sandbox_dir() {
    std::error_code ec;
    fs::remove_all(base, ec);
  }
};

sandbox_dir& dir() {
  static sandbox_dir d;
  return d;
}

bool beneath(const std::string& path, const std::string& root) {
  return path == root || (path.size() > root.size() && path.compare(0, root.size(), root) == 0 && path[root.size()] == '/');
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 4096) return 0;
  auto& d = dir();
  static auto ws = workspace::open(d.root);
  if (!ws) std::abort();
  std::string given(reinterpret_cast<const char*>(data), size);
  for (auto outside : {outside_paths::leave, outside_paths::resolve}) {
    auto at = ws->locate(given, outside, false);
    if (!at) continue;
    if (at->inside && !at->real.empty() && !beneath(at->real, d.root)) std::abort();
    if (at->inside && beneath(at->real, d.secret)) std::abort();
    if (outside == outside_paths::leave && !at->inside && !at->real.empty()) std::abort();
  }
  // Making parents: only ever beneath the root (the secret directory stays as it was).
  auto made = ws->locate(given, outside_paths::leave, true);
  (void)made;
  std::size_t entries = 0;
  for (auto it = fs::directory_iterator(d.secret); it != fs::directory_iterator(); ++it) ++entries;
  if (entries != 1) std::abort();
  if (fs::exists(d.base + "/made")) std::abort();
  // What it made goes, so that every input meets the same workspace (and an hour of inputs does
  // not leave a million directories).
  d.clean();
  return 0;
}
