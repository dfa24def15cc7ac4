// The gateway's HTTP API against a real node and nats-server, over real HTTP (libcurl).
#include "tests/e2e/cluster.hpp"

#include <curl/curl.h>

using namespace keel;
using namespace keel::testing;
using nlohmann::json;

namespace {

struct http_answer {
  long status = 0;
  std::string body;
  std::map<std::string, std::string> headers;  // names lower-cased
  json parsed() const { return json::parse(body, nullptr, false); }
};

http_answer call(const std::string& method, const std::string& url, const std::string& body = "",
                 const std::vector<std::string>& extra_headers = {}) {
  http_answer out;
  CURL* curl = curl_easy_init();
  REQUIRE(curl);
  curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
  for (const auto& h : extra_headers) headers = curl_slist_append(headers, h.c_str());
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  if (method == "POST") curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.c_str());
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 20000L);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, +[](char* data, size_t size, size_t count, void* to) {
    static_cast<std::string*>(to)->append(data, size * count);
    return size * count;
  });
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &out.body);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, +[](char* data, size_t size, size_t count, void* to) {
    std::string line(data, size * count);
    auto colon = line.find(':');
    if (colon != std::string::npos) {
      std::string name = line.substr(0, colon);
      for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      auto value = line.substr(colon + 1);
      while (!value.empty() && (value.front() == ' ')) value.erase(0, 1);
      while (!value.empty() && (value.back() == '\n' || value.back() == '\r')) value.pop_back();
      (*static_cast<std::map<std::string, std::string>*>(to))[name] = value;
    }
    return size * count;
  });
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &out.headers);
  auto code = curl_easy_perform(curl);
  INFO(curl_easy_strerror(code));
  REQUIRE(code == CURLE_OK);
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &out.status);
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  return out;
}

const char* coder = R"(
[agents.coder]
script = "{dir}/coder.json"
[agents.coder.sandbox]
workspace = "{dir}/ws"
)";
const std::pair<std::string, std::string> coder_script = {"coder.json", R"({"turns": [
    {"text": "Writing.", "tool_calls": [{"name": "write", "arguments": {"path": "hello.txt", "content": "hi\n"}}]},
    {"text": "Running.", "tool_calls": [{"name": "exec", "arguments": {"command": "cat hello.txt"}}]},
    {"text": "Done: {{last_tool_result}}"}
  ]})"};

} // namespace

