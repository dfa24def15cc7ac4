// What a command holds of the process that runs it: nothing. Each class an attacker enumerates
// (descriptors, identity and metadata, other processes, IPC, sockets by family and protocol,
// namespaces, limits that short-lived processes could outrun, lifetime) is tried under local and
// bwrap, each with a control that shows the same attack working where nothing stops it.
#include "runtime/child_process.hpp"
#include "runtime/clock.hpp"
#include "sandbox/identity.hpp"
#include "sandbox/text.hpp"
#include "sandbox/tools.hpp"
#include "tests/support/test_support.hpp"

#include <arpa/inet.h>
#include <csignal>
#include <filesystem>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

using namespace keel;
using namespace keel::sandbox;
using keel::testing::read_file;
using keel::testing::temp_dir;
using keel::testing::write_file;
using wire::value;
namespace fs = std::filesystem;

namespace {

struct call_site {
  temp_dir dir;
  workspace ws;
  policy p;
  explicit call_site(environment_kind kind) : ws(*workspace::open(dir.file("ws"))) {
    keel::testing::give_to_sandbox(ws.root());  // as keel gives a workspace it made
    p.exec = exec_security::allow_always;
    p.file_approval = false;
    p.env.kind = kind;
  }
  value exec(const std::string& command, std::int64_t timeout_ms = 30'000, const std::string& task = "t") {
    tool_request request;
    request.tool = "exec";
    request.arguments = {{"command", command}, {"timeout_ms", timeout_ms}};
    request.task_id = task;
    return run_tool(ws, p, request).result;
  }
  std::string out(const std::string& command) {
    auto r = exec(command);
    return r.value("stdout", std::string{}) + r.value("stderr", std::string{});
  }
};

const char* name_of(environment_kind kind) { return kind == environment_kind::bwrap ? "bwrap" : "local"; }

// What /bin/sh prints when started the plain way (fork and exec, nothing closed): the control.
std::string plain_shell(const std::string& command) {
  temp_dir scratch;
  write_file(scratch.file("script"), command);
  std::string full = "/bin/sh " + scratch.file("script") + " >" + scratch.file("out") + " 2>&1";
  (void)std::system(full.c_str());
  return read_file(scratch.file("out"));
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start < text.size()) {
    auto end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    out.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return out;
}


const environment_kind both[] = {environment_kind::local, environment_kind::bwrap};

} // namespace

TEST_CASE("authority, descriptors: a command holds 0, 1 and 2 and nothing else of its worker", "[sandbox][authority]") {
  // Descriptors this process holds without close-on-exec, as a library's socket, an inherited
  // directory and a pipe of another call would be.
  // High numbers, so that none is a number the listing itself opens.
  int sock = ::fcntl(::socket(AF_INET, SOCK_STREAM, 0), F_DUPFD, 100);
  int dir = ::fcntl(::open("/", O_RDONLY | O_DIRECTORY), F_DUPFD, 110);
  int pipe_fds[2];
  REQUIRE(::pipe(pipe_fds) == 0);
  pipe_fds[0] = ::fcntl(pipe_fds[0], F_DUPFD, 120);
  REQUIRE(sock >= 100);
  REQUIRE(dir >= 110);
  REQUIRE(pipe_fds[0] >= 120);
  const std::string list = "ls /proc/self/fd | sort -n | tr \"\\n\" \" \"";
  // Control: a plain fork and exec hands all of them over.
  auto control = plain_shell(list);
  CHECK(control.find(" " + std::to_string(sock) + " ") != std::string::npos);
  CHECK(control.find(" " + std::to_string(dir) + " ") != std::string::npos);
  CHECK(control.find(" " + std::to_string(pipe_fds[0]) + " ") != std::string::npos);
  for (auto kind : both) {
    INFO(name_of(kind));
    call_site s(kind);
    // `ls` itself opens one to read the directory: 0 1 2 and that one.
    auto fds = lines_of(s.exec("ls /proc/self/fd | wc -l")["stdout"].get<std::string>());
    REQUIRE(fds.size() == 1);
    CHECK(fds[0] == "4");
    auto shown = s.out(list);
    CHECK(shown.find(" " + std::to_string(sock) + " ") == std::string::npos);
    CHECK(shown.find(" " + std::to_string(dir) + " ") == std::string::npos);
    CHECK(shown.find(" " + std::to_string(pipe_fds[0]) + " ") == std::string::npos);
    // Writing to a descriptor number the worker holds reaches nothing.
    CHECK(s.out("echo PUB x 1 >&" + std::to_string(sock) + " && echo WROTE").find("WROTE") == std::string::npos);
  }
  // Concurrent calls: none sees another's output pipes.
  std::vector<std::thread> threads;
  std::atomic<int> leaks{0};
  for (int i = 0; i < 8; ++i)
    threads.emplace_back([&leaks] {
      call_site s(environment_kind::local);
      for (int k = 0; k < 5; ++k)
        if (s.exec("sleep 0.05; ls /proc/self/fd | wc -l")["stdout"] != "4\n") ++leaks;
    });
  for (auto& t : threads) t.join();
  CHECK(leaks == 0);
  ::close(sock);
  ::close(dir);
  ::close(pipe_fds[0]);
  ::close(pipe_fds[1]);
}

