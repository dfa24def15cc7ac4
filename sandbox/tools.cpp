#include "sandbox/tools.hpp"

#include "sandbox/exec.hpp"
#include "sandbox/text.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace keel::sandbox {

namespace fs = std::filesystem;
using wire::value;

namespace {

tool_outcome done(value result) { return {outcome_kind::done, std::move(result), false, {}, {}}; }
tool_outcome failed(const std::string& message) {
  return {outcome_kind::done, value{{"error", message}}, true, {}, {}};
}
tool_outcome refused(const std::string& message) {
  return {outcome_kind::refused, value{{"error", message}}, true, {}, message};
}
tool_outcome ask(const std::string& tool, const std::string& reason, value context) {
  return {outcome_kind::needs_approval, {}, false,
          value{{"tool", tool}, {"reason", reason}, {"context", std::move(context)}}, {}};
}

// Argument access with errors the model can act on.
struct arguments {
  const value& v;
  const std::string& tool;

  std::optional<std::string> problem;

  std::string str(const char* key, bool required) {
    auto it = v.find(key);
    if (it == v.end() || it->is_null()) {
      if (required && !problem) problem = tool + ": missing argument '" + key + "'";
      return {};
    }
    if (!it->is_string()) {
      if (!problem) problem = tool + ": argument '" + key + "' must be a string";
      return {};
    }
    return it->get<std::string>();
  }
  std::int64_t integer(const char* key, std::int64_t fallback, std::int64_t min, std::int64_t max) {
    auto it = v.find(key);
    if (it == v.end() || it->is_null()) return fallback;
    if (!it->is_number_integer() || it->get<std::int64_t>() < min || it->get<std::int64_t>() > max) {
      if (!problem)
        problem = tool + ": argument '" + key + "' must be an integer from " +
                  std::to_string(min) + " to " + std::to_string(max);
      return fallback;
    }
    return it->get<std::int64_t>();
  }
  std::vector<std::string> strings(const char* key) {
    std::vector<std::string> out;
    auto it = v.find(key);
    if (it == v.end() || it->is_null()) return out;
    if (!it->is_array()) {
      if (!problem) problem = tool + ": argument '" + key + "' must be an array of strings";
      return out;
    }
    for (const auto& e : *it) {
      if (!e.is_string()) {
        if (!problem) problem = tool + ": argument '" + key + "' must be an array of strings";
        return {};
      }
      out.push_back(e.get<std::string>());
    }
    return out;
  }
  std::map<std::string, std::string> env(const char* key) {
    std::map<std::string, std::string> out;
    auto it = v.find(key);
    if (it == v.end() || it->is_null()) return out;
    if (!it->is_object()) {
      if (!problem) problem = tool + ": argument '" + key + "' must be a map of strings";
      return out;
    }
    for (const auto& [k, e] : it->items()) {
      if (!e.is_string()) {
        if (!problem) problem = tool + ": argument '" + key + "' must be a map of strings";
        return {};
      }
      out[k] = e.get<std::string>();
    }
    return out;
  }
};

// A path outside the workspace asks a person, or is refused, as the policy says.
std::optional<tool_outcome> check_outside(const workspace& ws, const policy& p,
                                          const tool_request& r, const resolved_path& path,
                                          const std::string& given) {
  if (path.inside || r.approved) return std::nullopt;
  if (p.outside == outside_access::deny)
    return refused(r.tool + ": " + given + " is outside the workspace (" + ws.root() +
                   "); access outside it is refused by policy");
  return ask(r.tool, "outside the workspace",
             value{{"path", path.real}, {"workspace", ws.root()}, {"access", r.tool}});
}

bool looks_binary(const std::string& head) { return head.find('\0') != std::string::npos; }

result<std::string> read_whole(const std::string& path, std::size_t bytes_max) {
  // One open, one fstat and the reads: what the file is, is asked of the open file itself.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) {
    if (errno == ENOENT || errno == ENOTDIR) return make_error(errc::not_found, "no such file: " + path);
    return make_error(errc::io, "cannot open " + path + ": " + std::strerror(errno));
  }
  struct closer {
    int fd;
    ~closer() { ::close(fd); }
  } closing{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) return make_error(errc::io, "cannot read " + path + ": " + std::strerror(errno));
  if (S_ISDIR(st.st_mode)) return make_error(errc::invalid_argument, path + " is a directory");
  if (!S_ISREG(st.st_mode)) return make_error(errc::invalid_argument, path + " is not a regular file");
  auto size = static_cast<std::size_t>(st.st_size);
  if (size > bytes_max)
    return make_error(errc::too_large, path + " has " + std::to_string(size) +
                                         " bytes, over the limit of " + std::to_string(bytes_max));
  std::string content(size, '\0');
  std::size_t got = 0;
  while (got < size) {
    auto n = ::read(fd, content.data() + got, size - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return make_error(errc::io, "cannot read " + path + ": " + std::strerror(errno));
    if (n == 0) break;  // shorter now than when asked: what is there
    got += static_cast<std::size_t>(n);
  }
  content.resize(got);
  return content;
}

// Writes through a temporary file in the same directory, synced, then renamed over the target.
result<void> write_atomically(const std::string& path, const std::string& content) {
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  if (ec) return make_error(errc::io, "cannot create the directory of " + path + ": " + ec.message());
  std::string temporary = path + ".keel-tmp-" + std::to_string(::getpid());
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    out << content;
    out.flush();
    if (!out) return make_error(errc::io, "cannot write " + path);
  }
  if (FILE* f = std::fopen(temporary.c_str(), "rb")) {
    ::fsync(fileno(f));
    std::fclose(f);
  }
  fs::rename(temporary, path, ec);
  if (ec) {
    fs::remove(temporary);
    return make_error(errc::io, "cannot replace " + path + ": " + ec.message());
  }
  return success();
}

