// The gateway against what a web page of another origin, a DNS-rebinding page and a careless
// client send: each refused before it reaches a run, while the gateway's own page works.
#include "tests/e2e/cluster.hpp"
#include "tests/e2e/http_client.hpp"

#include <filesystem>
#include <tuple>
#include <map>
#include <thread>

using namespace keel;
using namespace keel::testing;
using nlohmann::json;

namespace {

const char* waiting_agent = R"(
[agents.coder]
script = "{dir}/coder.json"
[agents.coder.sandbox]
workspace = "{dir}/ws"
)";

const std::pair<std::string, std::string> waiting_script = {"coder.json", R"({"turns": [
    {"text": "Running.", "tool_calls": [{"name": "exec", "arguments": {"command": "echo ran > ran.txt"}}]},
    {"text": "Done."}]})"};

std::size_t runs_listed(const std::string& base) {
  auto listed = call("GET", base + "/api/v1/runs");
  auto body = listed.parsed();
  return body.contains("runs") ? body["runs"].size() : 0;
}

} // namespace

TEST_CASE("http guard: a page of another origin cannot start, approve or cancel, in any encoding", "[e2e][integration]") {
  cluster c(waiting_agent, {waiting_script}, cluster_options{false, {}, {}, true});
  auto base = c.gateway_url();
  auto host = base.substr(7);  // 127.0.0.1:port
  auto run = c.invoke("coder", "go");
  auto step = c.await_suspend(run);
  const std::string start = R"({"agent": "coder", "input": "from another page"})";
  const std::string approve = base + "/api/v1/runs/" + run + "/steps/" + step + "/approve";
  const std::string cancel = base + "/api/v1/runs/" + run + "/cancel";
  // What a page can send without a preflight: text/plain, a form, multipart, or no type at all.
  for (std::string type : {"Content-Type: text/plain", "Content-Type: application/x-www-form-urlencoded",
                                  "Content-Type: multipart/form-data; boundary=x", "Content-Type:"}) {
    INFO(type);
    for (const auto& url : {base + "/api/v1/runs", approve, cancel}) {
      auto answer = call("POST", url, url.find("/runs/") == std::string::npos ? start : "{}", {type});
      CHECK(answer.status == 415);
      CHECK(answer.parsed()["error"]["code"] == "malformed");
    }
  }
  // JSON, but from another page: its Origin or Sec-Fetch-Site says so.
  for (const std::vector<std::string>& from :
       {std::vector<std::string>{"Origin: http://evil.example"}, {"Origin: null"}, {"Origin: http://127.0.0.1:1"},
        {"Sec-Fetch-Site: cross-site"}, {"Sec-Fetch-Site: same-site"}, {"Sec-Fetch-Site: CROSS-SITE"},
        {"Sec-Fetch-Site: cross-site, same-origin"}, {"Sec-Fetch-Site: sideways"}}) {
    INFO(from[0]);
    CHECK(call("POST", base + "/api/v1/runs", start, from).status == 403);
    CHECK(call("POST", approve, "{}", from).status == 403);
    CHECK(call("GET", base + "/api/v1/approvals", "", from).status == 403);
  }
  // The same for the workflow routes that change something: a schedule made or removed, an event.
  const std::string schedule = R"({"name": "evil", "agent": "coder", "cron": "* * * * *"})";
  const std::vector<std::pair<std::string, std::string>> changes = {
    {"POST", base + "/api/v1/schedules"}, {"DELETE", base + "/api/v1/schedules/evil"}, {"POST", base + "/api/v1/runs/" + run + "/signals"},
    // Forks, reruns, replays and bulk actions (docs/FORKS.md): a bulk cancel of the waiting run
    // would end it, a fork would make a run.
    {"POST", base + "/api/v1/runs/" + run + "/fork"}, {"POST", base + "/api/v1/runs/" + run + "/rerun"},
    {"POST", base + "/api/v1/runs/" + run + "/replay"}, {"POST", base + "/api/v1/runs/bulk"}};
  auto body_for = [&](const std::string& method, const std::string& url) -> std::string {
    if (url.find("/signals") != std::string::npos) return R"({"name": "x"})";
    if (url.find("/fork") != std::string::npos) return R"({"at_step": 0})";
    if (url.find("/rerun") != std::string::npos) return R"({"from_step": 0})";
    if (url.find("/bulk") != std::string::npos) return R"({"action": "cancel", "run_ids": [")" + run + R"("]})";
    if (url.find("/replay") != std::string::npos) return "{}";
    return method == "POST" ? schedule : "{}";
  };
  for (const auto& [method, url] : changes) {
    INFO(method << " " << url);
    const std::string body = body_for(method, url);
    for (std::string type : {"Content-Type: text/plain", "Content-Type: application/x-www-form-urlencoded", "Content-Type:"})
      CHECK(call(method, url, body, {type}).status == 415);
    for (std::string from : {"Origin: http://evil.example", "Origin: null", "Sec-Fetch-Site: cross-site"})
      CHECK(call(method, url, body, {from}).status == 403);
  }
  CHECK(call("GET", base + "/api/v1/queues", "", {"Origin: http://evil.example"}).status == 403);
  CHECK(call("GET", base + "/api/v1/costs", "", {"Origin: http://evil.example"}).status == 403);
  CHECK(call("GET", base + "/api/v1/schedules", "").parsed()["schedules"].empty());  // none was made
  // Nothing happened: one run, still waiting on the same step.
  CHECK(runs_listed(base) == 1);
  CHECK(c.status(run) == "suspended");
  // The gateway's own page (its own origin, same-origin fetch metadata) does it all.
  std::vector<std::string> own = {"Origin: http://" + host, "Sec-Fetch-Site: same-origin", "Sec-Fetch-Mode: cors"};
  auto approved = call("POST", approve, "{}", own);
  INFO(approved.body);
  CHECK(approved.status == 200);
  c.await_status(run, "completed");
  // The controls: the same fork, replay and bulk preview sent from the gateway's own page work.
  for (const auto& [path, body, status] : std::vector<std::tuple<std::string, std::string, int>>{
         {"/api/v1/runs/" + run + "/fork", R"({"at_step": 0})", 201},
         {"/api/v1/runs/" + run + "/replay", "{}", 200},
         {"/api/v1/runs/bulk", R"({"action": "retry"})", 200}}) {
    auto own_answer = call("POST", base + path, body, own);
    INFO(path << " -> " << own_answer.body);
    CHECK(own_answer.status == status);
  }
  CHECK(call("GET", base + "/api/v1/costs", "", own).status == 200);
}