TEST_CASE("authority, identity: a command runs as keel-sandbox and cannot change what the node owns", "[sandbox][authority]") {
  auto id = command_identity(sandbox_account);
  REQUIRE(id.ok());
  temp_dir host;
  std::string target = host.file("host-file");
  write_file(target, "host");
  ::chmod(host.path().c_str(), 0755);
  ::chmod(target.c_str(), 0644);
  const std::string attacks =
    "chmod 4777 " + target + " 2>/dev/null && echo CHMOD; "
    "touch -d 2001-01-01 " + target + " 2>/dev/null && echo TIMES; "
    "chattr +i " + target + " 2>/dev/null && echo FLAGS; "
    "python3 -c \"import os; os.setxattr(\\\"" + target + "\\\", \\\"user.k\\\", b\\\"v\\\")\" 2>/dev/null && echo XATTR; "
    "echo x >> " + target + " 2>/dev/null && echo WRITE; "
    "chown 0 " + target + " 2>/dev/null && echo CHOWN; id -u";
  for (auto kind : both) {
    INFO(name_of(kind));
    call_site s(kind);
    auto shown = s.exec(attacks)["stdout"].get<std::string>();
    for (const char* done : {"CHMOD", "TIMES", "FLAGS", "XATTR", "WRITE", "CHOWN"}) CHECK(shown.find(done) == std::string::npos);
    CHECK(shown.find("\n0\n") == std::string::npos);
    if (kind == environment_kind::local) CHECK(lines_of(shown).back() == std::to_string(id->uid));
    struct stat st{};
    REQUIRE(::stat(target.c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0644);
    CHECK(read_file(target) == "host");
  }
  // Control: the node's own user does all of it.
  auto control = plain_shell("chmod 4777 " + target + " && echo CHMOD; touch -d 2001-01-01 " + target + " && echo TIMES");
  CHECK(control.find("CHMOD") != std::string::npos);
  CHECK(control.find("TIMES") != std::string::npos);
  // Set-id bits are refused even on the command's own files.
  call_site s(environment_kind::local);
  for (auto kind : both) {
    INFO(name_of(kind));
    call_site s(kind);
    auto made = s.out("touch mine; chmod u+s mine 2>/dev/null && echo SETUID; chmod g+s mine 2>/dev/null && echo SETGID; "
                      "python3 -c 'import os; os.chmod(\"mine\", 0o4755)' 2>/dev/null && echo PYSETUID; "
                      "python3 -c 'import os; os.open(\"made\", os.O_CREAT | os.O_WRONLY, 0o6755)' 2>/dev/null && echo OPENSETUID; "
                      "python3 -c 'import os, stat; os.mknod(\"node\", stat.S_IFREG | 0o4755)' 2>/dev/null && echo MKNODSETUID; "
                      "mkdir -m 2775 d 2>/dev/null && echo MKDIRSETGID; "
                      "find . -perm /6000 | grep -c . ; echo end");
    INFO(made);
    CHECK(made.find("SET") == std::string::npos);
    CHECK(made.find("0\nend") != std::string::npos);
  }
  // Control: the same calls as the node's user make set-id files.
  temp_dir control_dir;
  CHECK(plain_shell("cd " + control_dir.path() + " && python3 -c 'import os; os.open(\"made\", os.O_CREAT | os.O_WRONLY, 0o6755)' && "
                    "find . -perm /6000 | grep -c .") == "1\n");
}

TEST_CASE("authority, processes: the node and other processes are out of sight and reach", "[sandbox][authority]") {
  auto node = std::to_string(::getpid());
  // Control: a plain shell sees this process, its command line, and can lower its limits.
  auto control = plain_shell("cat /proc/" + node + "/cmdline | head -c 20; prlimit --pid " + node + " --core=0:0 && echo LIMITED");
  CHECK(control.find("LIMITED") != std::string::npos);
  for (auto kind : both) {
    INFO(name_of(kind));
    call_site s(kind);
    auto shown = s.out("cat /proc/" + node + "/cmdline 2>/dev/null && echo SAWNODE; prlimit --pid " + node +
                       " --fsize=0:0 2>/dev/null && echo LIMITED; prlimit --pid 1 --fsize=0:0 2>/dev/null && echo "
                       "LIMITED1; kill -0 " + node + " 2>/dev/null && echo SIGNAL; ps -e --no-headers | wc -l");
    CHECK(shown.find("SAWNODE") == std::string::npos);
    CHECK(shown.find("LIMITED") == std::string::npos);
    CHECK(shown.find("SIGNAL") == std::string::npos);
    // Its own processes only: its init (or bubblewrap), the shell, ps and wc.
    CHECK(std::stoi(lines_of(shown).back()) <= 5);
    // Its own limits it may still set.
    CHECK(s.out("ulimit -n 64 && echo OWN").find("OWN") != std::string::npos);
  }
}

TEST_CASE("authority, IPC: System V objects live and die in the call's own namespace", "[sandbox][authority]") {
  auto host_segments = [] { return plain_shell("ipcs -m | grep -c '^0x'"); };
  auto before = host_segments();
  // Control: made on the host, a segment is there for everyone and stays.
  int control = ::shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600);
  REQUIRE(control >= 0);
  CHECK(host_segments() != before);
  ::shmctl(control, IPC_RMID, nullptr);
  for (auto kind : both) {
    INFO(name_of(kind));
    call_site s(kind);
    auto shown = s.out("ipcmk -M 4096 && ipcs -m | grep -c '^0x'; ipcmk -Q; ipcmk -S 1");
    CHECK(shown.find("Shared memory id") != std::string::npos);
    CHECK(host_segments() == before);
  }
}