std::string preview(const std::string& content, std::size_t chars_max) {
  if (content.size() <= chars_max) return sanitize_utf8(content);
  return sanitize_utf8(content.substr(0, chars_max)) + "\n[... " +
         std::to_string(content.size() - chars_max) + " more characters]";
}

// ---- exec ---------------------------------------------------------------------------------

bool command_allowed(const policy& p, const tool_request& r, const std::string& command) {
  if (p.exec == exec_security::allow_always) return true;
  if (r.approved) return true;
  for (const auto& pattern : r.allow_patterns)
    if (glob_match(pattern, command, false)) return true;
  if (p.exec == exec_security::allowlist)
    for (const auto& pattern : p.allowlist)
      if (glob_match(pattern, command, false)) return true;
  return false;
}

tool_outcome exec_tool(const workspace& ws, const policy& p, const tool_request& r) {
  arguments a{r.arguments, r.tool, {}};
  auto command = a.str("command", true);
  auto cwd_given = a.str("cwd", false);
  auto timeout_ms = a.integer("timeout_ms", p.exec_timeout_ms, 1, p.exec_timeout_ms);
  auto env = a.env("env");
  if (a.problem) return failed(*a.problem);
  if (command.empty()) return failed("exec: the command is empty");
  auto cwd = ws.resolve(cwd_given);
  if (auto outside = check_outside(ws, p, r, cwd, cwd_given)) {
    if (outside->kind == outcome_kind::needs_approval)
      outside->form["context"]["command"] = command;
    return *outside;
  }
  if (!command_allowed(p, r, command)) {
    return ask("exec", p.exec == exec_security::allowlist ? "not on the allowlist"
                                                          : "every command asks first",
               value{{"command", command}, {"cwd", cwd.real}});
  }
  std::error_code ec;
  if (!fs::is_directory(cwd.real, ec)) return failed("exec: no such directory: " + cwd_given);
  exec_request request;
  request.command = command;
  request.cwd = cwd.real;
  request.limits = p.env.limits;
  if (p.env.kind == environment_kind::bwrap) {
    if (auto available = bwrap_available(); !available) return failed("exec: " + available.error().message);
    if (!cwd.inside)
      return refused("exec: under bwrap a command runs inside its workspace; " + cwd_given +
                     " is outside it");
    request.wrapper = bwrap_prefix(p.env, ws.root(), cwd.real);
  }
  request.timeout_ms = timeout_ms;
  request.output_chars_max = p.output_chars_max;
  for (const auto& [k, v] : env) request.env.emplace_back(k, v);
  request.env.emplace_back("KEEL_TASK_ID", r.task_id);
  request.env.emplace_back("KEEL_WORKSPACE", ws.root());
  auto ran = run_command(request);
  if (!ran) return failed("exec: " + ran.error().message);
  value out{{"exit_code", ran->exit_code}, {"stdout", ran->stdout_text},
            {"stderr", ran->stderr_text}, {"timed_out", ran->timed_out},
            {"duration_ms", ran->duration_ms}};
  if (ran->stdout_cut) out["stdout_cut"] = ran->stdout_cut;
  if (ran->stderr_cut) out["stderr_cut"] = ran->stderr_cut;
  tool_outcome o = done(std::move(out));
  o.is_error = ran->exit_code != 0;
  return o;
}