TEST_CASE("http guard: a request naming a host the gateway does not serve is refused, pages included", "[e2e][integration]") {
  cluster c(waiting_agent, {waiting_script}, cluster_options{false, {"gateway.hosts = [\"keel.internal\"]"}, {}, true});
  auto base = c.gateway_url();
  auto port = base.substr(base.rfind(':') + 1);
  // A DNS-rebinding page: its own name, resolved to this machine.
  for (std::string path : {"/", "/runs", "/app.js", "/api/v1/runs", "/api/v1/approvals", "/readyz"}) {
    INFO(path);
    auto rebound = call("GET", base + path, "", {"Host: evil.example:" + port});
    CHECK(rebound.status == 403);
    CHECK(rebound.body.find("not a name this gateway serves") != std::string::npos);
    CHECK(call("GET", base + path, "", {"Host: EVIL.example"}).status == 403);
  }
  // Its own names: loopback addresses, localhost, and what gateway.hosts lists.
  for (const std::string& name : std::vector<std::string>{"127.0.0.1:" + port, "localhost:" + port, "LocalHost",
                                                         "keel.internal:" + port, "[::1]:" + port, "dash.localhost"}) {
    INFO(name);
    CHECK(call("GET", base + "/api/v1/runs", "", {"Host: " + name}).status == 200);
  }
  // A Host that is not host[:port]: 400, whatever it names.
  for (const std::string& bad : std::vector<std::string>{"127.0.0.1:abc", "localhost:evil", "127.0.0.1:" + port + ":1",
                                                        "127.0.0.1:99999", "127.0.0.1:", "[::1", "[::1]x", "user@127.0.0.1",
                                                        "local host", "localhost/x"}) {
    INFO(bad);
    auto answer = call("GET", base + "/api/v1/runs", "", {"Host: " + bad});
    CHECK(answer.status == 400);
    CHECK(answer.parsed()["error"]["code"] == "malformed");
  }
  // A link from another site to a page still opens it (a navigation); nothing else from there does.
  CHECK(call("GET", base + "/", "", {"Sec-Fetch-Site: cross-site", "Sec-Fetch-Mode: navigate"}).status == 200);
  CHECK(call("GET", base + "/app.js", "", {"Sec-Fetch-Site: cross-site", "Sec-Fetch-Mode: no-cors"}).status == 403);
  // Health holds no data and answers whatever the name.
  CHECK(call("GET", base + "/healthz", "", {"Host: evil.example"}).status == 200);
}

