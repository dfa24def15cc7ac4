#include "apps/keel/render.hpp"

#include <sstream>

namespace keel::cli {

using wire::value;

namespace {

std::string indent(const std::string& text, const std::string& prefix) {
  std::istringstream in(text);
  std::string line, out;
  while (std::getline(in, line)) out += prefix + line + "\n";
  return out;
}

std::string str(const value& v, const char* key) {
  auto it = v.find(key);
  if (it == v.end() || it->is_null()) return {};
  return it->is_string() ? it->get<std::string>() : it->dump();
}

std::string call_line(const value& call) {
  const value& args = call.contains("arguments") ? call["arguments"] : value::object();
  std::string name = str(call, "name").empty() ? str(call, "tool") : str(call, "name");
  std::string detail;
  if (args.contains("command")) detail = str(args, "command");
  else if (args.contains("path")) detail = str(args, "path");
  else if (args.contains("pattern")) detail = str(args, "pattern");
  return name + (detail.empty() ? "" : " " + detail);
}

} // namespace

std::string render_approval(const value& data) {
  const value& form = data.contains("form") ? data["form"] : value::object();
  const value& context = form.contains("context") ? form["context"] : value::object();
  std::string tool = str(form, "tool");
  std::string reason = str(form, "reason");
  std::string rule(60, '=');
  std::ostringstream out;
  out << "\n" << rule << "\n";
  if (reason == "outside the workspace") {
    out << "  PATH ACCESS APPROVAL REQUIRED\n" << rule << "\n\n"
        << "  The agent wants to use \"" << tool << "\" outside its workspace:\n\n"
        << "    Path:      " << str(context, "path") << "\n"
        << "    Workspace: " << str(context, "workspace") << "\n";
    if (context.contains("command")) out << "    Command:   " << str(context, "command") << "\n";
    out << "\n  Approve this access? (y/n): ";
  } else if (tool == "exec") {
    out << "  COMMAND APPROVAL REQUIRED\n" << rule << "\n\n"
        << "  The agent wants to run a command on your machine:\n\n"
        << "    Command:   " << str(context, "command") << "\n"
        << "    Directory: " << str(context, "cwd") << "\n"
        << "\n  Approve this command? (y/n): ";
  } else if (tool == "edit") {
    out << "  EDIT APPROVAL REQUIRED\n" << rule << "\n\n"
        << "  The agent wants to use the \"edit\" tool:\n\n"
        << "    Path: " << str(context, "path") << "\n"
        << "    Change:\n" << indent(str(context, "diff"), "      ")
        << "\n  Approve this operation? (y/n): ";
  } else {
    std::string upper;
    for (char c : tool) upper += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    out << "  " << upper << " APPROVAL REQUIRED\n" << rule << "\n\n"
        << "  The agent wants to use the \"" << tool << "\" tool:\n\n"
        << "    Path: " << str(context, "path") << "\n";
    if (context.contains("content"))
      out << "    Content:\n" << indent(str(context, "content"), "      ");
    out << "\n  Approve this operation? (y/n): ";
  }
  return out.str();
}

std::string render_event(const wire::event& e) {
  const value& d = e.data;
  const std::string& t = e.event_type;
  if (t == "run_started") return "Run " + e.run_id + " started (agent " + str(d, "agent") + ")\n";
  if (t == "llm_step_started") return "";
  if (t == "llm_step_completed") {
    std::string out;
    auto text = str(d, "text");
    if (!text.empty()) out += indent(text, "  model> ");
    return out;
  }
  // An approved call is sent a second time to run; it was shown when first asked for.
  if (t == "tool_call_started") return d.value("approved", false) ? "" : "  -> " + call_line(d) + "\n";
  if (t == "tool_call_completed") {
    std::string preview = str(d, "text_preview");
    if (preview.size() > 600) preview = preview.substr(0, 600) + "...";
    return std::string("  <- ") + str(d, "tool") + (d.value("is_error", false) ? " (error)" : "") +
           "\n" + indent(preview, "     ");
  }
  if (t == "suspend") return "  .. waiting for approval of step " + str(d, "step_key") + "\n";
  if (t == "resumed")
    return std::string("  -> ") + (d.value("approved", false) ? "Approved" : "Rejected") + ". Resuming...\n";
  if (t == "task_retried")
    return "  (step " + str(d, "task_step") + " sent again, attempt " + str(d, "attempt") + ": " +
           str(d, "reason") + ")\n";
  if (t == "run_completed") {
    const value& usage = d.contains("usage") ? d["usage"] : value::object();
    return "\nRun completed (" + str(d, "stop_reason") + ", " + str(d, "steps") + " model steps, " +
           std::to_string(usage.value("input_tokens", 0) + usage.value("output_tokens", 0)) +
           " tokens).\n";
  }
  if (t == "run_failed") return "\nRun failed: " + str(d, "error") + "\n";
  if (t == "run_cancelled") return "\nRun cancelled: " + str(d, "reason") + "\n";
  return "  [" + t + "]\n";
}

std::string render_summary(const value& r) {
  std::ostringstream out;
  const value& usage = r.contains("usage") ? r["usage"] : value::object();
  out << "Run:     " << str(r, "run_id") << "\n"
      << "Agent:   " << str(r, "agent") << "\n"
      << "Status:  " << str(r, "status") << "\n"
      << "Steps:   " << str(r, "steps") << "\n"
      << "Tokens:  " << usage.value("input_tokens", 0) << " in, " << usage.value("output_tokens", 0)
      << " out";
  if (usage.value("cache_read_tokens", 0) > 0 || usage.value("cache_write_tokens", 0) > 0)
    out << " (cache: " << usage.value("cache_read_tokens", 0) << " read, "
        << usage.value("cache_write_tokens", 0) << " written)";
  out << "\n"
      << "Events:  " << str(r, "last_event_seq") << "\n";
  if (!str(r, "session_id").empty()) out << "Session: " << str(r, "session_id") << "\n";
  if (r.contains("waiting"))
    out << "Waiting: step " << str(r["waiting"], "step_key") << " ("
        << str(r["waiting"]["form"], "tool") << ")\n";
  if (r.contains("stop_reason")) out << "Stopped: " << str(r, "stop_reason") << "\n";
  if (r.contains("error")) out << "Error:   " << str(r, "error") << "\n";
  if (r.contains("output")) out << "Output:\n" << indent(str(r, "output"), "  ");
  return out.str();
}

} // namespace keel::cli