TEST_CASE("authority, network: without network only Unix sockets, by family and protocol", "[sandbox][authority]") {
  keel::testing::loopback_listener l;
  auto port = std::to_string(l.port);
  // One probe per family and protocol: prints the name of each socket it could make and use.
  const std::string probe =
    "python3 - <<'EOF'\n"
    "import socket\n"
    "def tcp(proto):\n"
    "    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, proto)\n"
    "    s.settimeout(2); s.connect(('127.0.0.1', " + port + "))\n"
    "def listen_any():\n"
    "    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM); s.listen(1)\n"
    "def udp():\n"
    "    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('127.0.0.1', " + port + "))\n"
    "tries = {'TCP': lambda: tcp(0), 'MPTCP': lambda: tcp(262), 'LISTEN': listen_any, 'UDP': udp,\n"
    "  'TCP6': lambda: socket.socket(socket.AF_INET6, socket.SOCK_STREAM),\n"
    "  'RAW': lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),\n"
    "  'PACKET': lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW),\n"
    "  'NETLINK': lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0),\n"
    "  'NETLINKAUDIT': lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 9),\n"
    "  'VSOCK': lambda: socket.socket(40, socket.SOCK_STREAM),\n"
    "  'SCTP': lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM, 132),\n"
    "  'UNIX': lambda: socket.socketpair(socket.AF_UNIX)}\n"
    "for name, make in tries.items():\n"
    "    try:\n"
    "        make(); print('MADE ' + name)\n"
    "    except Exception as e:\n"
    "        print('NO ' + name)\n"
    "EOF";
  // Control: on the host every one of them works (MPTCP reaches the TCP listener).
  auto control = plain_shell("PATH=/usr/bin:/bin\n" + probe);
  CHECK(control.find("MADE MPTCP") != std::string::npos);
  CHECK(control.find("MADE TCP\n") != std::string::npos);
  for (auto kind : both) {
    INFO(name_of(kind));
    call_site s(kind);
    auto shown = s.out(probe);
    INFO(shown);
    CHECK(shown.find("MADE UNIX") != std::string::npos);
    for (const char* name : {"TCP", "MPTCP", "LISTEN", "UDP", "TCP6", "RAW", "PACKET", "NETLINK", "NETLINKAUDIT", "VSOCK", "SCTP"})
      CHECK(shown.find(std::string("NO ") + name + "\n") != std::string::npos);
    // With network, TCP and UDP work, and the other protocols still do not.
    s.p.env.network = true;
    auto open = s.out(probe);
    INFO(open);
    for (const char* name : {"TCP", "LISTEN", "UDP", "TCP6", "NETLINK"})
      CHECK(open.find(std::string("MADE ") + name + "\n") != std::string::npos);
    for (const char* name : {"MPTCP", "RAW", "PACKET", "NETLINKAUDIT", "VSOCK", "SCTP"})
      CHECK(open.find(std::string("NO ") + name + "\n") != std::string::npos);
  }
}

