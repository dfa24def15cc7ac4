// Command tools ([agents.<id>.commands.<name>]): a program the config chose, with arguments the
// model gave, checked against the tool's JSON Schema and put into its argv without a shell; run
// in the sandbox exactly as exec runs (the same account, confinement, limits and output bounds).
#include "runtime/command_template.hpp"
#include "runtime/json_schema.hpp"
#include "sandbox/confined_call.hpp"
#include "sandbox/text.hpp"
#include "sandbox/tool_support.hpp"

namespace keel::sandbox::detail {

using wire::value;

namespace {

// How a person reads an argv: words a shell would read as they are stay bare, others are quoted.
std::string shown(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& a : argv) {
    if (!out.empty()) out.push_back(' ');
    bool plain = !a.empty() && a.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./=:,+@%") ==
                                 std::string::npos;
    if (plain) {
      out += a;
      continue;
    }
    out.push_back('\'');
    for (char c : a) {
      if (c == '\'') out += "'\\''";
      else out.push_back(c);
    }
    out.push_back('\'');
  }
  return escape_controls(out);
}

} // namespace

const config::command_tool* find_command(const policy& p, const std::string& name) {
  for (const auto& c : p.commands)
    if (c.name == name) return &c;
  return nullptr;
}

tool_outcome command_tool(const workspace& ws, const policy& p, const tool_request& r, const config::command_tool& c) {
  auto schema_json = nlohmann::json::parse(c.arguments_schema, nullptr, false);
  auto schema = schema::json_schema::compile(schema_json);
  if (!schema) return failed(c.name + ": its arguments' schema does not compile: " + schema.error().message);
  if (auto problem = schema->problem(r.arguments, "arguments"); !problem.empty())
    return failed(c.name + ": " + problem);
  auto argv = config::expand_template(c.argv, r.arguments);
  if (!argv) return failed(c.name + ": " + argv.error().message);
  auto cwd = ws.locate(c.cwd, outside_paths::leave);
  if (!cwd) return failed(c.name + ": " + cwd.error().message);
  if (!cwd->inside) return refused(c.name + ": its directory " + escape_controls(c.cwd) + " is outside the workspace");
  if (!cwd->exists || !cwd->is_directory) return failed(c.name + ": no such directory in the workspace: " + escape_controls(c.cwd));
  const std::string command_text = shown(*argv);
  value argv_value = value::array();
  for (const auto& a : *argv) argv_value.push_back(a);
  if (c.approval != "never" && !r.approved)
    return ask(c.name, "command tool " + c.name + " asks a person before each call",
               value{{"command", command_text}, {"argv", argv_value}, {"cwd", cwd->real},
                     {"cwd_display", ws.display(*cwd)}, {"arguments", r.arguments}});
  // Approved: the very program and arguments the form showed (a form without them approved nothing).
  if (c.approval != "never" && (!r.approved_form.is_object() || !r.approved_form.contains("command")))
    return refused(c.name + ": the approval names no command, so nothing was done");
  if (auto changed = check_approved(r, "command", command_text)) return *changed;

  confined_call call;
  if (auto prepared = prepare_confined(call, ws, p, *cwd, {}, r.task_id); !prepared)
    return failed(c.name + ": " + prepared.error().message);
  call.request.argv = *argv;
  call.request.timeout_ms = c.timeout_ms > 0 ? c.timeout_ms : p.exec_timeout_ms;
  auto ran = run_command(call.request);
  if (!ran) return failed(c.name + ": " + ran.error().message);
  return program_outcome(*ran);
}

} // namespace keel::sandbox::detail

namespace keel::sandbox {

wire::value tool_definition(const config::command_tool& c) {
  using wire::value;
  auto schema = nlohmann::json::parse(c.arguments_schema, nullptr, false);
  return value{{"name", c.name}, {"description", c.description.empty() ? "Runs " + c.argv[0] : c.description},
               {"input_schema", schema.is_discarded() ? value{{"type", "object"}} : schema}};
}

} // namespace keel::sandbox