TEST_CASE("http guard: tokens are named, added and revoked while the gateway runs, and an emptied tokens file opens nothing",
          "[e2e][integration]") {
  cluster c(waiting_agent, {waiting_script}, cluster_options{false, {}, {}, true});
  auto base = c.gateway_url();
  REQUIRE_EVENTUALLY(10'000, call("GET", base + "/readyz").status == 200);
  auto tokens = c.dir().file("gateway-tokens");
  // A second person gets a token with `keel token add`; it works at once, under its name.
  auto added = run_command({KEEL_BINARY, "token", "add", "bea", "--file", tokens});
  REQUIRE(added.exit_code == 0);
  auto bea = added.out.substr(0, added.out.find('\n'));
  CHECK(bea.rfind("keel_", 0) == 0);
  std::string as_bea = "Authorization: Bearer " + bea;
  REQUIRE_EVENTUALLY(3000, call("GET", base + "/api/v1/runs", "", {as_bea}).status == 200);
  // Only from the Authorization header: not from the query, not from a cookie.
  CHECK(call("GET", base + "/api/v1/runs?token=" + bea, "", {"Authorization:"}).status == 401);
  CHECK(call("GET", base + "/api/v1/runs?access_token=" + bea, "", {"Authorization:"}).status == 401);
  CHECK(call("GET", base + "/api/v1/runs", "", {"Authorization:", "Cookie: token=" + bea + "; keel-token=" + bea}).status == 401);
  auto started = call("POST", base + "/api/v1/runs", R"({"agent": "coder", "input": "go"})", {as_bea});
  REQUIRE(started.status == 201);
  auto run = started.parsed()["run_id"].get<std::string>();
  REQUIRE_EVENTUALLY(10'000, call("GET", base + "/api/v1/runs/" + run).parsed().contains("waiting"));
  auto step = call("GET", base + "/api/v1/runs/" + run).parsed()["waiting"]["step_key"].get<std::string>();
  // Who answers is the token's name, whatever the body says (a body naming someone is refused).
  CHECK(call("POST", base + "/api/v1/runs/" + run + "/steps/" + step + "/approve", R"({"by": "ceo"})", {as_bea}).status == 400);
  CHECK(call("POST", base + "/api/v1/runs/" + run + "/steps/" + step + "/reject", R"({"by": "ceo"})", {as_bea}).status == 400);
  CHECK(call("POST", base + "/api/v1/runs/" + run + "/cancel", R"({"by": "ceo"})", {as_bea}).status == 400);
  CHECK(call("POST", base + "/api/v1/runs/" + run + "/retry", R"({"by": "ceo"})", {as_bea}).status == 400);
  CHECK(call("POST", base + "/api/v1/runs", R"({"agent": "coder", "by": "ceo"})", {as_bea}).status == 400);
  REQUIRE(call("POST", base + "/api/v1/runs/" + run + "/steps/" + step + "/approve", "{}").status == 200);  // as tester
  c.await_status(run, "completed");
  auto events = call("GET", base + "/api/v1/runs/" + run + "/events").parsed()["events"];
  std::map<std::string, std::string> by;
  for (const auto& e : events) by[e["event_type"]] = e["data"].value("by", std::string{});
  CHECK(by["run_started"] == "bea");
  CHECK(by["resumed"] == "tester");
  // `keel token list` names both; removing bea's token shuts her out within a second or two.
  auto listed = run_command({KEEL_BINARY, "token", "list", "--file", tokens});
  CHECK(listed.out == "tester\nbea\n");
  REQUIRE(run_command({KEEL_BINARY, "token", "remove", "bea", "--file", tokens}).exit_code == 0);
  REQUIRE_EVENTUALLY(3000, call("GET", base + "/api/v1/runs", "", {as_bea}).status == 401);
  CHECK(call("GET", base + "/api/v1/runs").status == 200);  // tester still in
  // A tokens file emptied (or removed) leaves no token known: every request is refused, none open.
  REQUIRE(run_command({KEEL_BINARY, "token", "remove", "tester", "--file", tokens}).exit_code == 0);
  REQUIRE_EVENTUALLY(3000, call("GET", base + "/api/v1/runs").status == 401);
  auto none = call("GET", base + "/api/v1/runs", "", {"Authorization:"});
  CHECK(none.status == 401);
  CHECK(none.body.find("knows no token") != std::string::npos);
  std::filesystem::remove(tokens);
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  CHECK(call("GET", base + "/api/v1/runs", "", {"Authorization:"}).status == 401);
  CHECK(call("POST", base + "/api/v1/runs", R"({"agent": "coder"})", {"Authorization:"}).status == 401);
}
