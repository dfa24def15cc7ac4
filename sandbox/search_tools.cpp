// glob and grep: a walk of the directory tree by descriptors (never following a symlinked
// directory, counting a symlinked file only when it leads to a regular file inside the
// workspace), linear-time matching, and bounds on entries, time and output.
#include "runtime/clock.hpp"
#include "sandbox/file_io.hpp"
#include "sandbox/matching.hpp"
#include "sandbox/text.hpp"
#include "sandbox/tool_support.hpp"

#include <algorithm>
#include <fcntl.h>
#include <linux/openat2.h>

namespace keel::sandbox::detail {

using wire::value;

namespace {

const std::vector<std::string> default_ignore = {".git", "node_modules"};

struct search_root {
  std::optional<location> at;
  unique_fd dir;
  std::string prefix;  // of paths from the workspace root, "" for the root itself
  std::optional<tool_outcome> outcome;
};

search_root open_search_root(const workspace& ws, const policy& p, const tool_request& r,
                             const std::string& given) {
  search_root out;
  auto at = ws.locate(given, outside_mode(p));
  if (!at) {
    out.outcome = failed(r.tool + ": " + at.error().message);
    return out;
  }
  if (auto outside = check_outside(ws, p, r, *at, given, value{{"path", at->real}})) {
    out.outcome = outside;
    return out;
  }
  if (auto changed = check_approved(r, "path", at->real)) {
    out.outcome = changed;
    return out;
  }
  if (!at->exists || !at->is_directory) {
    out.outcome = failed(r.tool + ": no such directory: " + escape_controls(given));
    return out;
  }
  auto dir = ws.open_directory(*at);
  if (!dir) {
    out.outcome = failed(r.tool + ": " + dir.error().message);
    return out;
  }
  out.dir = std::move(*dir);
  out.prefix = at->inside ? ws.display(*at) : std::string();
  if (out.prefix == ".") out.prefix.clear();
  out.at = std::move(*at);
  return out;
}

// A symlink found in a walk counts when it leads, inside the workspace, to a regular file;
// the descriptor opened is the file it leads to.
unique_fd open_symlinked_file(const workspace& ws, const search_root& root, const walk_entry& e, int flags) {
  if (!root.at->inside) return unique_fd();
  std::string from_root = root.prefix.empty() ? e.relative : root.prefix + "/" + e.relative;
  unique_fd fd(open_beneath(ws.root_fd(), from_root, flags | O_NOCTTY, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS));
  if (!fd.valid()) return fd;
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) return unique_fd();
  return fd;
}

struct ignore_list {
  std::vector<glob_pattern> patterns;
  bool matches(const walk_entry& e) const {
    for (const auto& pattern : patterns)
      if (pattern.matches(e.relative) || pattern.matches(e.name)) return true;
    return false;
  }
};

result<ignore_list> compile_ignores(const std::vector<std::string>& given) {
  ignore_list out;
  for (const auto& text : given) {
    auto compiled = glob_pattern::compile(text);
    if (!compiled) return make_error(errc::invalid_argument, "ignore pattern: " + compiled.error().message);
    out.patterns.push_back(std::move(*compiled));
  }
  return out;
}

std::string stop_note(const walk_outcome& w, const policy& p) {
  if (w.stopped_by == "entries")
    return "stopped after looking at " + std::to_string(p.walk_entries_max) + " directory entries";
  if (w.stopped_by == "time") return "stopped at the time limit of " + std::to_string(p.tool_timeout_ms) + " ms";
  return {};
}

} // namespace

tool_outcome glob_tool(const workspace& ws, const policy& p, const tool_request& r) {
  arguments a{r.arguments, r.tool, {}};
  auto pattern_text = a.str("pattern", true);
  auto cwd_given = a.str("cwd", false);
  auto ignore_given = a.strings("ignore");
  if (a.problem) return failed(*a.problem);
  if (pattern_text.find("..") != std::string::npos || (!pattern_text.empty() && pattern_text[0] == '/'))
    return failed("glob: the pattern must be relative to cwd and must not climb out with '..'");
  auto pattern = glob_pattern::compile(pattern_text);
  if (!pattern) return failed("glob: " + pattern.error().message);
  ignore_given.insert(ignore_given.end(), default_ignore.begin(), default_ignore.end());
  auto ignore = compile_ignores(ignore_given);
  if (!ignore) return failed("glob: " + ignore.error().message);
  auto root = open_search_root(ws, p, r, cwd_given);
  if (root.outcome) return *root.outcome;
  std::vector<std::string> files;
  bool truncated = false;
  walk_limits limits{p.walk_entries_max, 64, steady_ms() + p.tool_timeout_ms};
  auto walked = walk_tree(
    root.dir.get(), limits, [&](const walk_entry& e) { return !ignore->matches(e); },
    [&](const walk_entry& e) {
      if (ignore->matches(e)) return true;
      if (S_ISLNK(e.st.st_mode)) {
        if (!open_symlinked_file(ws, root, e, O_PATH).valid()) return true;
      } else if (!S_ISREG(e.st.st_mode)) {
        return true;
      }
      if (!pattern->matches(e.relative)) return true;
      if (files.size() >= p.glob_results_max) {
        truncated = true;
        return false;
      }
      files.push_back(sanitize_utf8(e.relative));
      return true;
    });
  value out{{"files", files}, {"count", files.size()}, {"truncated", truncated || !walked.stopped_by.empty()}};
  if (auto note = stop_note(walked, p); !note.empty()) out["note"] = note;
  return done(std::move(out));
}

