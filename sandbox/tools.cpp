#include "sandbox/tools.hpp"

#include "sandbox/text.hpp"
#include "sandbox/tool_support.hpp"

namespace keel::sandbox {

using wire::value;

namespace detail {

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

std::string arguments::str(const char* key, bool required) {
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

std::int64_t arguments::integer(const char* key, std::int64_t fallback, std::int64_t min, std::int64_t max) {
  auto it = v.find(key);
  if (it == v.end() || it->is_null()) return fallback;
  bool fits = it->is_number_integer() &&
              (it->is_number_unsigned() ? it->get<std::uint64_t>() <= static_cast<std::uint64_t>(max)
                                        : it->get<std::int64_t>() <= max) &&
              (it->is_number_unsigned() || it->get<std::int64_t>() >= min);
  if (!fits) {
    if (!problem)
      problem = tool + ": argument '" + key + "' must be an integer from " + std::to_string(min) +
                " to " + std::to_string(max);
    return fallback;
  }
  return it->get<std::int64_t>();
}

bool arguments::boolean(const char* key, bool fallback) {
  auto it = v.find(key);
  if (it == v.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) {
    if (!problem) problem = tool + ": argument '" + key + "' must be true or false";
    return fallback;
  }
  return it->get<bool>();
}

std::vector<std::string> arguments::strings(const char* key) {
  std::vector<std::string> out;
  auto it = v.find(key);
  if (it == v.end() || it->is_null()) return out;
  if (!it->is_array() || it->size() > 1000) {
    if (!problem) problem = tool + ": argument '" + key + "' must be an array of at most 1000 strings";
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

std::map<std::string, std::string> arguments::env(const char* key) {
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

outside_paths outside_mode(const policy& p) {
  return p.outside == outside_access::deny ? outside_paths::leave : outside_paths::resolve;
}

std::optional<tool_outcome> check_approved(const tool_request& r, const char* key, const std::string& now) {
  if (!r.approved) return std::nullopt;
  const value& form = r.approved_form;
  if (!form.is_object() || !form.contains(key)) return std::nullopt;  // approved by an older node
  if (form[key].is_string() && form[key].get<std::string>() == now) return std::nullopt;
  std::string then = form[key].is_string() ? form[key].get<std::string>() : std::string("?");
  return refused(r.tool + ": the approved " + key + " was " + escape_controls(then) + ", but it is now " +
                 escape_controls(now) + "; it changed after the approval, so nothing was done");
}

std::optional<tool_outcome> check_outside(const workspace& ws, const policy& p, const tool_request& r,
                                          const location& at, const std::string& given, value context) {
  if (at.inside) return std::nullopt;
  if (p.outside == outside_access::deny)
    return refused(r.tool + ": " + escape_controls(given) + " is outside the workspace (" + ws.root() +
                   "); access outside it is refused by policy");
  if (r.approved) return std::nullopt;  // checked against the form by the tool
  context["workspace"] = ws.root();
  context["access"] = r.tool;
  return ask(r.tool, "outside the workspace", std::move(context));
}

std::string preview(const std::string& content, std::size_t chars_max) {
  if (content.size() <= chars_max) return sanitize_utf8(content);
  return sanitize_utf8(content.substr(0, chars_max)) + "\n[... " +
         std::to_string(content.size() - chars_max) + " more characters]";
}

} // namespace detail

using namespace detail;

std::vector<allow_rule> allow_rules_from_value(const value& v) {
  std::vector<allow_rule> rules;
  if (!v.is_array()) return rules;
  for (const auto& e : v) {
    if (e.is_string()) {
      rules.push_back({allow_kind::exact, e.get<std::string>()});
    } else if (e.is_object() && e.contains("command") && e["command"].is_string()) {
      auto kind = e.value("kind", std::string("exact")) == "prefix" ? allow_kind::prefix : allow_kind::exact;
      rules.push_back({kind, e["command"].get<std::string>()});
    }
  }
  return rules;
}

value to_value(const allow_rule& rule) {
  return value{{"kind", std::string(to_string(rule.kind))}, {"command", rule.command}};
}

tool_outcome run_tool(const workspace& ws, const policy& p, const tool_request& request) {
  if (!request.arguments.is_object())
    return failed(request.tool + ": arguments must be a map");
  // What the tools make belongs to the command's user, and the workspace is that user's.
  auto run_as = command_identity(p.env.run_as);
  if (!run_as) return failed(request.tool + ": " + run_as.error().message);
  if (auto given = hand_over(ws.root_fd(), *run_as); !given) return failed(request.tool + ": " + given.error().message);
  if (request.tool == "exec") return exec_tool(ws, p, request);  // its own time limit
  if (const auto* command = find_command(p, request.tool)) return command_tool(ws, p, request, *command);
  // The file tools run under the tool time limit; their walks and reads check it. They act with
  // the command's filesystem identity: nothing they do could a command not do itself.
  acting_as as_command(*run_as);
  if (request.tool == "read") return read_tool(ws, p, request);
  if (request.tool == "write") return write_tool(ws, p, request);
  if (request.tool == "edit") return edit_tool(ws, p, request);
  if (request.tool == "glob") return glob_tool(ws, p, request);
  if (request.tool == "grep") return grep_tool(ws, p, request);
  return failed("unknown tool '" + escape_controls(request.tool.substr(0, 100)) + "'; the tools are exec, read, write, edit, glob, grep");
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
    properties = {{"pattern", string_property("Regular expression (RE2 syntax)")},
                  {"ignore_case", value{{"type", "boolean"}, {"description", "Match without regard to case"}}},
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