TEST_CASE("http api: runs are started, listed, shown, followed and answered over HTTP", "[e2e][integration]") {
  cluster c(coder, {coder_script}, cluster_options{false, {}, {}, true});
  auto base = c.gateway_url();
  REQUIRE_EVENTUALLY(10'000, call("GET", base + "/readyz").status == 200);
  auto health = call("GET", base + "/healthz");
  CHECK(health.status == 200);
  CHECK(health.headers["x-frame-options"] == "DENY");
  CHECK(health.headers["content-security-policy"].find("frame-ancestors 'none'") != std::string::npos);
  CHECK(health.headers.count("access-control-allow-origin") == 0);  // no CORS

  auto created = call("POST", base + "/api/v1/runs", R"({"agent": "coder", "input": "make it", "idempotency_key": "k1"})");
  INFO(created.body);
  REQUIRE(created.status == 201);
  std::string run = created.parsed()["run_id"];
  auto again = call("POST", base + "/api/v1/runs", R"({"agent": "coder", "input": "make it", "idempotency_key": "k1"})");
  CHECK(again.status == 200);
  CHECK(again.parsed()["run_id"] == run);
  CHECK(again.parsed()["created"] == false);

  // Waits for the write's approval, as the run's summary says.
  json shown;
  REQUIRE_EVENTUALLY(20'000, (shown = call("GET", base + "/api/v1/runs/" + run).parsed()).value("status", "") == "suspended");
  std::string step = shown["waiting"]["step_key"];
  CHECK(shown["waiting"]["form"]["tool"] == "write");
  auto listed = call("GET", base + "/api/v1/runs?status=suspended");
  CHECK(listed.status == 200);
  CHECK(listed.parsed()["runs"][0]["run_id"] == run);
  // The approvals inbox: every step waiting for a person.
  auto inbox = call("GET", base + "/api/v1/approvals").parsed();
  REQUIRE(inbox["approvals"].size() == 1);
  CHECK(inbox["approvals"][0]["run_id"] == run);
  CHECK(inbox["approvals"][0]["step_key"] == step);
  CHECK(inbox["approvals"][0]["form"]["tool"] == "write");
  // The nodes, from their heartbeats: this one, with its roles and slots.
  auto nodes = call("GET", base + "/api/v1/nodes").parsed();
  REQUIRE(nodes["nodes"].size() == 1);
  CHECK(nodes["nodes"][0]["node_id"] == "n1");
  CHECK(nodes["nodes"][0]["slots"] == 64);

  auto approved = call("POST", base + "/api/v1/runs/" + run + "/steps/" + step + "/approve", "{}");
  CHECK(approved.status == 200);
  CHECK(approved.parsed()["duplicate"] == false);
  CHECK(call("POST", base + "/api/v1/runs/" + run + "/steps/" + step + "/approve", "{}").parsed()["duplicate"] == true);
  CHECK(call("POST", base + "/api/v1/runs/" + run + "/steps/" + step + "/reject", "{}").status == 409);

  REQUIRE_EVENTUALLY(20'000, (shown = call("GET", base + "/api/v1/runs/" + run).parsed()).contains("waiting") &&
                               shown["waiting"]["step_key"] != step);
  auto rejected = call("POST", base + "/api/v1/runs/" + run + "/steps/" + std::string(shown["waiting"]["step_key"]) + "/reject",
                       R"({"feedback": "use head instead"})");
  CHECK(rejected.status == 200);
  REQUIRE_EVENTUALLY(20'000, call("GET", base + "/api/v1/runs/" + run).parsed().value("status", "") == "completed");
  CHECK(call("GET", base + "/api/v1/runs/" + run).parsed()["output"].get<std::string>().find("use head instead") != std::string::npos);

  // The history, paged by seq.
  auto first = call("GET", base + "/api/v1/runs/" + run + "/events?limit=3").parsed();
  REQUIRE(first["events"].size() == 3);
  CHECK(first["more"] == true);
  auto next = call("GET", base + "/api/v1/runs/" + run + "/events?after=3&limit=1000").parsed();
  CHECK(next["events"][0]["seq"] == 4);
  CHECK(next["more"] == false);
  CHECK(next["events"].back()["event_type"] == "run_completed");
  CHECK(call("POST", base + "/api/v1/runs/" + run + "/cancel", "{}").status == 409);  // already completed
  CHECK(call("GET", base + "/api/v1/approvals").parsed()["approvals"].empty());
}

TEST_CASE("http api: errors come as JSON with the protocol's codes and fitting statuses", "[e2e][integration]") {
  cluster c(coder, {coder_script}, cluster_options{false, {}, {}, true});
  auto base = c.gateway_url();
  REQUIRE_EVENTUALLY(10'000, call("GET", base + "/readyz").status == 200);
  auto code_of = [](const http_answer& a) { return a.parsed()["error"].value("code", std::string{}); };
  auto unknown_route = call("GET", base + "/api/v1/nothing");
  CHECK(unknown_route.status == 404);
  CHECK(code_of(unknown_route) == "not_found");
  auto not_an_id = call("GET", base + "/api/v1/runs/nonsense");
  CHECK(not_an_id.status == 404);
  auto no_run = call("GET", base + "/api/v1/runs/0000000000000000-n1");
  CHECK(no_run.status == 404);
  CHECK(code_of(no_run) == "not_found");
  auto other_owner = call("GET", base + "/api/v1/runs/0000000000000000-elsewhere");
  CHECK(other_owner.status == 503);  // no orchestrator answered
  CHECK(code_of(other_owner) == "unavailable");
  auto bad_json = call("POST", base + "/api/v1/runs", "{not json");
  CHECK(bad_json.status == 400);
  CHECK(code_of(bad_json) == "malformed");
  CHECK(call("POST", base + "/api/v1/runs", R"({"input": "no agent"})").status == 400);
  CHECK(call("POST", base + "/api/v1/runs", R"({"agent": "nobody"})").status == 404);
  CHECK(call("POST", base + "/api/v1/runs", R"({"agent": "coder", "session_id": "../x"})").status == 400);
  CHECK(call("GET", base + "/api/v1/runs?limit=lots").status == 400);
  CHECK(call("GET", base + "/api/v1/runs?status=sleeping").status == 400);
  auto huge = call("POST", base + "/api/v1/runs", "{\"agent\": \"coder\", \"input\": \"" + std::string(2 << 20, 'x') + "\"}");
  CHECK(huge.status == 413);
  auto run = call("POST", base + "/api/v1/runs", R"({"agent": "coder", "input": "go"})").parsed()["run_id"].get<std::string>();
  REQUIRE_EVENTUALLY(20'000, call("GET", base + "/api/v1/runs/" + run).parsed().value("status", "") == "suspended");
  auto wrong_step = call("POST", base + "/api/v1/runs/" + run + "/steps/approve-99/approve", "{}");
  CHECK(wrong_step.status == 409);
  CHECK(code_of(wrong_step) == "conflict");
}

TEST_CASE("http api: a token guards every route but the health check; no token, no listening beyond loopback",
          "[e2e][integration]") {
  cluster c(coder, {coder_script}, cluster_options{false, {"gateway.token = \"s3cret\""}, {}, true});
  auto base = c.gateway_url();
  REQUIRE_EVENTUALLY(10'000, call("GET", base + "/healthz").status == 200);
  CHECK(call("GET", base + "/readyz").status == 401);
  CHECK(call("GET", base + "/api/v1/runs").status == 401);
  CHECK(call("GET", base + "/api/v1/runs", "", {"Authorization: Bearer wrong"}).status == 401);
  CHECK(call("GET", base + "/api/v1/runs", "", {"Authorization: Bearer s3cret"}).status == 200);
  // A gateway on every address without a token does not start, and says why.
  temp_dir dir;
  write_file(dir.file("open.toml"), "[node]\nroles = [\"gateway\"]\n[gateway]\nlisten = \"0.0.0.0:8080\"\n");
  auto refused = run_command({KEEL_NODE_BINARY, "--check", "--config", dir.file("open.toml")});
  CHECK(refused.exit_code == 2);
  CHECK(refused.err.find("gateway.token: a gateway listening on 0.0.0.0:8080 (not a loopback address) needs a token") !=
        std::string::npos);
}
