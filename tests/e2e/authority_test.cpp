// A command run by a real node (orchestrator, worker and gateway in one process, connected to a
// real nats-server) holds none of that node's authority: not its broker connections, not the
// gateway's listening socket, not its processes, not its network.
#include "tests/e2e/cluster.hpp"

#include <filesystem>
#include <fstream>
#include <sys/stat.h>

using namespace keel;
using namespace keel::testing;
using nlohmann::json;

namespace {

// Every descriptor it holds is listed, written to as a NATS client would and accepted on as a
// server would; every port named in ports.txt is tried over TCP and MPTCP; the node's processes
// are looked for. What it managed is written to report.txt.
const char* probe = R"(import os, socket
listing = 'FDS ' + ' '.join(sorted(os.listdir('/proc/self/fd'), key=int)) + '\n'
report = open('report.txt', 'w')
report.write(listing)
for fd in range(3, 1024):
    if fd == report.fileno():
        continue
    try:
        os.write(fd, b'PUB keel.forged 1\r\nx\r\n')
        report.write('WROTE %d\n' % fd)
    except OSError:
        pass
    try:
        s = socket.socket(fileno=fd)
        s.setblocking(False)
        s.accept()
        report.write('ACCEPTED %d\n' % fd)
    except Exception:
        pass
for port in open('ports.txt').read().split():
    for proto in (0, 262):
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, proto)
            s.settimeout(2)
            s.connect(('127.0.0.1', int(port)))
            report.write('CONNECTED %s %d\n' % (port, proto))
        except Exception:
            pass
for pid in os.listdir('/proc'):
    try:
        if pid.isdigit() and b'keel-node' in open('/proc/%s/cmdline' % pid, 'rb').read():
            report.write('SAWNODE %s\n' % pid)
    except Exception:
        pass
report.write('END\n')
report.close()
)";

// The node's sockets, and how many of them would pass to a child started the plain way.
std::pair<int, int> node_sockets(pid_t node) {
  int sockets = 0, inheritable = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/" + std::to_string(node) + "/fd")) {
    std::error_code ec;
    auto target = std::filesystem::read_symlink(entry.path(), ec).string();
    if (target.rfind("socket:", 0) != 0) continue;
    ++sockets;
    std::ifstream info("/proc/" + std::to_string(node) + "/fdinfo/" + entry.path().filename().string());
    std::string key, flags;
    while (info >> key >> flags)
      if (key == "flags:" && !(std::stoul(flags, nullptr, 8) & 02000000)) ++inheritable;
  }
  return {sockets, inheritable};
}

} // namespace

TEST_CASE("authority: a command run by a node holds none of its sockets, processes or network", "[e2e][integration]") {
  for (const char* env : {"local", "bwrap"}) {
    INFO(env);
    std::string agents = R"(
[agents.probe]
script = "{dir}/probe.json"
[agents.probe.sandbox]
workspace = "{dir}/ws"
scope = "agent"
exec_security = "allow-always"
env = ")" + std::string(env) + "\"\n";
    cluster_options options;
    options.gateway = true;
    cluster c(agents, {{"probe.json", R"({"turns": [
        {"text": "Probing.", "tool_calls": [{"name": "exec", "arguments": {"command": "python3 probe.py"}}]},
        {"text": "Done."}]})"}, {"ws/probe.py", probe}}, options);
    auto port_of = [](const std::string& url) { return url.substr(url.rfind(':') + 1); };
    write_file(c.dir().file("ws/ports.txt"), std::to_string(c.nats().port()) + " " + port_of(c.gateway_url()) + "\n");
    give_to_sandbox(c.dir().file("ws"));  // the agent's workspace, with the probe in it
    // Control: the node holds sockets (its broker connections, the gateway's listener), and some
    // of them are not close-on-exec: a child started the plain way would hold them.
    auto [sockets, inheritable] = node_sockets(c.node_pid());
    CHECK(sockets >= 2);
    CHECK(inheritable >= 1);
    auto run = c.invoke("probe", "probe");
    c.await_status(run, "completed", 60'000);
    auto report = read_file(c.dir().file("ws/report.txt"));
    INFO(report);
    CHECK(report.find("END\n") != std::string::npos);
    CHECK(report.rfind("FDS 0 1 2 3\n", 0) == 0);  // its own three and the listing's
    for (const char* reached : {"WROTE", "ACCEPTED", "CONNECTED", "SAWNODE"})
      CHECK(report.find(reached) == std::string::npos);
    CHECK(c.node_log().find("keel.forged") == std::string::npos);
    // The runs' store is the node's user's alone, whatever the modes of the files in it.
    struct stat st{};
    REQUIRE(::stat(c.dir().file("data").c_str(), &st) == 0);
    CHECK((st.st_mode & 077) == 0);
  }
}
