// `keel tool` through the built binary: the sandbox as a person can try it.
#include "tests/support/test_support.hpp"

#include <nlohmann/json.hpp>

using namespace keel;
using namespace keel::testing;
using nlohmann::json;

namespace {
command_output tool(const temp_dir& dir, std::vector<std::string> args) {
  args.insert(args.begin(), {KEEL_BINARY, "tool"});
  args.insert(args.end(), {"--workspace", dir.file("ws")});
  return run_command(args);
}
} // namespace

TEST_CASE("keel tool: prints the approval form a call would wait on, or its result", "[e2e]") {
  temp_dir dir;
  auto asked = tool(dir, {"write", "path=a.txt", "content=hello"});
  CHECK(asked.exit_code == 3);
  auto form = json::parse(asked.out);
  CHECK(form["status"] == "needs_approval");
  CHECK(form["form"]["context"]["content"] == "hello");
  CHECK_FALSE(std::filesystem::exists(dir.file("ws/a.txt")));

  auto written = tool(dir, {"write", "path=a.txt", "content=hello", "--approve"});
  CHECK(written.exit_code == 0);
  CHECK(read_file(dir.file("ws/a.txt")) == "hello");

  auto read = tool(dir, {"read", R"({"path": "a.txt", "limit": 1})"});
  CHECK(read.exit_code == 0);
  CHECK(json::parse(read.out)["result"]["content"] == "     1\thello\n");

  auto allowed = tool(dir, {"exec", "command=echo hi", "--exec-security", "allowlist", "--allow", "echo *"});
  CHECK(json::parse(allowed.out)["result"]["stdout"] == "hi\n");
  auto failing = tool(dir, {"exec", "command=exit 4", "--exec-security", "allow-always"});
  CHECK(failing.exit_code == 1);
  CHECK(json::parse(failing.out)["result"]["exit_code"] == 4);
}

TEST_CASE("keel tool: refusals and bad usage", "[e2e]") {
  temp_dir dir;
  auto refused = tool(dir, {"read", "path=../../etc/passwd", "--path-restriction", "deny"});
  CHECK(refused.exit_code == 4);
  CHECK(json::parse(refused.out)["message"].get<std::string>().find("outside the workspace") != std::string::npos);
  auto bad = tool(dir, {"read", "no-equals-sign"});
  CHECK(bad.exit_code == 2);
  CHECK(bad.err == "keel tool: arguments are key=value or a JSON map, got 'no-equals-sign'\n");
  CHECK(tool(dir, {"teleport"}).exit_code != 0);
  auto no_agent = tool(dir, {"read", "path=x", "--agent", "coder"});
  CHECK(no_agent.err == "keel tool: --agent needs --config\n");
  auto with_agent = tool(dir, {"exec", "command=true", "--config", KEEL_SOURCE_DIR "/configs/coder.toml",
                               "--agent", "coder"});
  CHECK(with_agent.exit_code == 3);  // the guide's agent asks before every command
}
