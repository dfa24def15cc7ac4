#include "runtime/config.hpp"
#include "tests/support/test_support.hpp"

#include <toml++/toml.h>

#include <set>
#include <sys/stat.h>

using namespace keel;
using keel::testing::temp_dir;
using keel::testing::write_file;

namespace {

// Every leaf key of a TOML table, with agent ids replaced by '*' as the schema writes them.
void collect_keys(const toml::table& table, const std::string& prefix,
                  std::map<std::string, const toml::node*>& out) {
  for (const auto& [key, value] : table) {
    std::string path = prefix + std::string(key.str());
    if (prefix == "agents.") path = "agents.*";
    if (value.is_table()) collect_keys(*value.as_table(), path + ".", out);
    else out[path] = &value;
  }
}

bool same_value(const toml::node& a, const toml::node& b) {
  if (a.type() != b.type()) return false;
  if (const auto* x = a.as_array()) {
    const auto* y = b.as_array();
    if (x->size() != y->size()) return false;
    for (std::size_t i = 0; i < x->size(); ++i)
      if (!same_value(*x->get(i), *y->get(i))) return false;
    return true;
  }
  if (a.is_string()) return a.value<std::string>() == b.value<std::string>();
  if (a.is_integer()) return a.value<std::int64_t>() == b.value<std::int64_t>();
  if (a.is_boolean()) return a.value<bool>() == b.value<bool>();
  if (a.is_floating_point()) return a.value<double>() == b.value<double>();
  return false;
}

std::string error_of(std::string_view text) {
  auto loaded = config::load_string(text, "node.toml");
  REQUIRE_FALSE(loaded.ok());
  CHECK(loaded.error().code == errc::config);
  return loaded.error().message;
}

} // namespace

TEST_CASE("config: an empty file gives every default", "[runtime][config]") {
  auto c = config::load_string("", "empty.toml");
  REQUIRE(c.ok());
  CHECK(c->roles.size() == 3);
  CHECK(c->has_role(config::role::orchestrator));
  CHECK(c->nats_servers == std::vector<std::string>{"nats://127.0.0.1:4222"});
  CHECK(c->prefix == "keel");
  CHECK(c->ns == "default");
  CHECK(c->fsync);
  CHECK(c->message_bytes_max == 1 << 20);
  CHECK(c->agents.empty());
}

TEST_CASE("config: reference.toml lists every key of the schema with its default",
          "[runtime][config]") {
  auto table = toml::parse_file(KEEL_SOURCE_DIR "/configs/reference.toml");
  std::map<std::string, const toml::node*> keys;
  collect_keys(table, "", keys);
  std::set<std::string> schema_paths;
  for (const auto& info : config::schema()) {
    schema_paths.insert(info.path);
    INFO("schema key " << info.path);
    REQUIRE(keys.count(info.path) == 1);
    // The value in the file equals the schema default, compared as parsed TOML.
    auto expected = toml::parse("value = " + info.default_toml);
    CHECK(same_value(*expected.get("value"), *keys[info.path]));
  }
  for (const auto& [path, node] : keys) {
    INFO("reference.toml key " << path);
    CHECK(schema_paths.count(path) == 1);
  }
  // And the file loads as a valid config.
  CHECK(config::load_file(KEEL_SOURCE_DIR "/configs/reference.toml").ok());
}

TEST_CASE("config: the example configs load", "[runtime][config]") {
  for (auto name : {"dev.toml", "orchestrator.toml", "worker.toml"}) {
    INFO(name);
    auto c = config::load_file(std::string(KEEL_SOURCE_DIR "/configs/") + name);
    INFO((c ? std::string() : c.error().message));
    CHECK(c.ok());
  }
}

TEST_CASE("config: an unknown key is an error naming the file, the line and the key",
          "[runtime][config]") {
  auto message = error_of("[nats]\nprefix = \"a\"\nservr = [\"nats://x:1\"]\n");
  CHECK(message == "node.toml:3: nats.servr: unknown key (configs/reference.toml lists every key)");
  CHECK(error_of("colour = 1\n").find("node.toml:1: colour: unknown key") == 0);
}

