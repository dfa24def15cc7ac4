#include "apps/keel/render.hpp"

#include "runtime/clock.hpp"
#include "sandbox/text.hpp"

#include <cstdio>
#include <ctime>
#include <sstream>

namespace keel::cli {

using wire::value;

namespace {

// Everything shown comes from a model, a tool or a client: control characters are shown as
// escapes, so that a carriage return or a terminal sequence cannot make a prompt read
// otherwise than what will run.
std::string raw(const value& v, const char* key) {
  auto it = v.find(key);
  if (it == v.end() || it->is_null()) return {};
  return it->is_string() ? it->get<std::string>() : it->dump();
}

// Every field is escaped and bounded: its start and its end always show (sandbox/text.hpp).
std::string str(const value& v, const char* key) { return sandbox::shown_field(raw(v, key)); }


// A block of lines (content, a diff), each line escaped on its own.
std::string indent(const std::string& text, const std::string& prefix) {
  std::string out;
  std::size_t start = 0;
  while (start < text.size()) {
    auto end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    out += prefix + sandbox::shown_field(std::string_view(text).substr(start, end - start)) + "\n";
    start = end + 1;
  }
  return out;
}

std::string env_lines(const value& context) {
  if (!context.contains("env") || !context["env"].is_object() || context["env"].empty()) return {};
  std::string out = "    Environment:\n";
  for (const auto& [name, v] : context["env"].items())
    out += "      " + sandbox::shown_field(name) + "=" +
           sandbox::shown_field(v.is_string() ? v.get<std::string>() : v.dump()) + "\n";
  return out;
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
  if (str(form, "kind") == "tool") {  // a tool worker's tool (docs/PROTOCOL.md, tool workers)
    out << "  TOOL APPROVAL REQUIRED: " << str(form, "title") << "\n" << rule << "\n\n"
        << "  The agent wants to use \"" << tool << "\" (a tool of queue " << str(form, "queue") << "):\n";
    if (!str(form, "description").empty()) out << "    " << str(form, "description") << "\n";
    out << "\n    Arguments:\n"
        << indent(form.contains("arguments") ? form["arguments"].dump(2, ' ', false, value::error_handler_t::replace) : "{}", "      ");
    if (form.contains("details"))
      out << "    The tool asks because:\n" << indent(form["details"].dump(2, ' ', false, value::error_handler_t::replace), "      ");
    out << "\n  Approve this call? (y/n): ";
  } else if (reason == "outside the workspace") {
    out << "  PATH ACCESS APPROVAL REQUIRED\n" << rule << "\n\n"
        << "  The agent wants to use \"" << tool << "\" outside its workspace:\n\n"
        << "    Path:      " << str(context, "path") << "\n"
        << "    Workspace: " << str(context, "workspace") << "\n";
    if (context.contains("command")) out << "    Command:   " << str(context, "command") << "\n" << env_lines(context);
    out << "\n  Approve this access? (y/n): ";
  } else if (tool == "exec") {
    out << "  COMMAND APPROVAL REQUIRED\n" << rule << "\n\n"
        << "  The agent wants to run a command on your machine:\n\n"
        << "    Command:   " << str(context, "command") << "\n"
        << "    Directory: " << str(context, "cwd") << "\n"
        << env_lines(context)
        << "    Why asked: " << str(form, "reason") << "\n\n"
        << "  y: run it once   n: refuse   a: always run this exact command in this run\n";
    if (context.contains("prefix"))
      out << "  p: always run simple commands that start with \"" << str(context, "prefix") << "\" in this run\n";
    out << "\n  Approve this command? (y/n/a" << (context.contains("prefix") ? "/p" : "") << "): ";
  } else if (context.contains("server") && context.contains("mcp_tool")) {  // an MCP server's tool (docs/TOOLS.md)
    out << "  MCP TOOL APPROVAL REQUIRED\n" << rule << "\n\n"
        << "  The agent wants to call \"" << str(context, "mcp_tool") << "\" of MCP server " << str(context, "server") << ":\n\n"
        << "    Arguments:\n"
        << indent(context.contains("arguments") ? context["arguments"].dump(2, ' ', false, value::error_handler_t::replace) : "{}", "      ")
        << "\n  Approve this call? (y/n): ";
  } else if (context.contains("argv") && context.contains("command")) {  // a command tool (docs/TOOLS.md)
    out << "  COMMAND TOOL APPROVAL REQUIRED\n" << rule << "\n\n"
        << "  The agent wants to run the command tool \"" << tool << "\":\n\n"
        << "    Command:   " << str(context, "command") << "\n"
        << "    Directory: " << str(context, "cwd") << "\n\n"
        << "  Approve this command? (y/n): ";
  } else if (tool == "edit") {
    out << "  EDIT APPROVAL REQUIRED\n" << rule << "\n\n"
        << "  The agent wants to use the \"edit\" tool:\n\n"
        << "    Path: " << str(context, "path") << "\n"
        << "    Change:\n" << indent(raw(context, "diff"), "      ")
        << "\n  Approve this operation? (y/n): ";
  } else {
    std::string upper;
    for (char c : tool) upper += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    out << "  " << upper << " APPROVAL REQUIRED\n" << rule << "\n\n"
        << "  The agent wants to use the \"" << tool << "\" tool:\n\n"
        << "    Path: " << str(context, "path") << "\n";
    if (context.contains("content"))
      out << "    Content:\n" << indent(raw(context, "content"), "      ");
    out << "\n  Approve this operation? (y/n): ";
  }
  return out.str();
}

std::string rfc3339_text(std::int64_t ms) {
  if (ms <= 0) return "-";
  std::time_t seconds = static_cast<std::time_t>(ms / 1000);
  std::tm t{};
  gmtime_r(&seconds, &t);
  char out[32];
  std::strftime(out, sizeof out, "%Y-%m-%dT%H:%M:%SZ", &t);
  return out;
}

std::string render_event(const wire::event& e) {
  const value& d = e.data;
  const std::string& t = e.event_type;
  // Who acted, as the broker or the gateway checked it ("" for runs recorded before names were).
  auto by = [&] { return str(d, "by").empty() ? std::string() : " by " + str(d, "by"); };
  if (t == "run_started") return "Run " + e.run_id + " started" + by() + " (agent " + str(d, "agent") + ")\n";
  if (t == "llm_step_started") return "";
  if (t == "llm_step_completed") {
    std::string out;
    auto text = raw(d, "text");  // indent() escapes each line; its line breaks stay line breaks
    if (!text.empty()) out += indent(text, "  model> ");
    return out;
  }
  // An approved call is sent a second time to run; it was shown when first asked for.
  if (t == "tool_call_started") return d.value("approved", false) ? "" : "  -> " + call_line(d) + "\n";
  if (t == "tool_call_completed") {
    std::string preview = raw(d, "text_preview");
    if (preview.size() > 600) preview = sandbox::sanitize_utf8(preview.substr(0, 600)) + "...";
    return std::string("  <- ") + str(d, "tool") + (d.value("is_error", false) ? " (error)" : "") +
           "\n" + indent(preview, "     ");
  }
  if (t == "suspend") return "  .. waiting for approval of step " + str(d, "step_key") + "\n";
  if (t == "resumed")
    return std::string("  -> ") + (d.value("approved", false) ? "Approved" : "Rejected") + by() + ". Resuming...\n";
  if (t == "task_retried") {
    if (d.contains("waiting") && d["waiting"].is_string())
      return "  (" + str(d, "waiting") + "; attempt " + str(d, "attempt") + " failed: " + str(d, "reason") + ")\n";
    return "  (step " + str(d, "task_step") + " sent again, attempt " + str(d, "attempt") + ": " +
           str(d, "reason") + ")\n";
  }
  if (t == "run_retried") return "  -> Retried" + by() + ", from step " + str(d, "task_step") + "\n";
  // Workflows (docs/WORKFLOWS.md).
  if (t == "wait_started")
    return str(d, "kind") == "event" ? "  .. waiting for event " + str(d, "event") + " (until " + str(d, "until") + "; keel signal " +
                                         e.run_id + " " + str(d, "event") + " sends it)\n"
                                     : "  .. sleeping until " + str(d, "until") + "\n";
  if (t == "wait_ended")
    return str(d, "reason") == "event" ? "  -> Event " + str(d, "event") + " came" + by() + "\n"
           : str(d, "reason") == "timeout" ? "  -> No event " + str(d, "event") + " came in time\n" : "  -> Woke\n";
  if (t == "event_received") return d.value("delivered", false) ? "" : "  (event " + str(d, "event") + " kept" + by() + ")\n";
  if (t == "approval_escalated") return "  .. approval " + str(d, "step_key") + " escalated to " + str(d, "to") + "\n";
  if (t == "approval_expired") return "  -> Nobody answered " + str(d, "step_key") + " in time: " + str(d, "answer") + "\n";
  if (t == "fan_out_started") return "  .. fan-out: " + std::to_string(d.contains("runs") ? d["runs"].size() : 0) + " child runs, waiting for " + (str(d, "wait") == "first" ? "the first" : "all") + "\n";
  if (t == "fan_out_child_ended") return "  .. child " + str(d, "index") + " (" + str(d, "run_id") + ") " + str(d, "status") + "\n";
  if (t == "run_queued") return "  .. in line in run queue " + str(d, "queue") + (str(d, "key").empty() ? "" : " (key " + str(d, "key") + ")") + "\n";
  if (t == "run_admitted") return "  -> Admitted by run queue " + str(d, "queue") + " after " + str(d, "waited_ms") + " ms\n";
  if (t == "step_timed_out") return "  (step " + str(d, "task_step") + " gave no result within " + str(d, "timeout_ms") + " ms: " + str(d, "outcome") + ")\n";
  if (t == "run_timed_out") return "  -> The run went on past its time limit\n";
  if (t == "run_completed") {
    const value& usage = d.contains("usage") ? d["usage"] : value::object();
    return "\nRun completed (" + str(d, "stop_reason") + ", " + str(d, "steps") + " model steps, " +
           std::to_string(usage.value("input_tokens", 0) + usage.value("output_tokens", 0)) +
           " tokens).\n";
  }
  if (t == "run_failed") return "\nRun failed: " + str(d, "error") + "\n  (keel retry RUN goes on from the step that failed)\n";
  if (t == "run_cancelled") return "\nRun cancelled" + by() + ": " + str(d, "reason") + "\n";
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
  out << "\n";
  if (r.contains("total_cost_usd") && r["total_cost_usd"].is_number() && r["total_cost_usd"].get<double>() > 0) {
    char cost[64];
    std::snprintf(cost, sizeof cost, "$%.4f", r["total_cost_usd"].get<double>());
    out << "Cost:    " << cost;
    if (r["cost_usd"].is_number() && r["cost_usd"].get<double>() != r["total_cost_usd"].get<double>()) {
      std::snprintf(cost, sizeof cost, "$%.4f", r["cost_usd"].get<double>());
      out << " (its own steps " << cost << ", the rest its sub-agents')";
    }
    out << "\n";
  }
  out << "Events:  " << str(r, "last_event_seq") << "\n";
  if (!str(r, "session_id").empty()) out << "Session: " << str(r, "session_id") << "\n";
  if (r.contains("waiting"))
    out << "Waiting: step " << str(r["waiting"], "step_key") << " ("
        << str(r["waiting"]["form"], "tool") << ")\n";
  if (r.contains("waiting_for") && r["waiting_for"].is_object()) {
    const value& w = r["waiting_for"];
    if (str(w, "kind") == "join") {
      out << "Waiting: for its fan-out of child runs:";
      if (r.contains("children") && r["children"].is_array())
        for (const auto& child : r["children"]) out << " " << str(child, "run_id") << " (" << str(child, "agent") << ")";
      out << "\n";
    }
    else
      out << "Waiting: " << (str(w, "kind") == "event" ? "for event " + str(w, "event") + ", at most" : std::string("sleeping"))
          << " until " << rfc3339_text(w.value("until_ms", std::int64_t{0})) << "\n";
  }
  if (str(r, "status") == "queued" && r.contains("queue") && r["queue"].is_object())
    out << "Queued:  in run queue " << str(r["queue"], "name")
        << (str(r["queue"], "key").empty() ? "" : " (key " + str(r["queue"], "key") + ")") << " since "
        << rfc3339_text(r["queue"].value("since_ms", std::int64_t{0})) << " (keel queues shows the line)\n";
  if (r.contains("events_kept") && r["events_kept"].is_array() && !r["events_kept"].empty())
    out << "Events:  " << r["events_kept"].size() << " kept for a later wait\n";
  if (r.contains("retrying") && r["retrying"].is_object()) {
    // When the next try is due, from now (the summary gives a wall-clock time).
    auto next = r["retrying"].value("next_try_ms", std::int64_t{0});
    auto in_s = std::max<std::int64_t>(0, (next - wall_ms() + 999) / 1000);
    bool model = str(r["retrying"], "waiting").rfind("waiting on the model", 0) == 0;
    out << "Retrying: " << (model ? "waiting on the model" : "waiting to run the tool again") << ", next try in "
        << in_s << " s (last failure: " << str(r["retrying"], "reason") << ")\n";
  }
  if (r.contains("stop_reason")) out << "Stopped: " << str(r, "stop_reason") << "\n";
  if (r.contains("error")) out << "Error:   " << str(r, "error") << "\n";
  if (str(r, "status") == "failed") out << "         (keel retry " << str(r, "run_id") << " goes on from the step that failed)\n";
  if (r.contains("output")) out << "Output:\n" << indent(raw(r, "output"), "  ");
  return out.str();
}

} // namespace keel::cli
