// Command tools ([agents.<id>.commands.<name>]): the model fills a template's placeholders; no
// shell reads the result, the arguments are checked against the schema, a person approves the
// exact argv, and the program runs confined exactly as exec runs. Each case says what a call got.
#include "runtime/config.hpp"
#include "sandbox/tools.hpp"
#include "tests/support/test_support.hpp"

#include <filesystem>
#include <sys/stat.h>
#include <unistd.h>

using namespace keel;
using namespace keel::sandbox;
using keel::testing::read_file;
using keel::testing::temp_dir;
using keel::testing::write_file;
using wire::value;

namespace {

config::command_tool command(std::string name, std::vector<std::string> argv, value schema, std::string approval = "never") {
  config::command_tool c;
  c.name = std::move(name);
  c.argv = std::move(argv);
  c.arguments_schema = schema.dump();
  c.approval = std::move(approval);
  return c;
}

value text_argument(const char* name) {
  return {{"type", "object"}, {"properties", {{name, {{"type", "string"}, {"maxLength", 10000}}}}}, {"required", {name}},
          {"additionalProperties", false}};
}

struct fixture {
  temp_dir dir;
  workspace ws;
  policy p;
  explicit fixture(environment_kind kind = environment_kind::local) : ws(*workspace::open(dir.file("ws"))) {
    keel::testing::give_to_sandbox(ws.root());
    p.env.kind = kind;
    p.commands.push_back(command("echo_text", {"echo", "{text}"}, text_argument("text")));
    p.commands.push_back(command("sh_text", {"sh", "-c", "printf '%s' \"$1\" > out.txt; id -u", "sh", "{text}"},
                                 text_argument("text")));
    p.commands.push_back(command("cat_file", {"cat", "--", "{path}"}, text_argument("path")));
    p.commands.push_back(command("remove", {"rm", "-f", "--", "{path}"}, text_argument("path"), "always"));
    p.commands.push_back(command("wait", {"sleep", "{seconds}"},
                                 {{"type", "object"}, {"properties", {{"seconds", {{"type", "integer"}}}}}}));
    p.commands.back().timeout_ms = 300;
  }
  tool_outcome call(const std::string& tool, value arguments, bool approved = false, value form = {}) {
    tool_request request;
    request.tool = tool;
    request.arguments = std::move(arguments);
    request.approved = approved;
    request.approved_form = std::move(form);
    request.task_id = "r/1/1";
    return run_tool(ws, p, request);
  }
};

std::string error_of(const tool_outcome& o) {
  REQUIRE(o.kind == outcome_kind::done);
  REQUIRE(o.is_error);
  return o.result["error"].get<std::string>();
}

} // namespace

TEST_CASE("command tools: the model's text is one argument: no shell ever reads it", "[sandbox][commands]") {
  for (auto kind : {environment_kind::local, environment_kind::bwrap}) {
    INFO((kind == environment_kind::local ? "local" : "bwrap"));
    fixture f(kind);
    const std::string hostile = "$(touch pwned); `touch pwned2` ; touch pwned3 && echo * > /dev/null | cat";
    auto o = f.call("echo_text", {{"text", hostile}});
    REQUIRE(o.kind == outcome_kind::done);
    CHECK_FALSE(o.is_error);
    CHECK(o.result["stdout"] == hostile + "\n");
    // Passed as $1 to a script the config wrote: still text, never code.
    auto s = f.call("sh_text", {{"text", hostile}});
    CHECK(s.result["exit_code"] == 0);
    CHECK(read_file(f.ws.root() + "/out.txt") == hostile);
    for (const char* made : {"pwned", "pwned2", "pwned3"}) CHECK_FALSE(std::filesystem::exists(f.ws.root() + "/" + made));
    // It runs as the sandbox's account, as exec does, not as the worker.
    if (::geteuid() == 0) CHECK(s.result["stdout"] != "0\n");
  }
}

