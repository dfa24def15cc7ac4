#include "runtime/command_template.hpp"
#include "runtime/config.hpp"
#include "tests/support/test_support.hpp"

#include <nlohmann/json.hpp>

using namespace keel;
using nlohmann::json;

namespace {

const std::string base = "[node]\nroles = [\"worker\"]\n[nats]\nservers = [\"nats://127.0.0.1:4222\"]\n[agents.ops]\n";

std::string refused(const std::string& text) {
  auto c = config::load_string(base + text, "node.toml");
  REQUIRE_FALSE(c.ok());
  CHECK(c.error().code == errc::config);
  return c.error().message;
}

std::vector<std::string> expand(const std::vector<std::string>& argv, const json& arguments) {
  auto out = config::expand_template(argv, arguments);
  REQUIRE(out.ok());
  return *out;
}

std::string expand_error(const std::vector<std::string>& argv, const json& arguments) {
  auto out = config::expand_template(argv, arguments);
  REQUIRE_FALSE(out.ok());
  return out.error().message;
}

} // namespace

TEST_CASE("command template: placeholders become whole arguments, items, text, or nothing", "[runtime][commands]") {
  CHECK(expand({"git", "log", "-n", "{count}", "{ref}"}, {{"count", 5}, {"ref", "main"}}) ==
        std::vector<std::string>{"git", "log", "-n", "5", "main"});
  // Absent or null: the element is left out, whole or with text around it.
  CHECK(expand({"grep", "{pattern}", "--max-count={max}", "{files}"}, {{"pattern", "x"}, {"max", nullptr}}) ==
        std::vector<std::string>{"grep", "x"});
  // An array: one element per item; inside text, a number or a boolean's text.
  CHECK(expand({"tar", "-cf", "out.tar", "--", "{files}"}, {{"files", {"a b", "c;d", "-e"}}}) ==
        std::vector<std::string>{"tar", "-cf", "out.tar", "--", "a b", "c;d", "-e"});
  CHECK(expand({"t", "--depth={d}", "--x={f}.{b}"}, {{"d", 2.0}, {"f", "v"}, {"b", true}}) ==
        std::vector<std::string>{"t", "--depth=2", "--x=v.true"});
  // Shell syntax is only text: no shell reads it.
  CHECK(expand({"echo", "{s}"}, {{"s", "$(id); rm -rf / `x` > /etc/passwd"}}) ==
        std::vector<std::string>{"echo", "$(id); rm -rf / `x` > /etc/passwd"});
  // Literal braces.
  CHECK(expand({"jq", "{{.a}}", "{f}"}, {{"f", "x.json"}}) == std::vector<std::string>{"jq", "{.a}", "x.json"});
}

