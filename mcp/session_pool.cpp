#include "mcp/session_pool.hpp"

#include "mcp/client.hpp"
#include "mcp/http_transport.hpp"
#include "mcp/stdio_transport.hpp"
#include "runtime/clock.hpp"
#include "runtime/json_schema.hpp"
#include "sandbox/identity.hpp"
#include "sandbox/policy.hpp"
#include "sandbox/text.hpp"

#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <thread>

namespace keel::mcp {

using wire::value;

namespace {

constexpr std::size_t description_chars_max = 4096;
constexpr std::size_t definitions_bytes_max = 256 << 10;  // of one server's tools, told to the model

struct entry {
  std::mutex m;                 // held for one start or call
  std::unique_ptr<session> s;   // null or broken: started again by the next call
  std::int64_t last_used_ms = 0;
  std::int64_t idle_ms = 0;
  int users = 0;                // calls waiting or running (guarded by the pool's mutex)
};

bool is_model_name(const std::string& name) {
  return !name.empty() && name.size() <= 64 &&
         name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") == std::string::npos;
}

std::string approval_of(const config::mcp_server& server, const std::string& tool) {
  auto it = server.tool_approval.find(tool);
  return it == server.tool_approval.end() ? server.approval : it->second;
}

bool offered(const config::mcp_server& server, const std::string& tool) {
  return server.tools.empty() || std::find(server.tools.begin(), server.tools.end(), tool) != server.tools.end();
}

// A call's content as the model reads it: text as it is; anything else named with its size.
std::string content_text(const nlohmann::json& content) {
  std::string out;
  auto add = [&](const std::string& piece) {
    if (!out.empty()) out += "\n";
    out += piece;
  };
  for (const auto& block : content) {
    if (!block.is_object()) continue;
    auto type = block.contains("type") && block["type"].is_string() ? block["type"].get<std::string>() : std::string();
    auto text = [&](const nlohmann::json& o, const char* key) {
      return o.contains(key) && o[key].is_string() ? o[key].get<std::string>() : std::string();
    };
    // What keel writes around the server's text (a type, a URI, a MIME type) shows no control character.
    auto label = [&](const nlohmann::json& o, const char* key) { return sandbox::escape_controls(text(o, key).substr(0, 200)); };
    if (type == "text") add(text(block, "text"));
    else if (type == "image" || type == "audio")
      add("[" + type + " " + label(block, "mimeType") + ", " + std::to_string(text(block, "data").size() * 3 / 4) + " bytes]");
    else if (type == "resource_link") add("[resource " + label(block, "uri") + "]");
    else if (type == "resource" && block.contains("resource") && block["resource"].is_object()) {
      const auto& r = block["resource"];
      if (r.contains("text") && r["text"].is_string()) add("[resource " + label(r, "uri") + "]\n" + text(r, "text"));
      else add("[resource " + label(r, "uri") + ", " + std::to_string(text(r, "blob").size() * 3 / 4) + " bytes]");
    } else {
      add("[content of type " + sandbox::escape_controls(type.substr(0, 40)) + "]");
    }
  }
  return out;
}

} // namespace

struct session_pool::impl {
  std::size_t sessions_max;
  mutable std::mutex m;
  std::condition_variable wake;
  bool stopping = false;
  std::map<std::string, std::shared_ptr<entry>> entries;
  std::thread sweeper;
  // Servers are started from one thread that lives as long as the pool: a program started dies
  // with the thread that started it (PR_SET_PDEATHSIG), and a task's thread may end before its
  // server should.
  std::thread launcher;
  std::deque<std::function<void()>> launches;
  std::condition_variable launch_wake;

  void launch_loop() {
    std::unique_lock lock{m};
    for (;;) {
      launch_wake.wait(lock, [&] { return stopping || !launches.empty(); });
      if (launches.empty()) return;
      auto job = std::move(launches.front());
      launches.pop_front();
      lock.unlock();
      job();
      lock.lock();
    }
  }

  result<std::unique_ptr<transport>> on_launcher(std::function<result<std::unique_ptr<transport>>()> start) {
    auto done = std::make_shared<std::promise<result<std::unique_ptr<transport>>>>();
    auto future = done->get_future();
    {
      std::lock_guard lock{m};
      if (stopping) return make_error(errc::cancelled, "the worker is stopping");
      launches.push_back([done, start = std::move(start)] { done->set_value(start()); });
    }
    launch_wake.notify_one();
    return future.get();
  }