TEST_CASE("config: a value of the wrong type says what was expected", "[runtime][config]") {
  CHECK(error_of("[nats]\nservers = \"nats://x:1\"\n") ==
        "node.toml:2: nats.servers: expected an array of strings, got a string");
  CHECK(error_of("[durability]\nfsync = \"yes\"\n") ==
        "node.toml:2: durability.fsync: expected true or false, got a string");
  CHECK(error_of("[limits]\nheartbeat_interval_ms = 1.5\n") ==
        "node.toml:2: limits.heartbeat_interval_ms: expected an integer, got a float");
  CHECK(error_of("nats = 3\n").find("nats: unknown key") != std::string::npos);
}

TEST_CASE("config: values out of range or not among the choices are errors", "[runtime][config]") {
  CHECK(error_of("[limits]\nheartbeat_interval_ms = 1\n") ==
        "node.toml:2: limits.heartbeat_interval_ms: expected an integer from 50 to 60000, got 1");
  CHECK(error_of("[node]\nroles = [\"boss\"]\n") ==
        "node.toml:2: node.roles: expected one of \"orchestrator\" \"worker\" \"gateway\", got \"boss\"");
  CHECK(error_of("[node]\nroles = []\n") == "node.toml:2: node.roles: expected at least one role");
  CHECK(error_of("[nats]\nservers = [\"http://x\"]\n").find("starting with nats://") !=
        std::string::npos);
  CHECK(error_of("[nats]\nservers = []\n") == "node.toml: nats.servers: expected at least one server URL");
  CHECK(error_of("[nats]\nprefix = \"a.b\"\n").find("nats.prefix: expected a name") !=
        std::string::npos);
  CHECK(error_of("[log]\nlevel = \"loud\"\n").find("log.level: expected one of") != std::string::npos);
}

TEST_CASE("config: a disk reserve too small for the memtables' flushes is refused, 0 turns it off",
          "[runtime][config]") {
  // A memtable flush needs room for the memtable as a file: the reserve must hold four.
  CHECK(error_of("[durability]\nmemtable_bytes = 16777216\ndisk_reserve_bytes = 33554432\n") ==
        "node.toml: durability.disk_reserve_bytes: 33554432 is less than four memtables (4 x 16777216): a flush "
        "of the memtables could meet a full disk; raise it, or 0 for no check");
  CHECK(error_of("[durability]\ndisk_reserve_bytes = -1\n").find("expected an integer from 0") != std::string::npos);
  auto off = config::load_string("[durability]\ndisk_reserve_bytes = 0\n", "x.toml");
  REQUIRE(off.ok());
  CHECK(off->disk_reserve_bytes == 0);
  auto small = config::load_string("[durability]\nmemtable_bytes = 1048576\ndisk_reserve_bytes = 4194304\n", "x.toml");
  REQUIRE(small.ok());
  CHECK(config::load_string("", "x.toml")->disk_reserve_bytes == 256 << 20);
}

TEST_CASE("config: agents get the defaults of every key they leave out", "[runtime][config]") {
  auto c = config::load_string(
    "[agents.coder]\nmodel = \"m\"\n[agents.ops]\nmax_steps = 5\nqueue = \"shared\"\n", "x.toml");
  REQUIRE(c.ok());
  REQUIRE(c->agents.size() == 2);
  const auto* coder = c->find_agent("coder");
  REQUIRE(coder);
  CHECK(coder->provider == "scripted");
  CHECK(coder->max_steps == 30);
  CHECK(coder->queue == "coder");
  CHECK(coder->tools.size() == 6);
  CHECK(c->find_agent("ops")->queue == "shared");
  CHECK(c->find_agent("nobody") == nullptr);
}

TEST_CASE("config: a bad agent key or tool is an error naming the agent", "[runtime][config]") {
  CHECK(error_of("[agents.coder]\ntools = [\"exec\", \"teleport\"]\n")
          .find("agents.coder.tools: expected one of") != std::string::npos);
  CHECK(error_of("[agents.coder]\nprovider = \"oracle\"\n").find("agents.coder.provider") !=
        std::string::npos);
  CHECK(error_of("[agents.coder]\nmodle = \"x\"\n") ==
        "node.toml:2: agents.coder.modle: unknown key (configs/reference.toml lists every key)");
  CHECK(error_of("[agents.\"bad id\"]\nmodel = \"x\"\n").find("agent id") != std::string::npos);
}