TEST_CASE("authority, namespaces: no namespace of any kind, one flag at a time or together", "[sandbox][authority]") {
  const std::string tries =
    "for f in -U -m -i -n -p -u -C -T '-U -r' '-m -i -n -p -u'; do unshare $f true 2>/dev/null && echo \"MADE $f\"; done; "
    "python3 -c 'import os; [os.unshare(f) for f in (0x10000000,)]' 2>/dev/null && echo PYUSER; echo end";
  auto control = plain_shell("unshare -m true && echo MADE");
  CHECK(control.find("MADE") != std::string::npos);
  for (auto kind : both) {
    INFO(name_of(kind));
    call_site s(kind);
    auto shown = s.out(tries);
    INFO(shown);
    CHECK(shown.find("MADE") == std::string::npos);
    CHECK(shown.find("PYUSER") == std::string::npos);
  }
}

TEST_CASE("authority, limits: short-lived processes cannot write past the call's limit unseen", "[sandbox][authority]") {
  for (auto kind : both) {
    INFO(name_of(kind));
    call_site s(kind);
    s.p.env.limits.written_bytes_max = 4 << 20;
    // Twenty processes of a few milliseconds, 1 MB each, synced.
    auto r = s.exec("for i in $(seq 20); do dd if=/dev/zero of=f$i bs=1M count=1 conv=fsync 2>/dev/null; done; echo done");
    INFO(r.dump());
    CHECK(r["killed_by"] == "written_bytes_max");
    CHECK(r["exit_code"] == 137);
    // Space taken without a write: refused.
    auto taken = s.exec("touch big; fallocate --keep-size -l 512M big 2>&1; fallocate -p -o 0 -l 4096 f1 2>&1; du -k big | cut -f1");
    INFO(taken.dump());
    CHECK(std::stoll(lines_of(taken["stdout"].get<std::string>()).back()) < 1024);
  }
  // The call's TMPDIR is a file system no bigger than the limit (local, as root; bwrap's /tmp).
  call_site s(environment_kind::local);
  s.p.env.limits.written_bytes_max = 2 << 20;
  auto full = s.exec("head -c 3000000 /dev/zero > $TMPDIR/x; echo $?; du -k $TMPDIR/x | cut -f1");
  INFO(full.dump());
  CHECK(std::stoll(lines_of(full["stdout"].get<std::string>()).back()) <= 2048);
  // Space allocated without a byte written, in many files: fallocate is refused, and the C
  // library's fallback writes the blocks, which count.
  for (auto kind : both) {
    INFO(name_of(kind));
    call_site c(kind);
    c.p.env.limits.written_bytes_max = 8 << 20;
    auto r = c.exec("python3 -c 'import os\nfor i in range(10):\n    fd = os.open(\"fa%d\" % i, os.O_CREAT | os.O_RDWR, 0o600)\n"
                    "    os.posix_fallocate(fd, 0, 4 << 20)'; du -sk . | cut -f1");
    INFO(r.dump());
    CHECK(r["killed_by"] == "written_bytes_max");
    CHECK(plain_shell("du -sk " + c.ws.root() + " | cut -f1").size() > 0);
    CHECK(std::stoll(plain_shell("du -sk " + c.ws.root() + " | cut -f1")) < 40 * 1024);
  }
}