  // The entry of a key, made if new; null when the table is full of sessions in use.
  std::shared_ptr<entry> acquire(const std::string& key, std::int64_t idle_ms) {
    std::lock_guard lock{m};
    auto it = entries.find(key);
    if (it == entries.end()) {
      if (entries.size() >= sessions_max) {
        // The one unused longest makes room.
        auto oldest = entries.end();
        for (auto e = entries.begin(); e != entries.end(); ++e)
          if (e->second->users == 0 && (oldest == entries.end() || e->second->last_used_ms < oldest->second->last_used_ms)) oldest = e;
        if (oldest == entries.end()) return nullptr;
        entries.erase(oldest);  // its session ends when the last holder lets go
      }
      it = entries.emplace(key, std::make_shared<entry>()).first;
    }
    it->second->users++;
    it->second->idle_ms = idle_ms;
    return it->second;
  }
  void release(const std::shared_ptr<entry>& e) {
    std::lock_guard lock{m};
    e->users--;
    e->last_used_ms = steady_ms();
  }

  void sweep_loop() {
    std::unique_lock lock{m};
    while (!stopping) {
      wake.wait_for(lock, std::chrono::seconds(1));
      std::vector<std::shared_ptr<entry>> idle;
      auto now = steady_ms();
      for (auto it = entries.begin(); it != entries.end();) {
        if (it->second->users == 0 && now - it->second->last_used_ms > it->second->idle_ms) {
          idle.push_back(it->second);
          it = entries.erase(it);
        } else {
          ++it;
        }
      }
      lock.unlock();
      idle.clear();  // servers stop here, outside the table's lock
      lock.lock();
    }
  }

  // Runs `f` with the server's session, started if need be.
  template <class F>
  auto with_session(const config::agent_config& agent, const config::mcp_server& server, const std::string& root, F f)
    -> decltype(f(std::declval<session&>())) {
    std::string key = agent.id + '\n' + server.name + '\n' + (server.url.empty() ? root : std::string());
    auto e = acquire(key, server.idle_ms);
    if (!e) return make_error(errc::exhausted, "MCP server " + server.name + ": this worker already runs " +
                                                 std::to_string(sessions_max) + " MCP sessions, all in use");
    struct releaser {
      impl* pool;
      std::shared_ptr<entry> e;
      ~releaser() { pool->release(e); }
    } release_later{this, e};
    std::lock_guard session_lock{e->m};
    if (!e->s || e->s->broken()) {
      e->s.reset();
      auto started = start(agent, server, root);
      if (!started) return started.error();
      e->s = std::move(*started);
    }
    return f(*e->s);
  }

