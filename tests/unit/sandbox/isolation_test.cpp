// What a command cannot do: escape its workspace under bubblewrap, reach the network, outgrow
// its limits, or outlive its call. Each case says what the command got.
#include "sandbox/tools.hpp"
#include "tests/support/test_support.hpp"

#include <arpa/inet.h>
#include <csignal>
#include <filesystem>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

using namespace keel;
using namespace keel::sandbox;
using keel::testing::read_file;
using keel::testing::temp_dir;
using keel::testing::write_file;
using wire::value;

namespace {

struct sandboxed {
  temp_dir dir;
  workspace ws;
  policy p;
  explicit sandboxed(environment_kind kind) : ws(*workspace::open(dir.file("ws"))) {
    keel::testing::give_to_sandbox(ws.root());  // as keel gives a workspace it made
    p.exec = exec_security::allow_always;
    p.file_approval = false;
    p.env.kind = kind;
  }
  tool_outcome exec(const std::string& command, std::int64_t timeout_ms = 30'000,
                    const std::string& task_id = "t") {
    tool_request request;
    request.tool = "exec";
    request.arguments = {{"command", command}, {"timeout_ms", timeout_ms}};
    request.task_id = task_id;
    return run_tool(ws, p, request);
  }
};

// Processes whose environment carries this task id (every process a command starts has it).
int processes_of_task(const std::string& task_id) {
  int count = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    std::string environ = read_file(entry.path().string() + "/environ");
    if (environ.find("KEEL_TASK_ID=" + task_id + std::string(1, '\0')) != std::string::npos) ++count;
  }
  return count;
}

std::string out(const tool_outcome& o) { return o.result.value("stdout", std::string{}) + o.result.value("stderr", std::string{}); }

} // namespace

TEST_CASE("bwrap: a command cannot read a file outside the workspace", "[sandbox][bwrap]") {
  REQUIRE(bwrap_available(*command_identity(sandbox_account)).ok());
  sandboxed s(environment_kind::bwrap);
  write_file(s.dir.file("secret.txt"), "the secret");
  auto o = s.exec("cat " + s.dir.file("secret.txt"));
  INFO(out(o));
  CHECK(o.result["exit_code"] != 0);
  CHECK(out(o).find("the secret") == std::string::npos);
  CHECK(out(o).find("No such file") != std::string::npos);
  // The same command on the host reads it: the sandbox is what stops it.
  sandboxed host(environment_kind::local);
  write_file(host.dir.file("secret.txt"), "the secret");
  CHECK(host.exec("cat " + host.dir.file("secret.txt")).result["stdout"] == "the secret");
}

TEST_CASE("bwrap: a command cannot write outside the workspace", "[sandbox][bwrap]") {
  sandboxed s(environment_kind::bwrap);
  auto o = s.exec("echo x > " + s.dir.file("planted.txt") + "; echo y > /usr/planted.txt; echo z > inside.txt");
  INFO(out(o));
  CHECK_FALSE(std::filesystem::exists(s.dir.file("planted.txt")));
  CHECK_FALSE(std::filesystem::exists("/usr/planted.txt"));
  CHECK(out(o).find("Read-only file system") != std::string::npos);
  CHECK(read_file(s.ws.root() + "/inside.txt") == "z\n");
  // /tmp inside is the sandbox's own.
  s.exec("echo t > /tmp/keel-sandbox-probe");
  CHECK_FALSE(std::filesystem::exists("/tmp/keel-sandbox-probe"));
}

TEST_CASE("bwrap: no network unless configured", "[sandbox][bwrap]") {
  keel::testing::loopback_listener l;
  std::string connect = "bash -c 'echo hi > /dev/tcp/127.0.0.1/" + std::to_string(l.port) + "' && echo connected";
  sandboxed s(environment_kind::bwrap);
  auto closed = s.exec(connect);
  INFO(out(closed));
  CHECK(closed.result["stdout"] == "");
  CHECK(closed.result["exit_code"] != 0);
  s.p.env.network = true;
  auto open = s.exec(connect);
  INFO(out(open));
  CHECK(open.result["stdout"] == "connected\n");
}