TEST_CASE("command tools: arguments that do not match the schema, or read as options, get an error and run nothing", "[sandbox][commands]") {
  fixture f;
  CHECK(error_of(f.call("echo_text", {{"text", 5}})).find("arguments.text") != std::string::npos);
  CHECK(error_of(f.call("echo_text", value::object())).find("text") != std::string::npos);
  CHECK(error_of(f.call("echo_text", {{"text", "x"}, {"extra", 1}})).find("extra") != std::string::npos);
  // "{text}" with no "--" before it: a value beginning with '-' would be an option of echo.
  CHECK(error_of(f.call("echo_text", {{"text", "-e \\x41"}})).find("begins with '-'") != std::string::npos);
  // After "--" it is a file name like any other.
  write_file(f.ws.root() + "/-rf", "dash file\n");
  auto dash = f.call("cat_file", {{"path", "-rf"}});
  CHECK(dash.result["stdout"] == "dash file\n");
  CHECK(error_of(f.call("echo_text", {{"text", std::string("a\0b", 3)}})).size() > 0);
}

TEST_CASE("command tools: the program is confined as exec is (no file outside the workspace)", "[sandbox][commands]") {
  for (auto kind : {environment_kind::local, environment_kind::bwrap}) {
    INFO((kind == environment_kind::local ? "local" : "bwrap"));
    fixture f(kind);
    temp_dir outside;
    write_file(outside.file("secret"), "the node's secret\n");
    ::chmod(outside.file("secret").c_str(), 0600);  // the node's own: the sandbox's account may not read it
    auto o = f.call("cat_file", {{"path", outside.file("secret")}});
    CHECK(o.result["exit_code"] != 0);
    CHECK(o.result["stdout"] == "");
    auto shadow = f.call("cat_file", {{"path", "/etc/shadow"}});
    CHECK(shadow.result["exit_code"] != 0);
  }
}

TEST_CASE("command tools: approval 'always' shows the exact argv: an approval of another argv runs nothing", "[sandbox][commands]") {
  fixture f;
  write_file(f.ws.root() + "/a b.txt", "x");
  auto asked = f.call("remove", {{"path", "a b.txt"}});
  REQUIRE(asked.kind == outcome_kind::needs_approval);
  CHECK(asked.form["tool"] == "remove");
  CHECK(asked.form["context"]["command"] == "rm -f -- 'a b.txt'");
  CHECK(asked.form["context"]["argv"] == value{"rm", "-f", "--", "a b.txt"});
  CHECK(std::filesystem::exists(f.ws.root() + "/a b.txt"));
  // Approved for another file: refused, nothing removed.
  auto other = f.call("remove", {{"path", "a b.txt"}}, true, {{"command", "rm -f -- other"}});
  CHECK(other.kind == outcome_kind::refused);
  CHECK(f.call("remove", {{"path", "a b.txt"}}, true, value::object()).kind == outcome_kind::refused);
  CHECK(std::filesystem::exists(f.ws.root() + "/a b.txt"));
  auto ran = f.call("remove", {{"path", "a b.txt"}}, true, asked.form["context"]);
  REQUIRE(ran.kind == outcome_kind::done);
  CHECK(ran.result["exit_code"] == 0);
  CHECK_FALSE(std::filesystem::exists(f.ws.root() + "/a b.txt"));
}

TEST_CASE("command tools: a program that outlives its timeout is killed: exit 137", "[sandbox][commands]") {
  fixture f;
  auto started = steady_ms();
  auto o = f.call("wait", {{"seconds", 30}});
  CHECK(steady_ms() - started < 10'000);
  CHECK(o.result["exit_code"] == 137);
  CHECK(o.result["timed_out"] == true);
  CHECK(o.is_error);
}

TEST_CASE("command tools: the model is told of each with its schema", "[sandbox][commands]") {
  fixture f;
  auto d = tool_definition(f.p.commands[0]);
  CHECK(d["name"] == "echo_text");
  CHECK(d["description"] == "Runs echo");
  CHECK(d["input_schema"]["required"] == value{"text"});
}