  result<std::unique_ptr<session>> start(const config::agent_config& agent, const config::mcp_server& server,
                                         const std::string& root) {
    std::unique_ptr<transport> t;
    if (!server.url.empty()) {
      auto connected = connect_http(server);
      if (!connected) return connected.error();
      t = std::move(*connected);
    } else {
      auto ws = sandbox::workspace::open(root);
      if (!ws) return make_error(ws.error().code, "MCP server " + server.name + ": " + ws.error().message);
      auto p = sandbox::policy_from_config(agent);
      // The workspace is the sandbox account's, as for any tool.
      auto run_as = sandbox::command_identity(p.env.run_as);
      if (!run_as) return make_error(run_as.error().code, "MCP server " + server.name + ": " + run_as.error().message);
      if (auto given = sandbox::hand_over(ws->root_fd(), *run_as); !given) return given.error();
      auto started = on_launcher([&] { return start_stdio(server, *ws, p); });
      if (!started) return started.error();
      t = std::move(*started);
    }
    return session::open(std::move(t), server.startup_timeout_ms);
  }
};

session_pool::session_pool(std::size_t sessions_max) : impl_(std::make_unique<impl>()) {
  impl_->sessions_max = sessions_max;
  impl_->sweeper = std::thread([this] { impl_->sweep_loop(); });
  impl_->launcher = std::thread([this] { impl_->launch_loop(); });
}

session_pool::~session_pool() {
  {
    std::lock_guard lock{impl_->m};
    impl_->stopping = true;
  }
  impl_->wake.notify_all();
  impl_->launch_wake.notify_all();
  impl_->sweeper.join();
  impl_->launcher.join();
  stop_all();
}

void session_pool::stop_all() {
  std::map<std::string, std::shared_ptr<entry>> all;
  {
    std::lock_guard lock{impl_->m};
    all.swap(impl_->entries);
  }
}

std::size_t session_pool::running() const {
  std::lock_guard lock{impl_->m};
  return impl_->entries.size();
}

const config::mcp_server* session_pool::server_of(const config::agent_config& agent, const std::string& name,
                                                  std::string& tool) {
  for (const auto& s : agent.mcp)
    if (name.size() > s.name.size() + 2 && name.compare(0, s.name.size() + 2, s.name + "__") == 0) {
      tool = name.substr(s.name.size() + 2);
      return &s;
    }
  return nullptr;
}

std::vector<value> session_pool::model_tools(const config::agent_config& agent, const std::string& root,
                                             std::vector<std::string>& problems) {
  std::vector<value> out;
  for (const auto& server : agent.mcp) {
    auto listed = impl_->with_session(agent, server, root, [&](session& s) { return s.tools(server.timeout_ms); });
    if (!listed) {
      problems.push_back(listed.error().message);
      continue;
    }
    std::size_t bytes = 0;
    for (const auto& t : *listed) {
      std::string name = server.name + "__" + t.name;
      if (!offered(server, t.name)) continue;
      if (!is_model_name(name)) {
        problems.push_back("MCP server " + server.name + ": tool \"" + sandbox::escape_controls(t.name.substr(0, 80)) +
                           "\" is not offered: its name as the model would call it is not 1 to 64 characters from [A-Za-z0-9_-]");
        continue;
      }
      value definition{{"name", name},
                       {"description", sandbox::escape_controls(t.description.substr(0, description_chars_max))},
                       {"input_schema", t.input_schema}};
      wire::repair_utf8(definition);  // a server's bytes that are not UTF-8 cannot reach a model service as JSON
      bytes += definition.dump().size();
      if (bytes > definitions_bytes_max) {
        problems.push_back("MCP server " + server.name + ": its tools' definitions pass " +
                           std::to_string(definitions_bytes_max) + " bytes; the rest are not offered");
        break;
      }
      out.push_back(std::move(definition));
    }
  }
  return out;
}

sandbox::tool_outcome session_pool::call(const config::agent_config& agent, const config::mcp_server& server,
                                         const std::string& root, const sandbox::tool_request& request,
                                         const std::string& tool) {
  sandbox::tool_outcome o;
  auto error_result = [&](const std::string& message) {
    o = sandbox::tool_outcome{};
    o.result = value{{"error", message}};
    o.is_error = true;
    return o;
  };
  if (!offered(server, tool)) return error_result("MCP server " + server.name + " offers no tool " + sandbox::escape_controls(tool.substr(0, 80)) + " to this agent");
  if (!request.arguments.is_object()) return error_result(request.tool + ": arguments must be a map");
  const std::string arguments_text = request.arguments.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  const bool asks = approval_of(server, tool) != "never";
  if (asks && !request.approved) {
    o.kind = sandbox::outcome_kind::needs_approval;
    o.form = value{{"tool", request.tool},
                   {"reason", "MCP server " + server.name + " asks a person before each call of " + tool},
                   {"context", {{"server", server.name}, {"mcp_tool", tool}, {"arguments", request.arguments},
                                {"arguments_json", arguments_text}}}};
    return o;
  }
  if (asks) {
    const value& form = request.approved_form;
    if (!form.is_object() || !form.contains("arguments_json") || form["arguments_json"] != arguments_text) {
      o.kind = sandbox::outcome_kind::refused;
      o.message = request.tool + ": the arguments approved are not the arguments of this call, so nothing was done";
      o.result = value{{"error", o.message}};
      return o;
    }
  }
  auto called = impl_->with_session(agent, server, root, [&](session& s) -> result<call_result> {
    // Arguments the tool's own schema refuses go back to the model, not to the server (a schema
    // keel cannot compile is left to the server to check).
    auto listed = s.tools(server.timeout_ms);
    if (!listed) return listed.error();
    auto known = std::find_if(listed->begin(), listed->end(), [&](const tool_info& t) { return t.name == tool; });
    if (known == listed->end())
      return make_error(errc::not_found, "MCP server " + server.name + " lists no tool " + sandbox::escape_controls(tool.substr(0, 80)));
    if (auto schema = schema::json_schema::compile(known->input_schema))
      if (auto problem = schema->problem(request.arguments, "arguments"); !problem.empty())
        return make_error(errc::invalid_argument, request.tool + ": " + problem);
    return s.call(tool, request.arguments, server.timeout_ms);
  });
  if (!called) return error_result(called.error().message);
  std::string text = content_text(called->content);
  sandbox::head_tail_buffer kept(static_cast<std::size_t>(server.result_chars_max));
  kept.append(text);
  value result{{"content", sandbox::sanitize_utf8(kept.text())}};
  if (kept.cut()) result["content_cut"] = kept.cut();
  if (!called->structured.is_null()) {
    auto structured = called->structured.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    if (structured.size() <= static_cast<std::size_t>(server.result_chars_max)) result["structured_content"] = called->structured;
  }
  o.result = std::move(result);
  o.is_error = called->is_error;
  return o;
}

} // namespace keel::mcp
