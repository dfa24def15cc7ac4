#include "sandbox/matching.hpp"
#include "sandbox/text.hpp"
#include "sandbox/tools.hpp"
#include "tests/support/test_support.hpp"

#include <filesystem>

#include <sys/stat.h>

using namespace keel;
using namespace keel::sandbox;
using keel::testing::read_file;
using keel::testing::temp_dir;
using keel::testing::write_file;
using wire::value;

namespace {

struct fixture {
  temp_dir dir;
  workspace ws;
  policy p;
  fixture() : ws(*workspace::open(dir.file("ws"))) {
    keel::testing::give_to_sandbox(ws.root());  // as keel gives a workspace it made
    p.exec = exec_security::allow_always;
    p.file_approval = false;
  }
  tool_outcome call(const std::string& tool, value arguments, bool approved = false) {
    tool_request request;
    request.tool = tool;
    request.arguments = std::move(arguments);
    request.approved = approved;
    request.task_id = "r/1/1";
    return run_tool(ws, p, request);
  }
  std::string in_ws(const std::string& name) const { return ws.root() + "/" + name; }
};

std::string error_of(const tool_outcome& o) {
  REQUIRE(o.kind == outcome_kind::done);
  REQUIRE(o.is_error);
  return o.result["error"].get<std::string>();
}

} // namespace

TEST_CASE("sandbox exec: runs in the workspace and returns stdout, stderr and the exit code", "[sandbox]") {
  fixture f;
  auto o = f.call("exec", {{"command", "pwd; echo oops >&2; exit 3"}});
  REQUIRE(o.kind == outcome_kind::done);
  CHECK(o.result["stdout"] == f.ws.root() + "\n");
  CHECK(o.result["stderr"] == "oops\n");
  CHECK(o.result["exit_code"] == 3);
  CHECK(o.is_error);
  auto env = f.call("exec", {{"command", "echo $GREETING $KEEL_TASK_ID"}, {"env", {{"GREETING", "hi"}}}});
  CHECK(env.result["stdout"] == "hi r/1/1\n");
  CHECK_FALSE(env.is_error);
}