TEST_CASE("config: workflow keys load, and each bad value names its key", "[runtime][config]") {
  auto c = config::load_string("[agents.ops]\nworkflow_tools = [\"sleep\", \"wait_for_event\"]\nrun_timeout_ms = 60000\n"
                               "approval_timeout_ms = 5000\napproval_timeout_answer = \"fail\"\n"
                               "approval_escalate_after_ms = 1000\napproval_escalate_to = \"#ops\"\n", "node.toml");
  REQUIRE(c.ok());
  const auto& a = c->agents.at(0);
  CHECK(a.workflow_tools == std::vector<std::string>{"sleep", "wait_for_event"});
  CHECK(a.run_timeout_ms == 60000);
  CHECK(a.approval_timeout_answer == "fail");
  CHECK(a.approval_escalate_to == "#ops");
  CHECK(a.wait_max_ms == 30LL * 86'400'000);
  CHECK(error_of("[agents.ops]\nworkflow_tools = [\"nap\"]\n").find("agents.ops.workflow_tools") != std::string::npos);
  CHECK(error_of("[agents.ops]\napproval_timeout_answer = \"maybe\"\n").find("agents.ops.approval_timeout_answer") != std::string::npos);
  CHECK(error_of("[agents.ops]\nrun_timeout_ms = -1\n").find("agents.ops.run_timeout_ms") != std::string::npos);
  CHECK(error_of("[agents.ops]\nwait_max_ms = 10\n").find("agents.ops.wait_max_ms") != std::string::npos);
  // A waiting tool's name taken twice, or by a command tool: the model could not tell them apart.
  CHECK(error_of("[agents.ops]\nworkflow_tools = [\"sleep\", \"sleep\"]\n").find("listed twice") != std::string::npos);
  CHECK(error_of("[agents.ops]\nworkflow_tools = [\"sleep\"]\n[agents.ops.commands.sleep]\nargv = [\"sleep\", \"1\"]\n")
          .find("command tool \"sleep\" has the name of a tool the agent lists") != std::string::npos);
}

TEST_CASE("config: schedules load with their cron and zone checked, and every mistake names its key", "[runtime][config]") {
  const std::string agent = "[agents.a]\n";
  auto c = config::load_string(agent + "[schedules.nightly]\nagent = \"a\"\ncron = \"0 2 * * MON-FRI\"\n"
                               "timezone = \"America/New_York\"\ninput = \"Report for {{tick}}\"\nmissed = \"catch_up\"\n", "node.toml");
  REQUIRE(c.ok());
  REQUIRE(c->schedules.size() == 1);
  CHECK(c->schedules[0].timezone == "America/New_York");
  CHECK(c->schedules[0].missed == "catch_up");
  CHECK(c->schedules[0].catch_up_max == 10);
  CHECK(error_of(agent + "[schedules.x]\nagent = \"a\"\ncron = \"61 * * * *\"\n").find("schedules.x.cron") != std::string::npos);
  CHECK(error_of(agent + "[schedules.x]\nagent = \"a\"\ncron = \"@daily\"\ntimezone = \"Mars/Base\"\n").find("schedules.x.timezone") != std::string::npos);
  CHECK(error_of(agent + "[schedules.x]\nagent = \"b\"\ncron = \"@daily\"\n").find("schedules.x.agent") != std::string::npos);
  CHECK(error_of(agent + "[schedules.x]\nagent = \"a\"\ncron = \"@daily\"\nmissed = \"run\"\n").find("schedules.x.missed") != std::string::npos);
  CHECK(error_of(agent + "[schedules.x]\nagent = \"a\"\ncron = \"@daily\"\ncolor = 1\n").find("schedules.x.color") != std::string::npos);
  CHECK(error_of(agent + "[schedules.\"a b\"]\nagent = \"a\"\n").find("schedules.a b") != std::string::npos);
}