TEST_CASE("bwrap: commands see their own pid namespace and die with their parent", "[sandbox][bwrap]") {
  sandboxed s(environment_kind::bwrap);
  auto o = s.exec("ls /proc | grep -c '^[0-9]'");
  INFO(out(o));
  CHECK(std::stoi(o.result["stdout"].get<std::string>()) < 10);
  // A background child inside does not hold the call open, and is gone afterwards.
  auto started = steady_ms();
  auto bg = s.exec("sleep 60 & echo left");
  CHECK(steady_ms() - started < 10'000);
  CHECK(bg.result["stdout"] == "left\n");
}

TEST_CASE("limits: a fork bomb is contained and leaves nothing behind", "[sandbox]") {
  for (auto kind : {environment_kind::local, environment_kind::bwrap}) {
    sandboxed s(kind);
    s.p.env.limits.processes_max = 64;
    std::string task = "bomb-" + std::to_string(::getpid()) + "-" + std::to_string(static_cast<int>(kind));
    auto started = steady_ms();
    auto o = s.exec("bomb() { bomb | bomb & }; bomb; sleep 2; echo survived", 5000, task);
    INFO("environment " << (kind == environment_kind::bwrap ? "bwrap" : "local") << ": " << out(o).substr(0, 300));
    CHECK(steady_ms() - started < 20'000);
    // The pids limit refuses the forks (where no pids cgroup is writable, only the timeout
    // and the group kill stop it); either way nothing of it outlives the call.
    if (o.result.value("timed_out", false)) CHECK(o.result["exit_code"] == 137);
    else CHECK(out(o).find("Cannot fork") != std::string::npos);
    CHECK(processes_of_task(task) == 0);
  }
}

TEST_CASE("limits: output of gigabytes is cut, and the call still ends", "[sandbox]") {
  sandboxed s(environment_kind::local);
  s.p.output_chars_max = 10'000;
  auto o = s.exec("head -c 1000000000 /dev/zero | tr '\\000' a; echo; echo end");
  auto text = o.result["stdout"].get<std::string>();
  CHECK(text.size() < 10'100);
  CHECK(text.substr(text.size() - 4) == "end\n");
  CHECK(o.result["stdout_cut"].get<std::size_t>() > 999'000'000);
}

TEST_CASE("limits: file size, CPU time and memory", "[sandbox]") {
  sandboxed s(environment_kind::local);
  s.p.env.limits.file_bytes_max = 1 << 20;
  auto big = s.exec("head -c 5000000 /dev/zero > big.bin");
  CHECK(big.result["exit_code"] == 128 + SIGXFSZ);
  CHECK(std::filesystem::file_size(s.ws.root() + "/big.bin") <= (1u << 20));
  s.p.env.limits.cpu_seconds_max = 1;
  auto spin = s.exec("while :; do :; done", 20'000);
  CHECK(spin.result["exit_code"] == 128 + SIGXCPU);
  CHECK(spin.result["duration_ms"].get<std::int64_t>() < 15'000);
  s.p.env.limits.memory_bytes_max = 64 << 20;
  auto hog = s.exec("awk 'BEGIN { s = \"x\"; while (1) s = s s }'", 20'000);
  INFO(out(hog));
  CHECK(hog.result["exit_code"] != 0);
}

TEST_CASE("exec under bwrap refuses a directory outside the workspace", "[sandbox][bwrap]") {
  sandboxed s(environment_kind::bwrap);
  tool_request request;
  request.tool = "exec";
  request.arguments = {{"command", "ls"}, {"cwd", "/"}};
  request.approved = true;
  auto o = run_tool(s.ws, s.p, request);
  CHECK(o.kind == outcome_kind::refused);
  CHECK(o.message.find("runs inside its workspace") != std::string::npos);
}