TEST_CASE("command template: a value read as an option, a NUL, an object or a huge argv is refused", "[runtime][commands]") {
  CHECK(expand_error({"git", "log", "{ref}"}, {{"ref", "--output=/etc/passwd"}}).find("begins with '-'") != std::string::npos);
  CHECK(expand_error({"git", "log", "{refs}"}, {{"refs", {"main", "-p"}}}).find("begins with '-'") != std::string::npos);
  CHECK(expand_error({"t", "{a}x"}, {{"a", "-rf"}}).find("begins with '-'") != std::string::npos);
  CHECK(expand_error({"t", "{n}"}, {{"n", -5}}).find("begins with '-'") != std::string::npos);
  CHECK(expand({"rm", "--", "{path}"}, {{"path", "-rf"}}) == std::vector<std::string>{"rm", "--", "-rf"});
  CHECK(expand({"t", "--name={n}"}, {{"n", "-x"}}) == std::vector<std::string>{"t", "--name=-x"});
  CHECK(expand_error({"echo", "{s}"}, {{"s", std::string("a\0b", 3)}}).find("NUL") != std::string::npos);
  CHECK(expand_error({"echo", "{s}"}, {{"s", {{"k", 1}}}}).find("no text") != std::string::npos);
  CHECK(expand_error({"echo", "x{s}"}, {{"s", {1, 2}}}).find("no text") != std::string::npos);
  CHECK(expand_error({"echo", "{s}"}, {{"s", std::string(200'000, 'a')}}).find("more than") != std::string::npos);
  CHECK(expand_error({"echo", "{s}"}, {{"s", json(std::vector<int>(5000, 1))}}).find("more than") != std::string::npos);
}

TEST_CASE("command template: a bad template is found when the config loads", "[runtime][commands]") {
  auto placeholders = [](std::vector<std::string> argv) { return config::template_placeholders(argv); };
  CHECK(*placeholders({"git", "log", "{a}", "x{b}y"}) == std::vector<std::string>{"a", "b"});
  CHECK(placeholders({"{prog}", "x"}).error().message.find("argv[0] is the program") != std::string::npos);
  CHECK(placeholders({"git", "{a"}).error().message.find("unclosed") != std::string::npos);
  CHECK(placeholders({"git", "a}"}).error().message.find("lone '}'") != std::string::npos);
  CHECK(placeholders({"git", "{a b}"}).error().message.find("not a name") != std::string::npos);
  CHECK(placeholders({}).error().message.find("empty") != std::string::npos);
}

TEST_CASE("config: command tools load with their schema, and every mistake names its key", "[runtime][config][commands]") {
  auto ok = config::load_string(base + R"(
[agents.ops.commands.git_log]
description = "Recent commits"
argv = ["git", "log", "--oneline", "-n", "{count}", "--", "{path}"]
approval = "never"
timeout_ms = 5000
cwd = "repo"
arguments = { type = "object", properties = { count = { type = "integer", minimum = 1, maximum = 100 }, path = { type = "string" } }, required = ["count"] }
[agents.ops.commands.hello]
argv = ["echo", "hello"]
)", "node.toml");
  REQUIRE(ok.ok());
  REQUIRE(ok->agents[0].commands.size() == 2);
  const auto& git = ok->agents[0].commands[0];
  CHECK(git.name == "git_log");
  CHECK(git.approval == "never");
  CHECK(git.timeout_ms == 5000);
  CHECK(json::parse(git.arguments_schema)["required"] == json{"count"});
  CHECK(ok->agents[0].commands[1].approval == "always");  // a person approves unless the config says not
  CHECK(json::parse(ok->agents[0].commands[1].arguments_schema)["additionalProperties"] == false);

  CHECK(refused("[agents.ops.commands.x]\nargv = [\"echo\", \"{a}\"]\n").find("placeholder {a} is not a property") != std::string::npos);
  CHECK(refused("[agents.ops.commands.x]\ndescription = \"no argv\"\n").find("agents.ops.commands.x.argv") != std::string::npos);
  CHECK(refused("[agents.ops.commands.x]\nargv = [\"echo\"]\nshell = true\n").find("agents.ops.commands.x.shell: unknown key") != std::string::npos);
  CHECK(refused("[agents.ops.commands.x]\nargv = [\"echo\"]\napproval = \"ask\"\n").find("\"always\"") != std::string::npos);
  CHECK(refused("[agents.ops.commands.x]\nargv = [\"echo\"]\narguments = { type = \"array\" }\n").find("type \"object\"") != std::string::npos);
  CHECK(refused("[agents.ops.commands.x]\nargv = [\"echo\"]\narguments = '{not json'\n").find("JSON Schema") != std::string::npos);
  CHECK(refused("[agents.ops.commands.x]\nargv = [\"echo\"]\narguments = { type = \"object\", properties = { a = { type = \"strin\" } } }\n")
          .find("agents.ops.commands.x.arguments") != std::string::npos);
  CHECK(refused("[agents.ops.commands.x]\nargv = [\"echo\"]\ncwd = \"../up\"\n").find("inside the workspace") != std::string::npos);
  CHECK(refused("[agents.ops.commands.\"a b\"]\nargv = [\"echo\"]\n").find("1 to 64 characters") != std::string::npos);
  CHECK(refused("[agents.ops.commands.x]\nargv = [\"echo\"]\ntimeout_ms = 0\n").find("timeout_ms") != std::string::npos);
  CHECK(refused("tools = [\"read\"]\n[agents.ops.commands.read]\nargv = [\"cat\"]\n").find("has the name of a tool") != std::string::npos);
  CHECK(refused("[agents.ops.commands.a__b]\nargv = [\"cat\"]\n").find("kept for MCP") != std::string::npos);
  CHECK(refused("commands = 3\n").find("expected a table of named tools") != std::string::npos);
  // The line of the mistake is named.
  CHECK(refused("\n\n[agents.ops.commands.x]\nargv = [\"{p}\"]\n").find("node.toml:") != std::string::npos);
}

TEST_CASE("config: MCP servers are stdio or HTTP, each with an approval policy", "[runtime][config][mcp]") {
  auto ok = config::load_string(base + R"(
[agents.ops.mcp.files]
command = ["node", "server.js", "."]
env = { DEBUG = "0" }
tool_approval = { read_file = "never" }
tools = ["read_file", "write_file"]
[agents.ops.mcp.remote]
url = "http://127.0.0.1:9/mcp"
token_file = "token"
approval = "never"
)", "/etc/keel/node.toml");
  REQUIRE(ok.ok());
  const auto& mcp = ok->agents[0].mcp;
  REQUIRE(mcp.size() == 2);
  CHECK(mcp[0].approval == "always");
  CHECK(mcp[0].tool_approval.at("read_file") == "never");
  CHECK(mcp[0].env.at("DEBUG") == "0");
  CHECK(mcp[0].timeout_ms == 60'000);
  CHECK(mcp[1].token_file.front() == '/');  // made absolute when read
  CHECK(mcp[1].token_file.size() > 6);

  CHECK(refused("[agents.ops.mcp.x]\ncommand = [\"a\"]\nurl = \"http://h/\"\n").find("either command") != std::string::npos);
  CHECK(refused("[agents.ops.mcp.x]\napproval = \"never\"\n").find("either command") != std::string::npos);
  CHECK(refused("[agents.ops.mcp.x]\nurl = \"ftp://h/\"\n").find("http://") != std::string::npos);
  CHECK(refused("[agents.ops.mcp.x]\nurl = \"http://h/\"\nenv = { A = \"b\" }\n").find("stdio") != std::string::npos);
  CHECK(refused("[agents.ops.mcp.x]\ncommand = [\"a\"]\ntoken_file = \"t\"\n").find("url") != std::string::npos);
  CHECK(refused("[agents.ops.mcp.x]\ncommand = [\"a\"]\ntool_approval = { t = \"maybe\" }\n").find("\"always\"") != std::string::npos);
  CHECK(refused("[agents.ops.mcp.a__b]\ncommand = [\"a\"]\n").find("without \"__\"") != std::string::npos);
  CHECK(refused("[agents.ops.mcp.x]\ncommand = [\"a\"]\nport = 3\n").find("unknown key") != std::string::npos);
  CHECK(refused("[agents.ops.mcp.x]\ncommand = [\"\"]\n").find("program is empty") != std::string::npos);
}