TEST_CASE("config: run queues load with their limits, an agent names one that exists, and every mistake names its key", "[runtime][config]") {
  auto c = config::load_string("[run_queues.deploys]\nconcurrency = 2\nkey_concurrency = 1\n"
                               "[agents.a]\nrun_queue = \"deploys\"\nstep_timeout_ms = 60000\n", "node.toml");
  REQUIRE(c.ok());
  REQUIRE(c->run_queues.size() == 1);
  CHECK(c->run_queues[0].concurrency == 2);
  CHECK(c->run_queues[0].key_concurrency == 1);
  CHECK(c->run_queues[0].waiting_max == 1000);
  CHECK(c->agents[0].run_queue == "deploys");
  CHECK(c->agents[0].step_timeout_ms == 60000);
  CHECK(c->agents[0].queue == "a");  // its worker queue is another thing
  CHECK(error_of("[agents.a]\nrun_queue = \"nope\"\n").find("agents.a.run_queue") != std::string::npos);
  CHECK(error_of("[run_queues.q]\nconcurrency = 0\n").find("run_queues.q.concurrency") != std::string::npos);
  CHECK(error_of("[run_queues.q]\nkey_concurrency = -1\n").find("run_queues.q.key_concurrency") != std::string::npos);
  CHECK(error_of("[run_queues.q]\nwaiting_max = 5001\n").find("run_queues.q.waiting_max") != std::string::npos);
  CHECK(error_of("[run_queues.q]\nlimit = 3\n").find("run_queues.q.limit") != std::string::npos);
  CHECK(error_of("[run_queues.\"a b\"]\n").find("run_queues.a b") != std::string::npos);
  CHECK(error_of("[agents.a]\nstep_timeout_ms = -5\n").find("agents.a.step_timeout_ms") != std::string::npos);
  // A run holding a slot while its child (or grandchild) waits in the same queue would wait for good.
  const std::string q = "[run_queues.q]\n";
  CHECK(error_of(q + "[agents.a]\nrun_queue = \"q\"\nsub_agents = [\"b\"]\n[agents.b]\nrun_queue = \"q\"\n")
          .find("agents.a.run_queue: its sub-agents") != std::string::npos);
  CHECK(error_of(q + "[agents.a]\nrun_queue = \"q\"\nsub_agents = [\"b\"]\n[agents.b]\nsub_agents = [\"c\"]\n[agents.c]\nrun_queue = \"q\"\n")
          .find("agents.a.run_queue") != std::string::npos);
  CHECK(config::load_string(q + "[run_queues.r]\n[agents.a]\nrun_queue = \"q\"\nsub_agents = [\"b\"]\n[agents.b]\nrun_queue = \"r\"\n",
                            "node.toml").ok());
}

TEST_CASE("config: webhooks name one way to authenticate, and every mistake names its key", "[runtime][config]") {
  const std::string agent = "[agents.a]\n";
  auto c = config::load_string(agent + "[webhooks.gh]\nagent = \"a\"\nsecret_file = \"/etc/keel/gh.secret\"\n"
                               "signature_header = \"X-Hub-Signature-256\"\nidempotency_header = \"X-GitHub-Delivery\"\n", "node.toml");
  REQUIRE(c.ok());
  REQUIRE(c->webhooks.size() == 1);
  CHECK(c->webhooks[0].input == "{{body}}");
  CHECK(error_of(agent + "[webhooks.x]\nagent = \"a\"\n").find("webhooks.x: expected one of secret_file") != std::string::npos);
  CHECK(error_of(agent + "[webhooks.x]\nagent = \"a\"\nsecret_file = \"s\"\ntoken_file = \"t\"\n").find("webhooks.x") != std::string::npos);
  CHECK(error_of(agent + "[webhooks.x]\nagent = \"b\"\ntoken_file = \"t\"\n").find("webhooks.x.agent") != std::string::npos);
  CHECK(error_of(agent + "[webhooks.x]\nagent = \"a\"\ntoken_file = \"t\"\nidempotency_header = \"X: y\"\n")
          .find("webhooks.x.idempotency_header") != std::string::npos);
  CHECK(error_of(agent + "[webhooks.x]\nagent = \"a\"\ntoken_file = \"t\"\nverify = false\n").find("webhooks.x.verify") != std::string::npos);
}

TEST_CASE("config: worker slots and liveness are bounded, and the old lease keys are refused", "[runtime][config]") {
  auto c = config::load_string("[worker]\nslots = 3\nliveness_ms = 2000\n", "node.toml");
  REQUIRE(c.ok());
  CHECK(c->worker_slots == 3);
  CHECK(c->worker_liveness_ms == 2000);
  CHECK(error_of("[worker]\nslots = 0\n").find("node.toml") != std::string::npos);
  CHECK(error_of("[worker]\nslots = 0\n").find("worker.slots") != std::string::npos);
  CHECK(error_of("[worker]\nliveness_ms = 10\n").find("worker.liveness_ms") != std::string::npos);
  // Leases sized for the slowest call are gone: liveness decides; a config that sets one says so.
  CHECK(error_of("[limits]\nllm_lease_ms = 1000\n").find("limits.llm_lease_ms") != std::string::npos);
}

