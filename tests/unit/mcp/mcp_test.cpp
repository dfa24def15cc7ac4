// MCP servers as tool sources, against real servers: the reference filesystem and everything
// servers from npm (stdio in the sandbox, and streamable HTTP), and a test server that misbehaves
// on request (tests/mcp/test_server.py). Each case says what a call got.
#include "mcp/session_pool.hpp"
#include "runtime/config.hpp"
#include "sandbox/identity.hpp"
#include "tests/support/test_support.hpp"

#include <filesystem>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

using namespace keel;
using keel::testing::read_file;
using keel::testing::temp_dir;
using keel::testing::write_file;
using wire::value;

namespace {

const std::string servers = KEEL_SOURCE_DIR "/tests/mcp/node_modules/@modelcontextprotocol";
const std::string test_server = KEEL_SOURCE_DIR "/tests/mcp/test_server.py";

config::mcp_server stdio(std::string name, std::vector<std::string> command, std::string approval = "never") {
  config::mcp_server s;
  s.name = std::move(name);
  s.command = std::move(command);
  s.approval = std::move(approval);
  s.timeout_ms = 20'000;
  s.startup_timeout_ms = 20'000;
  return s;
}

struct fixture {
  temp_dir dir;
  config::agent_config agent;
  mcp::session_pool pool;
  explicit fixture(std::size_t sessions_max = 64) : pool(sessions_max) {
    agent.id = "ops";
    agent.sandbox_env = "local";
    agent.run_as = "keel-sandbox";
    agent.cpu_seconds_max = 300;
    agent.memory_bytes_max = 8LL << 30;
    agent.processes_max = 512;
    agent.file_bytes_max = 1LL << 30;
    agent.written_bytes_max = 4LL << 30;
    agent.exec_timeout_ms = 300'000;
    agent.output_chars_max = 100'000;
  }
  std::string workspace(const std::string& name = "ws") {
    auto path = dir.file(name);
    std::filesystem::create_directories(path);
    keel::testing::give_to_sandbox(path);
    return path;
  }
  std::vector<std::string> names(const std::string& root) {
    std::vector<std::string> problems;
    std::vector<std::string> out;
    for (const auto& d : pool.model_tools(agent, root, problems)) out.push_back(d["name"].get<std::string>());
    for (const auto& p : problems) UNSCOPED_INFO("problem: " << p);
    return out;
  }
  sandbox::tool_outcome call(const std::string& root, const std::string& name, value arguments, bool approved = false,
                             value form = {}) {
    std::string tool;
    const auto* server = mcp::session_pool::server_of(agent, name, tool);  // the tests name only tools of theirs
    sandbox::tool_request r;
    r.tool = name;
    r.arguments = std::move(arguments);
    r.approved = approved;
    r.approved_form = std::move(form);
    return pool.call(agent, *server, root, r, tool);
  }
};

bool has(const std::vector<std::string>& names, const std::string& name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

std::string text_of(const sandbox::tool_outcome& o) {
  REQUIRE(o.kind == sandbox::outcome_kind::done);
  if (o.result.contains("error") && o.result["error"].is_string()) return o.result["error"].get<std::string>();
  if (!o.result.contains("content") || !o.result["content"].is_string()) return o.result.dump();
  return o.result["content"].get<std::string>();
}

} // namespace

TEST_CASE("mcp: the reference filesystem server runs in the sandbox, confined to the workspace", "[mcp]") {
  fixture f;
  f.agent.mcp.push_back(stdio("files", {"node", servers + "/server-filesystem/dist/index.js", "."}));
  auto ws = f.workspace();
  auto tools = f.names(ws);
  CHECK(has(tools, "files__read_text_file"));
  CHECK(has(tools, "files__write_file"));
  CHECK(has(tools, "files__list_directory"));
  auto wrote = f.call(ws, "files__write_file", {{"path", "notes.txt"}, {"content", "from the model"}});
  CHECK_FALSE(wrote.is_error);
  CHECK(read_file(ws + "/notes.txt") == "from the model");
  struct stat st{};
  REQUIRE(::stat((ws + "/notes.txt").c_str(), &st) == 0);
  CHECK(st.st_uid == sandbox::command_identity("keel-sandbox")->uid);  // written as the sandbox's account
  auto read = f.call(ws, "files__read_text_file", {{"path", "notes.txt"}});
  CHECK(text_of(read) == "from the model");
  // Outside the directories it serves: the server refuses, and the model reads why.
  auto outside = f.call(ws, "files__read_text_file", {{"path", "/etc/passwd"}});
  CHECK(outside.is_error);
  CHECK(text_of(outside).find("denied") != std::string::npos);
  CHECK(f.pool.running() == 1);  // one server, reused by every call
}

TEST_CASE("mcp: a stdio server holds what exec's commands hold, and no more", "[mcp]") {
  fixture f;
  f.agent.mcp.push_back(stdio("probe", {"python3", test_server, "ok"}));
  auto ws = f.workspace();
  keel::testing::loopback_listener listener;
  auto o = f.call(ws, "probe__probe", {{"outside", "/var/tmp/keel-mcp-probe-" + std::to_string(::getpid())}, {"port", listener.port}});
  REQUIRE(o.kind == sandbox::outcome_kind::done);
  const value& r = o.result["structured_content"];
  INFO(r.dump(2));
  CHECK(r["uid"] == sandbox::command_identity("keel-sandbox")->uid);
  CHECK(r["cwd"] == ws);
  CHECK(r["write_workspace"] == "allowed");
  CHECK(r["write_outside"].get<std::string>().rfind("refused", 0) == 0);
  CHECK(r["read_shadow"].get<std::string>().rfind("refused", 0) == 0);
  CHECK(r["connect_loopback"].get<std::string>().rfind("refused", 0) == 0);  // no network of the host's
  // Descriptors: its three pipes, and what python opens itself (no socket, no file of the node's).
  for (const auto& [fd, target] : r["fds"].items()) {
    auto t = target.get<std::string>();
    INFO("fd " << fd << " -> " << t);
    CHECK((t.rfind("pipe:", 0) == 0 || t.rfind("/proc/", 0) == 0 || t == "/dev/null"));
  }
  // Its environment is built, not the node's.
  for (const auto& name : r["env"]) CHECK(name.get<std::string>().find("NATS") == std::string::npos);
  CHECK(r["pid"].get<int>() < 10);  // its own pid namespace (as root)
  // No capability in any set, no new privileges, a seccomp filter.
  CHECK(r["CapEff"] == "0000000000000000");
  CHECK(r["CapPrm"] == "0000000000000000");
  CHECK(r["CapBnd"] == "0000000000000000");
  CHECK(r["NoNewPrivs"] == "1");
  CHECK(r["Seccomp"] == "2");
  // Sockets by family: Unix only (the control), no network, netlink or packet socket.
  CHECK(r["socket_unix"] == "allowed");
  for (const char* family : {"socket_inet", "socket_inet6", "socket_netlink", "socket_packet"})
    CHECK(r[family].get<std::string>().rfind("refused", 0) == 0);
  CHECK(r["unshare_user"].get<std::string>().rfind("refused", 0) == 0);
  // The processes it sees: its own namespace's only (the node and the worker are not there).
  for (const auto& pid : r["other_pids"]) CHECK(pid.get<int>() < 10);
  CHECK_FALSE(std::filesystem::exists("/var/tmp/keel-mcp-probe-" + std::to_string(::getpid())));
}

TEST_CASE("mcp: approval 'always' (the default) shows the call: an approval of other arguments runs nothing", "[mcp]") {
  fixture f;
  f.agent.mcp.push_back(stdio("t", {"python3", test_server, "ok"}, "always"));
  f.agent.mcp.back().tool_approval["probe"] = "never";
  auto ws = f.workspace();
  auto asked = f.call(ws, "t__echo", {{"text", "hello"}});
  REQUIRE(asked.kind == sandbox::outcome_kind::needs_approval);
  CHECK(asked.form["tool"] == "t__echo");
  CHECK(asked.form["context"]["server"] == "t");
  CHECK(asked.form["context"]["arguments"]["text"] == "hello");
  auto other = f.call(ws, "t__echo", {{"text", "goodbye"}}, true, asked.form["context"]);
  CHECK(other.kind == sandbox::outcome_kind::refused);
  auto none = f.call(ws, "t__echo", {{"text", "hello"}}, true, value::object());
  CHECK(none.kind == sandbox::outcome_kind::refused);
  CHECK(text_of(f.call(ws, "t__echo", {{"text", "hello"}}, true, asked.form["context"])) == "hello");
  // A tool the config lets run without asking.
  CHECK(f.call(ws, "t__probe", value::object()).kind == sandbox::outcome_kind::done);
}

TEST_CASE("mcp: a server that writes garbage, hangs, dies, floods or answers another id fails the call, not the worker: the next call starts it again", "[mcp]") {
  for (const char* mode : {"garbage", "hang", "die", "huge", "wrong_id", "float_id", "deep"}) {
    INFO(mode);
    fixture f;
    f.agent.mcp.push_back(stdio("bad", {"python3", test_server, mode}));
    f.agent.mcp.back().timeout_ms = 1'500;
    auto ws = f.workspace();
    auto started = steady_ms();
    auto o = f.call(ws, "bad__echo", {{"text", "x"}});
    CHECK(steady_ms() - started < 15'000);
    REQUIRE(o.kind == sandbox::outcome_kind::done);
    CHECK(o.is_error);
    auto message = o.result["error"].get<std::string>();
    CHECK(message.find("MCP server bad") != std::string::npos);
    if (std::string(mode) == "garbage") CHECK(message.find("not JSON") != std::string::npos);
    if (std::string(mode) == "hang") CHECK(message.find("in time") != std::string::npos);
    if (std::string(mode) == "huge") CHECK(message.find("bytes") != std::string::npos);
    if (std::string(mode) == "deep") CHECK(message.find("not JSON") != std::string::npos);  // nested past 48: never parsed
    // The session is gone; a new server answers tools/list.
    auto tools = f.names(ws);
    CHECK(has(tools, "bad__echo"));
  }
}

TEST_CASE("mcp: requests the server makes on the way get answers: bad names, old versions and no tools are told", "[mcp]") {
  fixture f;
  f.agent.mcp.push_back(stdio("asks", {"python3", test_server, "asks"}));
  auto ws = f.workspace();
  // sampling/createMessage: method not found (-32601); ping: answered.
  CHECK(text_of(f.call(ws, "asks__echo", {{"text", "x"}})) == "[-32601, \"ok\"]");
  // "bad name!" cannot be called by a model: it is left out, and the problem says so.
  std::vector<std::string> problems;
  auto tools = f.pool.model_tools(f.agent, ws, problems);
  CHECK(tools.size() == 2);
  REQUIRE(problems.size() == 1);
  CHECK(problems[0].find("bad name!") != std::string::npos);

  fixture g;
  g.agent.mcp.push_back(stdio("old", {"python3", test_server, "old_version"}));
  g.agent.mcp.push_back(stdio("none", {"python3", test_server, "no_tools"}));
  g.agent.mcp.push_back(stdio("missing", {"/nonexistent/server"}));
  g.agent.mcp.push_back(stdio("slow", {"python3", test_server, "slow_start"}));
  g.agent.mcp.back().startup_timeout_ms = 500;
  auto gws = g.workspace();
  problems.clear();
  CHECK(g.pool.model_tools(g.agent, gws, problems).empty());
  REQUIRE(problems.size() == 4);
  CHECK(problems[0].find("1999-01-01") != std::string::npos);
  CHECK(problems[1].find("offers no tools") != std::string::npos);
  CHECK(problems[2].find("MCP server missing") != std::string::npos);
  CHECK(problems[3].find("in time") != std::string::npos);
}

TEST_CASE("mcp: an isError that is not a boolean is an error, and labels of content show no control character", "[mcp]") {
  fixture f;
  f.agent.mcp.push_back(stdio("odd", {"python3", test_server, "error_text"}));
  auto ws = f.workspace();
  auto o = f.call(ws, "odd__echo", {{"text", "x"}});
  CHECK(o.is_error);
  CHECK(text_of(o) == "odd");
}

TEST_CASE("mcp: arguments the tool's schema refuses go back to the model: a tool not offered is refused", "[mcp]") {
  fixture f;
  f.agent.mcp.push_back(stdio("t", {"python3", test_server, "ok"}));
  f.agent.mcp.back().tools = {"echo"};
  auto ws = f.workspace();
  auto tools = f.names(ws);
  CHECK(tools == std::vector<std::string>{"t__echo"});
  auto bad = f.call(ws, "t__echo", {{"text", 5}});
  CHECK(bad.is_error);
  CHECK(text_of(bad).find("arguments.text") != std::string::npos);
  auto hidden = f.call(ws, "t__probe", value::object());
  CHECK(hidden.is_error);
  CHECK(text_of(hidden).find("offers no tool probe") != std::string::npos);
}

TEST_CASE("mcp: one server per workspace, 100 workspaces through a pool of 8, 20 calls at once on one", "[mcp]") {
  fixture f(8);
  f.agent.mcp.push_back(stdio("t", {"python3", test_server, "ok"}));
  std::vector<std::thread> threads;
  std::vector<value> results(20);
  auto ws = f.workspace();
  for (int i = 0; i < 20; ++i)
    threads.emplace_back([&, i] { results[i] = f.call(ws, "t__echo", {{"text", "call " + std::to_string(i)}}).result; });
  for (auto& t : threads) t.join();
  for (int i = 0; i < 20; ++i) CHECK(results[i] == value{{"content", "call " + std::to_string(i)}});
  int across = 0;
  for (int i = 0; i < 100; ++i) {
    auto w = f.workspace("ws" + std::to_string(i));
    auto o = f.call(w, "t__echo", {{"text", "w"}});
    across += o.kind == sandbox::outcome_kind::done && !o.is_error;
    CHECK(f.pool.running() <= 8);
  }
  CHECK(across == 100);
}

TEST_CASE("mcp: the reference everything server over streamable HTTP and over stdio", "[mcp]") {
  int port;
  {
    keel::testing::loopback_listener probe;
    port = probe.port;
  }
  temp_dir logs;
  auto server = keel::testing::start_command({"node", servers + "/server-everything/dist/index.js", "streamableHttp"}, logs,
                                             "everything", {"PORT=" + std::to_string(port)});
  fixture f;
  config::mcp_server http;
  http.name = "every";
  http.url = "http://127.0.0.1:" + std::to_string(port) + "/mcp";
  http.approval = "never";
  f.agent.mcp.push_back(http);
  auto ws = f.workspace();
  std::vector<std::string> tools;
  REQUIRE_EVENTUALLY(20'000, (tools = f.names(ws), has(tools, "every__echo")));
  CHECK(text_of(f.call(ws, "every__echo", {{"message", "over HTTP"}})).find("over HTTP") != std::string::npos);
  auto sum = f.call(ws, "every__get-sum", {{"a", 2}, {"b", 3}});
  CHECK(text_of(sum).find("5") != std::string::npos);
  auto image = f.call(ws, "every__get-tiny-image", value::object());
  CHECK(text_of(image).find("[image image/png") != std::string::npos);

  fixture s;
  s.agent.mcp.push_back(stdio("every", {"node", servers + "/server-everything/dist/index.js", "stdio"}));
  auto sws = s.workspace();
  CHECK(text_of(s.call(sws, "every__echo", {{"message", "over stdio"}})).find("over stdio") != std::string::npos);
}