// ---- read, write, edit ---------------------------------------------------------------------

tool_outcome read_tool(const workspace& ws, const policy& p, const tool_request& r) {
  arguments a{r.arguments, r.tool, {}};
  auto given = a.str("path", true);
  auto offset = a.integer("offset", 1, 1, INT32_MAX);
  auto limit = a.integer("limit", static_cast<std::int64_t>(p.read_lines_default), 1, 100'000);
  if (a.problem) return failed(*a.problem);
  auto path = ws.resolve(given);
  if (auto outside = check_outside(ws, p, r, path, given)) return *outside;
  auto content = read_whole(path.real, p.read_bytes_max);
  if (!content) return failed("read: " + content.error().message);
  if (looks_binary(content->substr(0, 8192)))
    return failed("read: " + given + " is a binary file; read shows text files only");
  std::istringstream in(*content);
  std::string line, numbered;
  std::int64_t number = 0, shown = 0;
  while (std::getline(in, line)) {
    ++number;
    if (number < offset || shown >= limit) continue;
    if (line.size() > p.line_chars_max) line = line.substr(0, p.line_chars_max) + " [line cut]";
    char prefix[32];
    std::snprintf(prefix, sizeof prefix, "%6lld\t", static_cast<long long>(number));
    numbered += prefix + sanitize_utf8(line) + "\n";
    ++shown;
  }
  return done(value{{"path", ws.display(path)}, {"content", numbered}, {"lines_total", number},
                    {"from", offset}, {"to", offset + shown - 1}});
}

tool_outcome write_tool(const workspace& ws, const policy& p, const tool_request& r) {
  arguments a{r.arguments, r.tool, {}};
  auto given = a.str("path", true);
  auto content = a.str("content", true);
  if (a.problem) return failed(*a.problem);
  auto path = ws.resolve(given);
  if (auto outside = check_outside(ws, p, r, path, given)) {
    if (outside->kind == outcome_kind::needs_approval)
      outside->form["context"]["content"] = preview(content, p.preview_chars_max);
    return *outside;
  }
  std::error_code ec;
  if (fs::is_directory(path.real, ec)) return failed("write: " + given + " is a directory");
  if (p.file_approval && !r.approved) {
    auto lines = std::count(content.begin(), content.end(), '\n');
    return ask("write", "writes ask first",
               value{{"path", path.real}, {"content", preview(content, p.preview_chars_max)},
                     {"bytes", content.size()}, {"lines", lines},
                     {"exists", fs::exists(path.real, ec)}});
  }
  if (auto w = write_atomically(path.real, content); !w) return failed("write: " + w.error().message);
  return done(value{{"path", ws.display(path)}, {"bytes", content.size()}});
}

tool_outcome edit_tool(const workspace& ws, const policy& p, const tool_request& r) {
  arguments a{r.arguments, r.tool, {}};
  auto given = a.str("path", true);
  auto old_text = a.str("old_text", true);
  auto new_text = a.str("new_text", true);
  if (a.problem) return failed(*a.problem);
  if (old_text.empty()) return failed("edit: old_text is empty; use write to create a file");
  auto path = ws.resolve(given);
  if (auto outside = check_outside(ws, p, r, path, given)) return *outside;
  auto content = read_whole(path.real, p.read_bytes_max);
  if (!content) return failed("edit: " + content.error().message);
  std::size_t first = content->find(old_text);
  if (first == std::string::npos) return failed("edit: old_text was not found in " + given);
  std::size_t count = 0;
  for (auto at = first; at != std::string::npos; at = content->find(old_text, at + 1)) ++count;
  if (count > 1)
    return failed("edit: old_text occurs " + std::to_string(count) + " times in " + given +
                  "; include more surrounding text so that it matches exactly once");
  auto diff = edit_diff(ws.display(path), *content, first, old_text, new_text);
  if (p.file_approval && !r.approved)
    return ask("edit", "edits ask first", value{{"path", path.real}, {"diff", sanitize_utf8(diff)}});
  std::string after = content->substr(0, first) + new_text + content->substr(first + old_text.size());
  if (auto w = write_atomically(path.real, after); !w) return failed("edit: " + w.error().message);
  return done(value{{"path", ws.display(path)}, {"diff", sanitize_utf8(diff)}});
}

// ---- glob, grep ----------------------------------------------------------------------------

// Files under `base` (inside the workspace), depth first, without following symlinked
// directories, skipping what `ignore` patterns match; `visit` returns false to stop.
template <class Visit>
void walk_files(const workspace& ws, const std::string& base, const std::vector<std::string>& ignore,
                Visit visit) {
  std::error_code ec;
  fs::recursive_directory_iterator it(base, fs::directory_options::skip_permission_denied, ec);
  for (; !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    std::string relative = fs::path(it->path()).lexically_relative(base).string();
    bool ignored = false;
    for (const auto& pattern : ignore)
      if (glob_match(pattern, relative, true) || glob_match(pattern, it->path().filename().string(), true))
        ignored = true;
    if (ignored) {
      if (it->is_directory(ec)) it.disable_recursion_pending();
      continue;
    }
    if (it->is_symlink(ec)) {
      // A symlink counts only if it leads inside the workspace, and is never descended.
      if (!ws.resolve(it->path().string()).inside) continue;
      if (fs::is_directory(it->path(), ec)) continue;
    }
    if (!it->is_regular_file(ec)) continue;
    if (!visit(relative, it->path().string())) return;
  }
}

const std::vector<std::string> default_ignore = {".git", "node_modules"};

tool_outcome glob_tool(const workspace& ws, const policy& p, const tool_request& r) {
  arguments a{r.arguments, r.tool, {}};
  auto pattern = a.str("pattern", true);
  auto cwd_given = a.str("cwd", false);
  auto ignore = a.strings("ignore");
  if (a.problem) return failed(*a.problem);
  if (pattern.find("..") != std::string::npos || (!pattern.empty() && pattern[0] == '/'))
    return failed("glob: the pattern must be relative to cwd and must not climb out with '..'");
  auto cwd = ws.resolve(cwd_given);
  if (auto outside = check_outside(ws, p, r, cwd, cwd_given)) return *outside;
  ignore.insert(ignore.end(), default_ignore.begin(), default_ignore.end());
  std::vector<std::string> files;
  bool truncated = false;
  walk_files(ws, cwd.real, ignore, [&](const std::string& relative, const std::string&) {
    if (!glob_match(pattern, relative, true)) return true;
    if (files.size() >= p.glob_results_max) {
      truncated = true;
      return false;
    }
    files.push_back(relative);
    return true;
  });
  std::sort(files.begin(), files.end());
  return done(value{{"files", files}, {"count", files.size()}, {"truncated", truncated}});
}

tool_outcome grep_tool(const workspace& ws, const policy& p, const tool_request& r) {
  arguments a{r.arguments, r.tool, {}};
  auto pattern = a.str("pattern", true);
  auto cwd_given = a.str("cwd", false);
  auto include = a.str("include", false);
  auto results_max = a.integer("max_results", static_cast<std::int64_t>(p.grep_results_default), 1, 10'000);
  auto context = a.integer("context", 0, 0, 20);
  if (a.problem) return failed(*a.problem);
  std::regex expression;
  try {
    expression = std::regex(pattern, std::regex::ECMAScript | std::regex::optimize);
  } catch (const std::regex_error& e) {
    return failed("grep: not a valid regular expression: " + std::string(e.what()));
  }
  auto cwd = ws.resolve(cwd_given);
  if (auto outside = check_outside(ws, p, r, cwd, cwd_given)) return *outside;
  std::string out;
  std::int64_t matches = 0;
  bool truncated = false;
  walk_files(ws, cwd.real, default_ignore, [&](const std::string& relative, const std::string& full) {
    if (!include.empty() && !glob_match(include, relative, true) &&
        !glob_match(include, fs::path(relative).filename().string(), true))
      return true;
    auto content = read_whole(full, p.read_bytes_max);
    if (!content || looks_binary(content->substr(0, 8192))) return true;
    std::vector<std::string> lines;
    std::istringstream in(*content);
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    std::int64_t shown_through = -1;
    for (std::size_t i = 0; i < lines.size(); ++i) {
      if (!std::regex_search(lines[i], expression)) continue;
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
        std::string text = lines[static_cast<std::size_t>(k)];
        if (text.size() > p.line_chars_max) text = text.substr(0, p.line_chars_max) + " [line cut]";
        out += relative + (k == static_cast<std::int64_t>(i) ? ":" : "-") + std::to_string(k + 1) +
               (k == static_cast<std::int64_t>(i) ? ": " : "- ") + sanitize_utf8(text) + "\n";
      }
      shown_through = to;
    }
    return true;
  });
  return done(value{{"matches", out}, {"count", matches}, {"truncated", truncated}});
}

} // namespace

