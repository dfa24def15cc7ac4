// read, write and edit: each resolves its path once, from the workspace's descriptor, and acts
// on the directory descriptor it resolved; an approved call acts only if its path still
// resolves to what the person was shown.
#include "runtime/clock.hpp"
#include "sandbox/file_io.hpp"
#include "sandbox/text.hpp"
#include "sandbox/tool_support.hpp"

#include <algorithm>
#include <fcntl.h>

namespace keel::sandbox::detail {

using wire::value;

namespace {

bool looks_binary(std::string_view head) { return head.find('\0') != std::string_view::npos; }

// The path as given, resolved, with the outside rule and the approval applied.
struct resolved_or_outcome {
  std::optional<location> at;
  std::optional<tool_outcome> outcome;
};

resolved_or_outcome resolve_path(const workspace& ws, const policy& p, const tool_request& r,
                                 const std::string& given, value outside_context) {
  auto at = ws.locate(given, outside_mode(p));
  if (!at) return {std::nullopt, failed(r.tool + ": " + at.error().message)};
  outside_context["path"] = at->real;
  if (auto outside = check_outside(ws, p, r, *at, given, std::move(outside_context))) return {std::nullopt, outside};
  if (auto changed = check_approved(r, "path", at->real)) return {std::nullopt, changed};
  return {std::move(*at), std::nullopt};
}

result<std::string> read_location(const workspace& ws, const location& at, std::size_t bytes_max) {
  if (!at.exists) return make_error(errc::not_found, "no such file: " + ws.display(at));
  auto fd = ws.open_file(at, O_RDONLY | O_NONBLOCK);
  if (!fd) return fd.error();
  return read_regular(fd->get(), bytes_max, ws.display(at));
}

// Makes the missing directories of a planned location and resolves it again; it must come out
// where it was planned.
result<location> materialize(const workspace& ws, const policy& p, location at, const std::string& given) {
  if (at.parent.valid()) return at;
  if (!at.inside) return make_error(errc::not_found, "the directory of " + at.real + " does not exist");
  auto made = ws.locate(given, outside_mode(p), true);
  if (!made) return made.error();
  if (made->real != at.real || !made->inside)
    return make_error(errc::conflict, given + " resolved to " + at.real + " and now to " + made->real +
                                        "; nothing was written");
  return made;
}

} // namespace

tool_outcome read_tool(const workspace& ws, const policy& p, const tool_request& r) {
  arguments a{r.arguments, r.tool, {}};
  auto given = a.str("path", true);
  auto offset = a.integer("offset", 1, 1, INT32_MAX);
  auto limit = a.integer("limit", static_cast<std::int64_t>(p.read_lines_default), 1, 100'000);
  if (a.problem) return failed(*a.problem);
  auto resolved = resolve_path(ws, p, r, given, value::object());
  if (resolved.outcome) return *resolved.outcome;
  const location& at = *resolved.at;
  auto content = read_location(ws, at, p.read_bytes_max);
  if (!content) return failed("read: " + content.error().message);
  if (looks_binary(std::string_view(*content).substr(0, 8192)))
    return failed("read: " + ws.display(at) + " is a binary file; read shows text files only");
  std::string numbered;
  std::int64_t number = 0, shown = 0;
  std::size_t start = 0;
  while (start < content->size()) {
    auto end = content->find('\n', start);
    if (end == std::string::npos) end = content->size();
    ++number;
    if (number >= offset && shown < limit) {
      std::string_view line(content->data() + start, end - start);
      bool cut = line.size() > p.line_chars_max;
      if (cut) line = line.substr(0, p.line_chars_max);
      char prefix[32];
      std::snprintf(prefix, sizeof prefix, "%6lld\t", static_cast<long long>(number));
      numbered += prefix + sanitize_utf8(line) + (cut ? " [line cut]\n" : "\n");
      ++shown;
    }
    start = end + 1;
  }
  return done(value{{"path", ws.display(at)}, {"content", numbered}, {"lines_total", number},
                    {"from", offset}, {"to", offset + shown - 1}});
}

tool_outcome write_tool(const workspace& ws, const policy& p, const tool_request& r) {
  arguments a{r.arguments, r.tool, {}};
  auto given = a.str("path", true);
  auto content = a.str("content", true);
  if (a.problem) return failed(*a.problem);
  if (content.size() > p.write_bytes_max)
    return failed("write: the content has " + std::to_string(content.size()) + " bytes, over the limit of " +
                  std::to_string(p.write_bytes_max));
  auto lines = std::count(content.begin(), content.end(), '\n');
  value shown{{"content", preview(content, p.preview_chars_max)}, {"bytes", content.size()}, {"lines", lines}};
  auto resolved = resolve_path(ws, p, r, given, shown);
  if (resolved.outcome) return *resolved.outcome;
  location at = std::move(*resolved.at);
  if (at.is_directory) return failed("write: " + ws.display(at) + " is a directory");
  if (p.file_approval && !r.approved) {
    shown["path"] = at.real;
    shown["exists"] = at.exists;
    return ask("write", "writes ask first", shown);
  }
  auto ready = materialize(ws, p, std::move(at), given);
  if (!ready) return ready.error().code == errc::conflict ? refused("write: " + ready.error().message)
                                                          : failed("write: " + ready.error().message);
  if (auto w = write_replacing(*ready, content); !w) return failed("write: " + w.error().message);
  return done(value{{"path", ws.display(*ready)}, {"bytes", content.size()}});
}

tool_outcome edit_tool(const workspace& ws, const policy& p, const tool_request& r) {
  const auto edit_started = steady_ms();
  arguments a{r.arguments, r.tool, {}};
  auto given = a.str("path", true);
  auto old_text = a.str("old_text", true);
  auto new_text = a.str("new_text", true);
  if (a.problem) return failed(*a.problem);
  if (old_text.empty()) return failed("edit: old_text is empty; use write to create a file");
  auto resolved = resolve_path(ws, p, r, given, value::object());
  if (resolved.outcome) return *resolved.outcome;
  const location& at = *resolved.at;
  auto content = read_location(ws, at, p.read_bytes_max);
  if (!content) return failed("edit: " + content.error().message);
  // Linear in the file and old_text, and within the tool time limit whatever they hold.
  auto found = find_occurrences(*content, old_text, 1000, edit_started + p.tool_timeout_ms);
  if (!found)
    return failed("edit: stopped at the time limit of " + std::to_string(p.tool_timeout_ms) + " ms; nothing was written");
  if (found->empty()) return failed("edit: old_text was not found in " + ws.display(at));
  std::size_t first = found->front();
  if (found->size() > 1)
    return failed("edit: old_text occurs " + std::string(found->size() >= 1000 ? "at least " : "") +
                  std::to_string(found->size()) + " times in " + ws.display(at) +
                  "; include more surrounding text so that it matches exactly once");
  std::string after = content->substr(0, first) + new_text + content->substr(first + old_text.size());
  if (after.size() > p.write_bytes_max)
    return failed("edit: the file would have " + std::to_string(after.size()) + " bytes, over the limit of " +
                  std::to_string(p.write_bytes_max));
  auto diff = sanitize_utf8(edit_diff(ws.display(at), *content, first, old_text, new_text));
  if (p.file_approval && !r.approved)
    return ask("edit", "edits ask first", value{{"path", at.real}, {"diff", diff}});
  // The person approved this diff: a file changed since then gets no edit it was not shown.
  if (auto changed = check_approved(r, "diff", diff))
    return refused("edit: " + ws.display(at) + " changed after the edit was approved; nothing was written");
  if (auto w = write_replacing(at, after); !w) return failed("edit: " + w.error().message);
  return done(value{{"path", ws.display(at)}, {"diff", diff}});
}

} // namespace keel::sandbox::detail