TEST_CASE("sandbox exec: a command that never ends is killed with its whole group: exit 137", "[sandbox]") {
  fixture f;
  auto started = steady_ms();
  auto o = f.call("exec", {{"command", "sleep 30 & sleep 30; echo never"}, {"timeout_ms", 300}});
  CHECK(steady_ms() - started < 10'000);
  CHECK(o.result["exit_code"] == 137);
  CHECK(o.result["timed_out"] == true);
  CHECK(o.result["stdout"] == "");
}

TEST_CASE("sandbox exec: a child left in the background does not hold the call open", "[sandbox]") {
  fixture f;
  auto started = steady_ms();
  auto o = f.call("exec", {{"command", "sleep 30 & echo started"}});
  CHECK(steady_ms() - started < 10'000);
  CHECK(o.result["exit_code"] == 0);
  CHECK(o.result["stdout"] == "started\n");
}

TEST_CASE("sandbox exec: huge output keeps its head and tail with a marker", "[sandbox]") {
  fixture f;
  f.p.output_chars_max = 1000;
  auto o = f.call("exec", {{"command", "seq 1 100000"}});
  auto out = o.result["stdout"].get<std::string>();
  CHECK(out.rfind("1\n2\n3\n", 0) == 0);
  CHECK(out.find("characters cut ...]") != std::string::npos);
  CHECK(out.substr(out.size() - 7) == "100000\n");
  CHECK(o.result["stdout_cut"].get<std::size_t>() > 500'000);
}

TEST_CASE("sandbox text: ANSI escapes are stripped and invalid UTF-8 replaced", "[sandbox]") {
  CHECK(strip_ansi("\x1b[31mred\x1b[0m \x1b]0;title\x07ok") == "red ok");
  CHECK(sanitize_utf8("caf\xc3\xa9") == "caf\xc3\xa9");
  CHECK(sanitize_utf8("a\xff" "b") == "a\xEF\xBF\xBD" "b");
  CHECK(sanitize_utf8("\xc0\xaf") == "\xEF\xBF\xBD\xEF\xBF\xBD");  // overlong
  fixture f;
  auto o = f.call("exec", {{"command", "printf '\\033[1mbold\\033[0m \\377'"}});
  CHECK(o.result["stdout"] == "bold \xEF\xBF\xBD");
}

TEST_CASE("sandbox text: head_tail_buffer keeps 20% head and 80% tail", "[sandbox]") {
  head_tail_buffer b(10);
  for (char c = 'a'; c <= 'z'; ++c) b.append(std::string(1, c));
  CHECK(b.total() == 26);
  CHECK(b.cut() == 16);
  CHECK(b.text() == "ab\n[... 16 characters cut ...]\nstuvwxyz");
}

TEST_CASE("sandbox matching: glob patterns over paths", "[sandbox]") {
  auto matches = [](const char* pattern, const char* path) { return glob_pattern::compile(pattern)->matches(path); };
  CHECK(matches("*.js", "a.js"));
  CHECK_FALSE(matches("*.js", "src/a.js"));
  CHECK(matches("**/*.js", "src/a.js"));
  CHECK(matches("**/*.js", "a.js"));
  CHECK(matches("src/**/x.txt", "src/x.txt"));
  CHECK(matches("src/**/x.txt", "src/a/b/x.txt"));
  CHECK(matches("a?c", "abc"));
  CHECK_FALSE(matches("a?c", "a/c"));
  CHECK(matches("a.(b)+[c]", "a.(b)+[c]"));  // regex characters are literal
  CHECK_FALSE(matches("a.b", "axb"));
  CHECK(wildcard_match("npm *", "npm test --watch"));
  CHECK_FALSE(wildcard_match("npm *", "rm -rf /; npm x"));
  CHECK_FALSE(pattern_allows("npm *", "npm test; rm -rf /"));
}

TEST_CASE("sandbox read: numbered lines, offset and limit, and binary files are refused", "[sandbox]") {
  fixture f;
  write_file(f.in_ws("a.txt"), "one\ntwo\nthree\nfour\n");
  auto o = f.call("read", {{"path", "a.txt"}, {"offset", 2}, {"limit", 2}});
  CHECK(o.result["content"] == "     2\ttwo\n     3\tthree\n");
  CHECK(o.result["lines_total"] == 4);
  write_file(f.in_ws("b.bin"), std::string("ab\0cd", 5));
  CHECK(error_of(f.call("read", {{"path", "b.bin"}})) == "read: b.bin is a binary file; read shows text files only");
  CHECK(error_of(f.call("read", {{"path", "missing.txt"}})) == "read: no such file: missing.txt");
  CHECK(error_of(f.call("read", {{"path", 5}})) == "read: argument 'path' must be a string");
  CHECK(error_of(f.call("read", value::object())) == "read: missing argument 'path'");
  // What is not a regular file is refused at once: a directory, and a FIFO (whose open would
  // otherwise wait for a writer forever).
  std::filesystem::create_directories(f.in_ws("sub"));
  CHECK(error_of(f.call("read", {{"path", "sub"}})) == "read: sub is a directory");
  REQUIRE(::mkfifo(f.in_ws("pipe").c_str(), 0600) == 0);
  keel::testing::give_to_sandbox(f.in_ws("pipe"));
  CHECK(error_of(f.call("read", {{"path", "pipe"}})) == "read: pipe is not a regular file");
  // A file over the size limit is refused with its size.
  write_file(f.in_ws("big.txt"), std::string((10 << 20) + 1, 'x'));
  CHECK(error_of(f.call("read", {{"path", "big.txt"}})).find("big.txt has 10485761 bytes, over the limit of 10485760") != std::string::npos);
}

TEST_CASE("sandbox write: creates parent directories and replaces atomically", "[sandbox]") {
  fixture f;
  auto o = f.call("write", {{"path", "deep/er/x.txt"}, {"content", "hello"}});
  CHECK_FALSE(o.is_error);
  CHECK(read_file(f.in_ws("deep/er/x.txt")) == "hello");
  f.call("write", {{"path", "deep/er/x.txt"}, {"content", "again"}});
  CHECK(read_file(f.in_ws("deep/er/x.txt")) == "again");
  int leftovers = 0;
  for (auto& e : std::filesystem::directory_iterator(f.in_ws("deep/er"))) leftovers += e.path().filename() != "x.txt";
  CHECK(leftovers == 0);
}

TEST_CASE("sandbox edit: exactly one match is required", "[sandbox]") {
  fixture f;
  write_file(f.in_ws("c.txt"), "a\nb\nc\nb\n");
  CHECK(error_of(f.call("edit", {{"path", "c.txt"}, {"old_text", "zzz"}, {"new_text", "y"}})) ==
        "edit: old_text was not found in c.txt");
  CHECK(error_of(f.call("edit", {{"path", "c.txt"}, {"old_text", "b"}, {"new_text", "y"}})) ==
        "edit: old_text occurs 2 times in c.txt; include more surrounding text so that it matches exactly once");
  auto o = f.call("edit", {{"path", "c.txt"}, {"old_text", "c\nb"}, {"new_text", "C\nB"}});
  CHECK_FALSE(o.is_error);
  CHECK(read_file(f.in_ws("c.txt")) == "a\nb\nC\nB\n");
  CHECK(o.result["diff"] == "--- a/c.txt\n+++ b/c.txt\n@@ -1,4 +1,4 @@\n a\n b\n-c\n-b\n+C\n+B\n");
}

TEST_CASE("sandbox glob and grep: sorted, bounded, with context", "[sandbox]") {
  fixture f;
  write_file(f.in_ws("src/b.js"), "let x = 1;\nconsole.log(x);\n");
  write_file(f.in_ws("src/a.js"), "// nothing\n");
  write_file(f.in_ws("src/sub/c.js"), "console.log('c');\n");
  write_file(f.in_ws("node_modules/d.js"), "console.log('d');\n");
  auto g = f.call("glob", {{"pattern", "**/*.js"}});
  CHECK(g.result["files"] == value{"src/a.js", "src/b.js", "src/sub/c.js"});
  auto ignored = f.call("glob", {{"pattern", "**/*.js"}, {"ignore", {"sub"}}});
  CHECK(ignored.result["files"] == value{"src/a.js", "src/b.js"});
  auto r = f.call("grep", {{"pattern", "console\\.log"}, {"include", "*.js"}, {"context", 1}});
  CHECK(r.result["count"] == 2);
  CHECK(r.result["matches"] == "src/b.js-1- let x = 1;\nsrc/b.js:2: console.log(x);\nsrc/sub/c.js:1: console.log('c');\n");
  auto one = f.call("grep", {{"pattern", "console"}, {"max_results", 1}});
  CHECK(one.result["truncated"] == true);
  CHECK(error_of(f.call("grep", {{"pattern", "("}})).find("grep: not a valid regular expression") == 0);
  CHECK(error_of(f.call("glob", {{"pattern", "../**"}})).find("must not climb out") != std::string::npos);
}

TEST_CASE("sandbox policy: approval-always asks before exec, write and edit, with the form to show",
          "[sandbox]") {
  fixture f;
  f.p.exec = exec_security::approval_always;
  f.p.file_approval = true;
  auto exec = f.call("exec", {{"command", "touch made"}});
  REQUIRE(exec.kind == outcome_kind::needs_approval);
  CHECK(exec.form["tool"] == "exec");
  CHECK(exec.form["context"]["command"] == "touch made");
  CHECK(exec.form["context"]["cwd"] == f.ws.root());
  CHECK_FALSE(std::filesystem::exists(f.in_ws("made")));
  auto approved = f.call("exec", {{"command", "touch made"}}, true);
  CHECK(approved.kind == outcome_kind::done);
  CHECK(std::filesystem::exists(f.in_ws("made")));

  auto write = f.call("write", {{"path", "w.txt"}, {"content", std::string(5000, 'x')}});
  REQUIRE(write.kind == outcome_kind::needs_approval);
  CHECK(write.form["context"]["path"] == f.in_ws("w.txt"));
  CHECK(write.form["context"]["bytes"] == 5000);
  CHECK(write.form["context"]["content"].get<std::string>().find("[... 1000 more characters]") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(f.in_ws("w.txt")));

  write_file(f.in_ws("e.txt"), "old line\n");
  auto edit = f.call("edit", {{"path", "e.txt"}, {"old_text", "old"}, {"new_text", "new"}});
  REQUIRE(edit.kind == outcome_kind::needs_approval);
  CHECK(edit.form["context"]["diff"] == "--- a/e.txt\n+++ b/e.txt\n@@ -1,1 +1,1 @@\n-old line\n+new line\n");
  CHECK(read_file(f.in_ws("e.txt")) == "old line\n");
  // Reading and searching never ask.
  CHECK(f.call("read", {{"path", "e.txt"}}).kind == outcome_kind::done);
}

TEST_CASE("sandbox policy: allowlist patterns and remembered approvals run without asking", "[sandbox]") {
  fixture f;
  f.p.exec = exec_security::allowlist;
  f.p.allowlist = {"echo *", "ls"};
  CHECK(f.call("exec", {{"command", "echo hi"}}).kind == outcome_kind::done);
  CHECK(f.call("exec", {{"command", "ls"}}).kind == outcome_kind::done);
  auto other = f.call("exec", {{"command", "rm -rf x"}});
  CHECK(other.kind == outcome_kind::needs_approval);
  CHECK(other.form["reason"] == "not on the allowlist");
  tool_request request;
  request.tool = "exec";
  request.arguments = {{"command", "rm -rf x"}};
  request.allow_rules = {{allow_kind::exact, "rm -rf x"}};
  auto remembered = run_tool(f.ws, f.p, request);
  CHECK(remembered.kind == outcome_kind::done);
}

TEST_CASE("sandbox paths: escapes by .., absolute paths and symlinks count as outside", "[sandbox]") {
  fixture f;
  write_file(f.dir.file("secret.txt"), "secret");
  std::filesystem::create_symlink(f.dir.file("secret.txt"), f.in_ws("link"));
  std::filesystem::create_directory_symlink(f.dir.path(), f.in_ws("parent"));
  std::filesystem::create_directory(f.in_ws("sub"));
  std::vector<std::string> escapes = {"../secret.txt", f.dir.file("secret.txt"), "link",
                                      "parent/secret.txt", "sub/../../secret.txt"};
  for (const auto& path : escapes) {
    INFO(path);
    auto o = f.call("read", {{"path", path}});
    REQUIRE(o.kind == outcome_kind::needs_approval);
    CHECK(o.form["reason"] == "outside the workspace");
    CHECK(o.form["context"]["path"] == f.dir.file("secret.txt"));
  }
  // A write through a symlinked directory is outside too, and nothing is written.
  auto w = f.call("write", {{"path", "parent/planted.txt"}, {"content", "x"}});
  CHECK(w.kind == outcome_kind::needs_approval);
  CHECK_FALSE(std::filesystem::exists(f.dir.file("planted.txt")));
  // Configured to refuse: a plain refusal.
  f.p.outside = outside_access::deny;
  auto denied = f.call("read", {{"path", "../secret.txt"}});
  CHECK(denied.kind == outcome_kind::refused);
  CHECK(denied.message.find("is outside the workspace") != std::string::npos);
  // A symlink created by a command, then a write through it: still outside.
  f.call("exec", {{"command", "ln -s " + f.dir.path() + " escape"}}, true);
  auto through = f.call("write", {{"path", "escape/x.txt"}, {"content", "x"}});
  CHECK(through.kind == outcome_kind::refused);
  CHECK_FALSE(std::filesystem::exists(f.dir.file("x.txt")));
  // Glob does not follow a symlinked directory out.
  auto g = f.call("glob", {{"pattern", "**"}});
  for (const auto& file : g.result["files"]) CHECK(file.get<std::string>().find("secret") == std::string::npos);
}

TEST_CASE("sandbox paths: a symlink that stays inside works like its target", "[sandbox]") {
  fixture f;
  write_file(f.in_ws("real/data.txt"), "inside\n");
  std::filesystem::create_symlink(f.in_ws("real/data.txt"), f.in_ws("alias.txt"));
  std::filesystem::create_directory_symlink("real", f.in_ws("dir-alias"));
  keel::testing::give_to_sandbox(f.ws.root());
  CHECK(f.call("read", {{"path", "alias.txt"}}).result["content"] == "     1\tinside\n");
  CHECK(f.call("read", {{"path", "dir-alias/data.txt"}}).result["path"] == "real/data.txt");
  auto w = f.call("write", {{"path", "dir-alias/new.txt"}, {"content", "n"}});
  CHECK_FALSE(w.is_error);
  CHECK(read_file(f.in_ws("real/new.txt")) == "n");
}

TEST_CASE("sandbox paths: grep and glob aimed outside by cwd ask or are refused", "[sandbox]") {
  fixture f;
  write_file(f.dir.file("outside.txt"), "needle\n");
  auto g = f.call("grep", {{"pattern", "needle"}, {"cwd", ".."}});
  REQUIRE(g.kind == outcome_kind::needs_approval);
  CHECK(g.form["context"]["path"] == f.dir.path());
  f.p.outside = outside_access::deny;
  CHECK(f.call("grep", {{"pattern", "needle"}, {"cwd", f.dir.path()}}).kind == outcome_kind::refused);
  CHECK(f.call("glob", {{"pattern", "*"}, {"cwd", "../"}}).kind == outcome_kind::refused);
  // A search inside never reports what lies outside.
  auto inside = f.call("grep", {{"pattern", "needle"}});
  CHECK(inside.result["count"] == 0);
}

TEST_CASE("sandbox: unknown tools and bad arguments are errors the model can read", "[sandbox]") {
  fixture f;
  CHECK(error_of(f.call("teleport", value::object())).find("unknown tool 'teleport'") == 0);
  CHECK(error_of(f.call("exec", value::array())) == "exec: arguments must be a map");
  CHECK(error_of(f.call("exec", {{"command", "x"}, {"timeout_ms", -5}})).find("timeout_ms") != std::string::npos);
  for (const auto& name : tool_names()) CHECK(tool_definition(name)["input_schema"]["type"] == "object");
}