tool_outcome grep_tool(const workspace& ws, const policy& p, const tool_request& r) {
  arguments a{r.arguments, r.tool, {}};
  auto pattern_text = a.str("pattern", true);
  auto cwd_given = a.str("cwd", false);
  auto include_text = a.str("include", false);
  auto results_max = a.integer("max_results", static_cast<std::int64_t>(p.grep_results_default), 1, 10'000);
  auto context = a.integer("context", 0, 0, 20);
  bool ignore_case = a.boolean("ignore_case", false);
  if (a.problem) return failed(*a.problem);
  auto expression = regex::compile(pattern_text, ignore_case);
  if (!expression) return failed("grep: " + expression.error().message);
  std::optional<glob_pattern> include;
  if (!include_text.empty()) {
    auto compiled = glob_pattern::compile(include_text);
    if (!compiled) return failed("grep: include: " + compiled.error().message);
    include = std::move(*compiled);
  }
  auto ignore = compile_ignores(default_ignore);
  auto root = open_search_root(ws, p, r, cwd_given);
  if (root.outcome) return *root.outcome;
  std::string out;
  std::int64_t matches = 0;
  bool truncated = false;
  std::string cut_note;
  auto deadline = steady_ms() + p.tool_timeout_ms;
  walk_limits limits{p.walk_entries_max, 64, deadline};
  auto search = [&](const std::string& relative, const std::string& content) {
    std::vector<std::string_view> lines;
    for (std::size_t start = 0; start < content.size();) {
      auto end = content.find('\n', start);
      if (end == std::string::npos) end = content.size();
      lines.emplace_back(content.data() + start, end - start);
      start = end + 1;
    }
    std::int64_t shown_through = -1;
    for (std::size_t i = 0; i < lines.size(); ++i) {
      if (!expression->found_in(lines[i])) continue;
      if (matches >= results_max) {
        truncated = true;
        return false;
      }
      ++matches;
      auto from = std::max<std::int64_t>(static_cast<std::int64_t>(i) - context, shown_through + 1);
      auto to = std::min<std::int64_t>(static_cast<std::int64_t>(i) + context,
                                       static_cast<std::int64_t>(lines.size()) - 1);
      if (context > 0 && shown_through >= 0 && from > shown_through + 1) out += "--\n";
      for (auto k = from; k <= to; ++k) {
        auto text = lines[static_cast<std::size_t>(k)];
        bool cut = text.size() > p.line_chars_max;
        if (cut) text = text.substr(0, p.line_chars_max);
        bool hit = k == static_cast<std::int64_t>(i);
        out += relative + (hit ? ":" : "-") + std::to_string(k + 1) + (hit ? ": " : "- ") +
               sanitize_utf8(text) + (cut ? " [line cut]\n" : "\n");
      }
      shown_through = to;
      if (out.size() > p.output_chars_max) {
        truncated = true;
        cut_note = "output cut at " + std::to_string(p.output_chars_max) + " characters";
        return false;
      }
      if (steady_ms() >= deadline) return false;
    }
    return true;
  };
  auto walked = walk_tree(
    root.dir.get(), limits, [&](const walk_entry& e) { return !ignore->matches(e); },
    [&](const walk_entry& e) {
      if (include && !include->matches(e.relative) && !include->matches(e.name)) return true;
      unique_fd fd;
      if (S_ISLNK(e.st.st_mode)) fd = open_symlinked_file(ws, root, e, O_RDONLY | O_NONBLOCK);
      else if (S_ISREG(e.st.st_mode))
        fd = unique_fd(::openat(e.directory_fd, e.name.c_str(), O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC));
      if (!fd.valid()) return true;
      auto content = read_regular(fd.get(), p.read_bytes_max, e.relative);
      if (!content || std::string_view(*content).substr(0, 8192).find('\0') != std::string_view::npos) return true;
      return search(e.relative, *content) && steady_ms() < deadline;
    });
  if (out.size() > p.output_chars_max) out.resize(p.output_chars_max);
  value result{{"matches", sanitize_utf8(out)}, {"count", matches}, {"truncated", truncated || !walked.stopped_by.empty()}};
  std::string note = !cut_note.empty() ? cut_note : stop_note(walked, p);
  if (note.empty() && steady_ms() >= deadline) note = "stopped at the time limit of " + std::to_string(p.tool_timeout_ms) + " ms";
  if (!note.empty()) {
    result["note"] = note;
    result["truncated"] = true;
  }
  return done(std::move(result));
}

} // namespace keel::sandbox::detail