TEST_CASE("config: --set overrides apply after the file and are checked the same way",
          "[runtime][config]") {
  auto c = config::load_string("[nats]\nprefix = \"a\"\n", "x.toml",
                               {"nats.prefix = \"b\"", "node.roles = [\"worker\"]"});
  REQUIRE(c.ok());
  CHECK(c->prefix == "b");
  CHECK(c->roles == std::vector<config::role>{config::role::worker});
  auto bad = config::load_string("", "x.toml", {"nats.prefx = \"b\""});
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().message.find("--set 'nats.prefx = \"b\"'") == 0);
}

TEST_CASE("config: invalid TOML and a missing file are clear errors", "[runtime][config]") {
  CHECK(error_of("[nats\n").find("node.toml:1: not valid TOML") == 0);
  temp_dir dir;
  auto missing = config::load_file(dir.file("none.toml"));
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error().message == dir.file("none.toml") + ": cannot read the file");
  write_file(dir.file("ok.toml"), "[node]\nname = \"n1\"\n");
  auto ok = config::load_file(dir.file("ok.toml"));
  REQUIRE(ok.ok());
  CHECK(ok->node_name == "n1");
}

// Malformed TOML of every kind the fuzzer tried on the loader (tests/fuzz/config_fuzz.cpp): a
// clear error naming the file, never a crash.
TEST_CASE("config: malformed table headers and keys are errors that name the file", "[config]") {
  for (const char* text : {"[$ats]\nservers = []\n", "[\nats]\n", "[", "[a.$]\n", "[[x\n", "a.$ = 1\n", "$ = 1\n",
                           "[nats]\nservers = [\"nats://x\"\n", "[agents.\"\"]\n", "\xff\xfe[nats]\n"}) {
    INFO(text);
    auto loaded = keel::config::load_string(text, "bad.toml");
    REQUIRE_FALSE(loaded.ok());
    CHECK(loaded.error().message.find("bad.toml") != std::string::npos);
  }
}

TEST_CASE("config: a secret is refused on the command line and in a file others may read", "[runtime][config]") {
  temp_dir dir;
  std::string path = dir.file("node.toml");
  write_file(path, "[gateway]\ntoken = \"s3cret\"\n");
  ::chmod(path.c_str(), 0644);
  auto readable = config::load_file(path);
  REQUIRE_FALSE(readable.ok());
  CHECK(readable.error().message == path + ": holds gateway.token but others may read it (mode 0644): chmod 600 " + path);
  ::chmod(path.c_str(), 0600);
  auto own = config::load_file(path);
  REQUIRE(own.ok());
  CHECK(own->gateway_token == "s3cret");
  write_file(dir.file("plain.toml"), "");
  auto on_line = config::load_file(dir.file("plain.toml"), {"gateway.token=\"x\""});
  REQUIRE_FALSE(on_line.ok());
  CHECK(on_line.error().message.find("--set gateway.token: a secret is not given on the command line") == 0);
}

TEST_CASE("config: an agent lists declared tools as <queue>.<tool>, and two tools the model would call alike are refused", "[runtime]") {
  auto base = std::string("[node]\nroles = [\"worker\"]\n[nats]\nservers = [\"nats://127.0.0.1:4222\"]\n[agents.desk]\n");
  auto ok = config::load_string(base + "tools = [\"read\", \"tickets.lookup_ticket\", \"crm.find-customer\"]\n", "node.toml");
  REQUIRE(ok.ok());
  CHECK(ok->agents[0].tools == std::vector<std::string>{"read", "tickets.lookup_ticket", "crm.find-customer"});
  auto refused = [&](const std::string& tools) {
    auto c = config::load_string(base + "tools = " + tools + "\n", "node.toml");
    REQUIRE_FALSE(c.ok());
    return c.error().message;
  };
  CHECK(refused("[\"tickets.read\", \"read\"]").find("two tools would both be called \"read\" by the model") != std::string::npos);
  CHECK(refused("[\"a.x\", \"b.x\"]").find("two tools would both be called \"x\"") != std::string::npos);
  CHECK(refused("[\"tickets.\"]").find("<queue>.<tool>") != std::string::npos);
  CHECK(refused("[\"a b.x\"]").find("<queue>.<tool>") != std::string::npos);
  CHECK(refused("[\"a.b.c\"]").find("<queue>.<tool>") != std::string::npos);
  CHECK(refused("[\"shell\"]").find("one of \"exec\"") != std::string::npos);
}
