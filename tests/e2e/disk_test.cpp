// A node whose data directory is on a small tmpfs that fills up: it refuses new runs with "disk
// full", keeps answering reads, loses nothing it acknowledged, and goes on by itself once space is
// freed. Mounting a tmpfs needs root; elsewhere the test says so and does nothing.
#include "tests/e2e/cluster.hpp"
#include "runtime/wire.hpp"

#include <sys/statvfs.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

using namespace keel;
using namespace keel::testing;
using nlohmann::json;

namespace {

// A tmpfs of `mib` MiB mounted at a fresh directory for the test's lifetime.
class small_disk {
public:
  explicit small_disk(int mib) {
    auto r = run_command({"mount", "-t", "tmpfs", "-o", "size=" + std::to_string(mib) + "m", "keel-test", dir_.path()});
    mounted_ = r.exit_code == 0;
    why_ = r.err;
  }
  ~small_disk() {
    if (mounted_) run_command({"umount", "-l", dir_.path()});
  }
  bool mounted() const { return mounted_; }
  const std::string& why() const { return why_; }
  std::string file(const std::string& name) const { return dir_.file(name); }
  void resize(int mib) {
    auto r = run_command({"mount", "-o", "remount,size=" + std::to_string(mib) + "m", dir_.path()});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
  }
  std::uint64_t free_bytes() const {
    struct statvfs fs{};
    REQUIRE(::statvfs(dir_.path().c_str(), &fs) == 0);
    return static_cast<std::uint64_t>(fs.f_bavail) * fs.f_frsize;
  }
  // Another program takes the space: a file that leaves `leave` bytes free, topped up until
  // the database's own deletions (a flushed log, compacted files) are over.
  void fill_leaving(std::uint64_t leave) {
    for (int i = 0; i < 20; ++i) {
      fill_once(leave);
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
      if (free_bytes() <= leave + (256 << 10)) return;
    }
  }
  void fill_once(std::uint64_t leave) {
    auto free = free_bytes();
    if (free <= leave) return;
    std::ofstream out(file("filler"), std::ios::binary | std::ios::app);
    std::string block(1 << 16, 'f');
    for (std::uint64_t left = free - leave; left > 0;) {
      auto n = std::min<std::uint64_t>(left, block.size());
      out.write(block.data(), static_cast<std::streamsize>(n));
      left -= n;
    }
  }
  void remove_filler() { std::remove(file("filler").c_str()); }

private:
  temp_dir dir_;
  bool mounted_ = false;
  std::string why_;
};

const char* agents = R"(
[agents.coder]
script = "{dir}/coder.json"
[agents.coder.sandbox]
workspace = "{dir}/ws"

[agents.sleeper]
script = "{dir}/sleeper.json"
script_log = "{dir}/sleeper-calls.log"
[agents.sleeper.sandbox]
workspace = "{dir}/ws"
scope = "agent"
exec_security = "allow-always"
)";

const std::vector<std::pair<std::string, std::string>> scripts = {
  {"coder.json", R"({"turns": [
    {"text": "Writing.", "tool_calls": [{"name": "write", "arguments": {"path": "a.txt", "content": "a"}}]},
    {"text": "Running.", "tool_calls": [{"name": "exec", "arguments": {"command": "cat a.txt"}}]},
    {"text": "Done."}
  ]})"},
  {"sleeper.json", R"({"turns": [
    {"text": "", "tool_calls": [{"name": "exec", "arguments": {"command": "echo $KEEL_TASK_ID >> side.txt; while [ ! -e release ]; do sleep 0.1; done; head -c 300000 /dev/zero | tr '\\0' x"}}]},
    {"text": "Slept."}
  ]})"}};

cluster_options on(const small_disk& disk) {
  cluster_options o;
  o.data_dir = disk.file("data");
  // Small memtables, so that flushes happen on a disk this small; new runs stop at 8 MiB free.
  o.node_sets = {"durability.memtable_bytes = 1048576", "durability.disk_reserve_bytes = 8388608"};
  return o;
}

// Whether the test can go on: a tmpfs needs root to be mounted (elsewhere the test says so).
bool usable(const small_disk& disk) {
  if (!disk.mounted()) WARN("a tmpfs cannot be mounted here (root is needed): " << disk.why());
  return disk.mounted();
}

} // namespace