tool_outcome run_tool(const workspace& ws, const policy& p, const tool_request& request) {
  if (!request.arguments.is_object())
    return failed(request.tool + ": arguments must be a map");
  if (request.tool == "exec") return exec_tool(ws, p, request);
  if (request.tool == "read") return read_tool(ws, p, request);
  if (request.tool == "write") return write_tool(ws, p, request);
  if (request.tool == "edit") return edit_tool(ws, p, request);
  if (request.tool == "glob") return glob_tool(ws, p, request);
  if (request.tool == "grep") return grep_tool(ws, p, request);
  return failed("unknown tool '" + request.tool + "'; the tools are exec, read, write, edit, glob, grep");
}

const std::vector<std::string>& tool_names() {
  static const std::vector<std::string> names = {"exec", "read", "write", "edit", "glob", "grep"};
  return names;
}

wire::value tool_definition(const std::string& name) {
  auto string_property = [](const char* description) {
    return value{{"type", "string"}, {"description", description}};
  };
  auto integer_property = [](const char* description) {
    return value{{"type", "integer"}, {"description", description}};
  };
  value properties = value::object();
  std::vector<std::string> required;
  std::string description;
  if (name == "exec") {
    description = "Run a shell command in the workspace. Returns stdout, stderr and the exit code.";
    properties = {{"command", string_property("The shell command")},
                  {"cwd", string_property("Working directory, relative to the workspace")},
                  {"timeout_ms", integer_property("Time limit in milliseconds")},
                  {"env", value{{"type", "object"}, {"description", "Extra environment variables"},
                                {"additionalProperties", {{"type", "string"}}}}}};
    required = {"command"};
  } else if (name == "read") {
    description = "Read a text file, with numbered lines.";
    properties = {{"path", string_property("File path, relative to the workspace")},
                  {"offset", integer_property("First line to show, from 1")},
                  {"limit", integer_property("How many lines to show")}};
    required = {"path"};
  } else if (name == "write") {
    description = "Create or replace a file with the given content.";
    properties = {{"path", string_property("File path, relative to the workspace")},
                  {"content", string_property("The whole new content")}};
    required = {"path", "content"};
  } else if (name == "edit") {
    description = "Replace one exact occurrence of old_text in a file with new_text.";
    properties = {{"path", string_property("File path, relative to the workspace")},
                  {"old_text", string_property("Text to replace; must occur exactly once")},
                  {"new_text", string_property("Replacement text")}};
    required = {"path", "old_text", "new_text"};
  } else if (name == "glob") {
    description = "List files whose path matches a glob pattern (* ? **), sorted.";
    properties = {{"pattern", string_property("Glob pattern, e.g. src/**/*.js")},
                  {"cwd", string_property("Directory to search, relative to the workspace")},
                  {"ignore", value{{"type", "array"}, {"items", {{"type", "string"}}},
                                   {"description", "Patterns to leave out"}}}};
    required = {"pattern"};
  } else if (name == "grep") {
    description = "Search file contents with a regular expression.";
    properties = {{"pattern", string_property("Regular expression (ECMAScript)")},
                  {"cwd", string_property("Directory to search, relative to the workspace")},
                  {"include", string_property("Only files matching this glob")},
                  {"max_results", integer_property("Most matches to return (default 100)")},
                  {"context", integer_property("Lines of context around each match")}};
    required = {"pattern"};
  } else {
    return nullptr;
  }
  return value{{"name", name}, {"description", description},
               {"input_schema", {{"type", "object"}, {"properties", properties}, {"required", required}}}};
}

} // namespace keel::sandbox