TEST_CASE("authority, lifetime: nothing a call started outlives it", "[sandbox][authority]") {
  for (auto kind : both) {
    INFO(name_of(kind));
    call_site s(kind);
    auto started = steady_ms();
    auto r = s.exec("(trap '' HUP TERM; while :; do date >> beat; sleep 0.05; done) & setsid sh -c 'sleep 60' & "
                    "while [ ! -s beat ]; do sleep 0.01; done; echo left");
    CHECK(steady_ms() - started < 10'000);
    CHECK(r["stdout"] == "left\n");
    auto size = fs::file_size(s.ws.root() + "/beat");
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    CHECK(fs::file_size(s.ws.root() + "/beat") == size);
  }
}

TEST_CASE("authority, edit: linear in its input and within the tool time limit", "[sandbox][authority]") {
  call_site s(environment_kind::local);
  s.p.tool_timeout_ms = 2000;
  // The worst case of a naive search: a long run of 'a' and a pattern of 'a's ending in 'b'.
  write_file(s.ws.root() + "/big.txt", std::string(10'000'000, 'a'));
  keel::testing::give_to_sandbox(s.ws.root() + "/big.txt");
  tool_request request;
  request.tool = "edit";
  request.arguments = {{"path", "big.txt"}, {"old_text", std::string(40'000, 'a') + "b"}, {"new_text", "x"}};
  auto started = steady_ms();
  auto o = run_tool(s.ws, s.p, request);
  CHECK(steady_ms() - started < 5'000);
  CHECK(o.is_error);
  CHECK(o.result["error"].get<std::string>().find("not found") != std::string::npos);
}

TEST_CASE("authority, lifetime: a worker killed mid-call takes everything of the call with it", "[sandbox][authority]") {
  for (const char* kind : {"local", "bwrap"}) {
    INFO(kind);
    temp_dir dir;
    std::string ws = dir.file("ws");
    child_options o;
    o.argv = {KEEL_BINARY, "tool", "exec",
              "command=(trap '' HUP TERM; while :; do date >> beat; sleep 0.05; done) & setsid sh -c 'sleep 600' & sleep 600",
              "--exec-security", "allow-always", "--workspace", ws, "--env", kind};
    o.stdout_path = dir.file("out");
    o.stderr_path = dir.file("err");
    auto worker = child_process::start(o);
    REQUIRE(worker.ok());
    REQUIRE_EVENTUALLY(20'000, fs::exists(ws + "/beat") && fs::file_size(ws + "/beat") > 0);
    ::kill(worker->pid(), SIGKILL);
    (void)worker->wait(10'000);
    // Within a moment nothing writes any more: the call's processes died with their worker.
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    auto size = fs::file_size(ws + "/beat");
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    CHECK(fs::file_size(ws + "/beat") == size);
    CHECK(plain_shell("ps -eo args | grep -c '^sleep 600$'") == "0\n");
  }
}

TEST_CASE("authority, prompts: every character that hides what runs is shown, and the end of a command always shows", "[sandbox][authority]") {
  // One of each class, each in the middle of a command: the raw bytes never reach the screen.
  const std::vector<std::pair<std::string, std::string>> hidden = {
    {"\u2066", "\\u2066"}, {"\u2067", "\\u2067"}, {"\u2068", "\\u2068"}, {"\u2069", "\\u2069"},  // bidi isolates
    {"\u202e", "\\u202e"}, {"\u200b", "\\u200b"}, {"\u200d", "\\u200d"}, {"\u2060", "\\u2060"},  // override, zero width, WJ
    {"\ufeff", "\\ufeff"}, {"\u2028", "\\u2028"}, {"\u2029", "\\u2029"},                     // BOM, LS, PS
    {"\u115f", "\\u115f"}, {"\u1160", "\\u1160"}, {"\u3164", "\\u3164"}, {"\uffa0", "\\uffa0"},  // Hangul fillers
    {"\u00a0", "\\u00a0"}, {"\u2003", "\\u2003"}, {"\u3000", "\\u3000"}, {"\u00ad", "\\u00ad"},  // other spaces, soft hyphen
    {"\xf3\xa0\x81\x81", "\\U000e0041"}, {"\ufe0f", "\\ufe0f"}, {"\x1b[2J", "\\x1b[2J"}, {"\r", "\\r"}, {"\xc2\x85", "\\u0085"}};
  for (const auto& [raw, escaped] : hidden) {
    INFO(escaped);
    auto shown = shown_field("rm -rf /tmp/a" + raw + "b");
    CHECK(shown == "rm -rf /tmp/a" + escaped + "b");
  }
  // Visible text stays as it is.
  CHECK(shown_field("héllo wörld ✓ 日本") == "héllo wörld ✓ 日本");
  // 60,000 spaces between a harmless start and the real command: shown by their count.
  auto padded = shown_field("echo hi" + std::string(60'000, ' ') + "; rm -rf ~");
  CHECK(padded == "echo hi[60000 spaces]; rm -rf ~");
  // A long field: its start and its end, with what is between counted.
  std::string long_command = "echo start " + std::string(100'000, 'x') + " rm -rf ~";
  auto cut = shown_field(long_command, 2000);
  CHECK(cut.size() < 2100);
  CHECK(cut.rfind("echo start", 0) == 0);
  CHECK(cut.size() >= 9);
  CHECK(cut.substr(cut.size() - 9) == " rm -rf ~");
  CHECK(cut.find("characters not shown") != std::string::npos);
}

TEST_CASE("authority, secrets: bubblewrap's command line, which every user reads, holds no variable of the call", "[sandbox][authority]") {
  call_site s(environment_kind::bwrap);
  s.p.env.env_pass = {"KEEL_TEST_PASSED_SECRET"};
  ::setenv("KEEL_TEST_PASSED_SECRET", "tok_passed_1234", 1);
  std::atomic<bool> done{false};
  std::string seen;
  std::thread watcher([&] {
    while (!done) {
      for (const auto& entry : fs::directory_iterator("/proc")) {
        auto cmdline = read_file(entry.path().string() + "/cmdline");
        if (cmdline.rfind("bwrap", 0) == 0) seen += cmdline + "\n";
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  tool_request request;
  request.tool = "exec";
  request.arguments = {{"command", "echo $KEEL_TEST_PASSED_SECRET $TZ; sleep 1"}, {"env", {{"TZ", "tz_secret_5678"}}}};
  request.approved = true;
  auto o = run_tool(s.ws, s.p, request);
  done = true;
  watcher.join();
  CHECK(o.result["stdout"] == "tok_passed_1234 tz_secret_5678\n");  // the command has them
  CHECK_FALSE(seen.empty());                                          // bubblewrap was seen
  CHECK(seen.find("tok_passed_1234") == std::string::npos);
  CHECK(seen.find("tz_secret_5678") == std::string::npos);
}

TEST_CASE("authority, workspaces: only an empty directory changes hands, and a person's stays theirs", "[sandbox][authority]") {
  auto id = command_identity(sandbox_account);
  REQUIRE(id.ok());
  temp_dir dir;
  write_file(dir.file("mine/notes.txt"), "a person's");
  auto mine = workspace::open(dir.file("mine"));
  REQUIRE(mine.ok());
  REQUIRE(hand_over(mine->root_fd(), *id).ok());
  struct stat st{};
  REQUIRE(::stat(dir.file("mine").c_str(), &st) == 0);
  CHECK(st.st_uid == 0);
  auto fresh = workspace::open(dir.file("fresh"));
  REQUIRE(fresh.ok());
  REQUIRE(hand_over(fresh->root_fd(), *id).ok());
  REQUIRE(::stat(dir.file("fresh").c_str(), &st) == 0);
  CHECK(st.st_uid == id->uid);
}

TEST_CASE("authority, files: nothing is writable but the workspace and the call's own temporary places", "[sandbox][authority]") {
  const std::string tries =
    "for p in /newfile /etc/new /dev/new /usr/new /var/tmp/new /run/new; do echo x > $p 2>/dev/null && echo \"WROTE $p\"; done; "
    "echo x > $TMPDIR/t && echo TMP; echo x > inside && echo WORKSPACE; "
    "python3 -c 'import os; os.setxattr(\"inside\", \"user.a\", b\"x\" * 4000)' 2>/dev/null && echo XATTR; echo end";
  // Control: the node's user writes an extended attribute where the file system has them.
  temp_dir control;
  write_file(control.file("f"), "x");
  CHECK(plain_shell("python3 -c 'import os; os.setxattr(\"" + control.file("f") + "\", \"user.a\", b\"x\")' && echo XATTR") ==
        "XATTR\n");
  for (auto kind : both) {
    INFO(name_of(kind));
    call_site s(kind);
    auto shown = s.exec(tries)["stdout"].get<std::string>();
    INFO(shown);
    CHECK(shown.find("WROTE") == std::string::npos);
    CHECK(shown.find("XATTR") == std::string::npos);
    CHECK(shown.find("TMP\nWORKSPACE\n") != std::string::npos);
    if (kind == environment_kind::bwrap)
      CHECK(s.exec("echo x > /dev/shm/s && echo SHM")["stdout"] == "SHM\n");
  }
}

TEST_CASE("authority, workspaces: a set-group-id parent passes nothing to the directories a command makes", "[sandbox][authority]") {
  temp_dir dir;
  fs::create_directories(dir.file("shared"));
  ::chmod(dir.file("shared").c_str(), 02777);
  for (auto kind : both) {
    INFO(name_of(kind));
    auto ws = workspace::open(dir.file(std::string("shared/ws-") + name_of(kind)));
    REQUIRE(ws.ok());
    policy p;
    p.exec = exec_security::allow_always;
    p.env.kind = kind;
    tool_request request;
    request.tool = "exec";
    request.arguments = {{"command", "mkdir made && find . -perm /6000 | grep -c ."}};
    auto o = run_tool(*ws, p, request);
    INFO(o.result.dump());
    CHECK(o.result["stdout"] == "0\n");
  }
}