TEST_CASE("disk full: a node refuses new runs with 'disk full', answers reads, loses nothing acknowledged, and goes on once space is freed",
          "[e2e][disk]") {
  small_disk disk(32);
  if (!usable(disk)) return;
  cluster c(agents, scripts, on(disk));
  std::filesystem::create_directories(c.dir().file("ws"));
  std::ofstream(c.dir().file("ws/release")) << "go\n";  // the sleeper's commands need not wait here
  // Inputs of 400 KB (random letters, which compress little) fill the disk down to the reserve
  // within a few dozen runs. They are sent as a client program would, over NATS: one process
  // for the lot, not one per run.
  std::string big(400'000, ' ');
  std::uint64_t x = 88172645463325252ull;
  for (auto& ch : big) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    ch = static_cast<char>('a' + x % 26);
  }
  std::vector<std::string> acknowledged;
  // One made with an idempotency key, asked for again once the disk is full.
  auto keyed = c.keel({"invoke", "sleeper", "first", "--idempotency-key", "k1"});
  REQUIRE(keyed.exit_code == 0);
  auto client = c.connect_client();
  std::string first_refusal;
  for (int i = 0; i < 200; ++i) {
    auto reply = client->request("keel.default.invoke.tester", wire::encode(wire::invoke_request{"coder", big + std::to_string(i)}), 30'000);
    REQUIRE(reply.ok());
    auto made = wire::decode<wire::invoke_reply>(reply->data);
    if (!made) {
      first_refusal = made.error().message;
      break;
    }
    acknowledged.push_back(made->run_id);
  }
  INFO("refused: " << first_refusal);
  REQUIRE(!first_refusal.empty());
  REQUIRE(acknowledged.size() >= 10);
  // A clear error, naming the cause, the setting and what happens next.
  CHECK(first_refusal.find("disk full") != std::string::npos);
  CHECK(first_refusal.find("durability.disk_reserve_bytes") != std::string::npos);
  // The database frees some space by itself (a flush drops its log): held under the reserve
  // by another program, the disk refuses every agent's new runs.
  disk.fill_leaving(6 << 20);
  // The same on the command line, for every agent.
  for (const char* agent : {"sleeper", "coder"}) {
    disk.fill_leaving(6 << 20);  // kept under the reserve: the database frees space as it compacts
    auto again = c.keel({"invoke", agent, "go"});
    INFO(again.err);
    CHECK(again.exit_code != 0);
    CHECK(again.err.find("disk full") != std::string::npos);
    CHECK(again.err.find("durability.disk_reserve_bytes") != std::string::npos);
    CHECK(again.err.find("no orchestrator") == std::string::npos);
  }
  // A repeated invoke makes nothing: it gets its run, full disk or not; a new key is refused.
  auto repeated = c.keel({"invoke", "sleeper", "first", "--idempotency-key", "k1"});
  INFO(repeated.err);
  CHECK(repeated.exit_code == 0);
  CHECK(repeated.out == keyed.out);
  disk.fill_leaving(6 << 20);
  auto fresh_key = c.keel({"invoke", "sleeper", "second", "--idempotency-key", "k2"});
  CHECK(fresh_key.exit_code != 0);
  CHECK(fresh_key.err.find("disk full") != std::string::npos);

  // Reads go on: every acknowledged run is there and comes to wait for its approval.
  for (const auto& id : acknowledged) c.await_status(id, "suspended", 30'000);
  auto listed = c.keel({"runs", "--status", "suspended", "--limit", "1000", "--json"});
  INFO(listed.err);
  REQUIRE(listed.exit_code == 0);
  CHECK(c.events(acknowledged.front()).size() >= 2);

  // Another program takes what is left: now writes of the runs there are wait too. An approval
  // is refused with "disk full" (and can be given again), never half done.
  disk.fill_leaving(1 << 20);
  auto write_step = c.await_suspend(acknowledged.front());
  auto blocked = c.keel({"approve", acknowledged.front(), write_step});
  CHECK(blocked.exit_code != 0);
  CHECK(blocked.err.find("disk full") != std::string::npos);
  CHECK(c.status(acknowledged.front()) == "suspended");

  // Space comes back (the filler goes, the disk grows): new runs are taken again without a
  // restart, and every acknowledged run goes on to its end.
  disk.remove_filler();
  disk.resize(96);
  std::string fresh;
  auto invoke_again = [&] {
    auto r = c.keel({"invoke", "sleeper", "go"});
    if (r.exit_code == 0) fresh = r.out.substr(0, r.out.size() - 1);
    return r.exit_code == 0;
  };
  REQUIRE_EVENTUALLY(20'000, invoke_again());
  // The key refused while the disk was full makes its run now, once.
  auto k2 = c.keel({"invoke", "sleeper", "second", "--idempotency-key", "k2"});
  INFO(k2.err);
  REQUIRE(k2.exit_code == 0);
  CHECK(c.keel({"invoke", "sleeper", "second", "--idempotency-key", "k2"}).out == k2.out);
  c.await_status(k2.out.substr(0, k2.out.size() - 1), "completed", 30'000);
  for (const auto& id : acknowledged) {
    auto step = c.await_suspend(id);
    auto approved = c.keel({"approve", id, step});
    INFO(approved.err);
    REQUIRE(approved.exit_code == 0);
  }
  for (const auto& id : acknowledged) {
    auto step = c.await_suspend(id);
    REQUIRE(c.keel({"approve", id, step}).exit_code == 0);
  }
  for (const auto& id : acknowledged) c.await_status(id, "completed", 30'000);
  c.await_status(fresh, "completed", 30'000);
  // The node never restarted.
  CHECK(c.node_log().find("started") == c.node_log().rfind("started"));
}

TEST_CASE("disk full: a step in flight when the disk fills is kept and goes on by itself once space is freed, its command run once",
          "[e2e][disk]") {
  small_disk disk(32);
  if (!usable(disk)) return;
  cluster c(agents, scripts, on(disk));
  std::vector<std::string> runs;
  for (int i = 0; i < 5; ++i) runs.push_back(c.invoke("sleeper", "go " + std::to_string(i)));
  // Every command has started (each waits for the file `release`, then prints 300 KB): the disk
  // fills under them, then they are let go.
  REQUIRE_EVENTUALLY(15'000, lines_of(read_file(c.dir().file("ws/side.txt"))).size() == runs.size());
  disk.fill_leaving(1 << 20);
  {
    std::ofstream(c.dir().file("ws/release")) << "go\n";
  }
  // The results cannot be written: the runs wait, none fails. Meanwhile a second worker handed one
  // of these tasks (the broker did not hear the first one's "in progress") asks whether it is
  // still wanted: it is told to ask again, never to run it (that would run the command twice),
  // for as long as the first worker offers its result.
  std::this_thread::sleep_for(std::chrono::seconds(1));
  auto raw = c.connect_client();
  std::map<std::string, int> answers;
  for (auto until = steady_ms() + 4000; steady_ms() < until;) {
    for (const auto& line : lines_of(read_file(c.dir().file("ws/side.txt")))) {
      // KEEL_TASK_ID: "<run>/<step>"; the first attempt (nothing failed).
      auto slash = line.find('/');
      REQUIRE(slash != std::string::npos);
      auto run = line.substr(0, slash);
      auto request = wire::pack(wire::value{{"v", 1}, {"type", "task_wanted"},
                                            {"step", std::stoull(line.substr(slash + 1))}, {"attempt", 1}});
      auto reply = raw->request("keel.default.runs." + run + ".task_wanted", request, 3000);
      REQUIRE(reply.ok());
      auto v = wire::unpack(reply->data);
      REQUIRE(v.ok());
      // Told to ask again because the result is being written (not merely "being loaded": a run
      // reloading after a failed write would say so whether or not a result was in hand).
      std::string said = "wanted " + v->value("wanted", json()).dump();
      if (v->value("type", std::string{}) == "error") {
        said = (*v)["error"].value("code", std::string{});
        if ((*v)["error"].value("message", std::string{}).find("is being written") != std::string::npos) said += " (held)";
      }
      answers[said] += 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  INFO([&] { std::string s; for (const auto& [a, n] : answers) s += a + ": " + std::to_string(n) + "\n"; return s; }());
  CHECK(answers.size() == 1);
  CHECK(answers["unavailable (held)"] > 0);
  for (const auto& id : runs) CHECK(c.status(id) == "running");
  disk.remove_filler();
  for (const auto& id : runs) c.await_status(id, "completed", 60'000);
  // Each command ran once; each model step was called once.
  CHECK(lines_of(read_file(c.dir().file("ws/side.txt"))).size() == runs.size());
  std::map<std::string, int> calls;
  for (const auto& line : lines_of(read_file(c.dir().file("sleeper-calls.log")))) calls[line.substr(0, line.find(' '))] += 1;
  CHECK(calls.size() == 2 * runs.size());
  for (const auto& [step, n] : calls) {
    INFO(step);
    CHECK(n == 1);
  }
}
