// The gateway's HTTP API against a real node and nats-server, over real HTTP (libcurl).
#include "tests/e2e/cluster.hpp"
#include "tests/e2e/http_client.hpp"
#include "tests/support/fake_service.hpp"

#include <set>
#include <thread>

#include <curl/curl.h>

using namespace keel;
using namespace keel::testing;
using nlohmann::json;

namespace {

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
  // Whatever is not a run id of keel's form never reaches a NATS subject: wildcards, dots, spaces.
  for (const char* hostile : {"0000000000000000-a.*", "0000000000000000-a.>", "0000000000000000-*", "0000000000000000->",
                              "0000000000000000-n1%20x", "0000000000000000-n1.get", "ABCDEFGHIJKLMNOP-n1", "000000000000000.-n1",
                              "0000000000000000-", "0000000000000000-%2E%2E"}) {
    for (const char* tail : {"", "/events", "/stream", "/cancel", "/steps/approve-2/approve"}) {
      auto a = call(std::string(tail).find("approve") != std::string::npos || std::string(tail) == "/cancel" ? "POST" : "GET",
                    base + "/api/v1/runs/" + hostile + tail, "{}");
      INFO(hostile << tail << " " << a.body);
      CHECK(a.status == 404);
      CHECK(code_of(a) == "not_found");
    }
  }
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

TEST_CASE("http api: a token guards every route but the health check, no token, no listening beyond loopback",
          "[e2e][integration]") {
  cluster c(coder, {coder_script}, cluster_options{false, {"gateway.token = \"s3cret\""}, {}, true});
  auto base = c.gateway_url();
  REQUIRE_EVENTUALLY(10'000, call("GET", base + "/healthz").status == 200);
  CHECK(call("GET", base + "/readyz").status == 401);
  CHECK(call("GET", base + "/api/v1/runs").status == 401);
  CHECK(call("GET", base + "/api/v1/runs", "", {"Authorization: Bearer wrong"}).status == 401);
  CHECK(call("GET", base + "/api/v1/runs", "", {"Authorization: Bearer s3cret"}).status == 200);
  CHECK(call("GET", base + "/api/v1/tools").status == 401);
  CHECK(call("GET", base + "/api/v1/tools", "", {"Authorization: Bearer wrong"}).status == 401);
  CHECK(call("GET", base + "/api/v1/tools", "", {"Authorization: Bearer s3cret"}).status == 200);
  // A gateway on every address without a token does not start, and says why.
  temp_dir dir;
  write_file(dir.file("open.toml"), "[node]\nroles = [\"gateway\"]\n[gateway]\nlisten = \"0.0.0.0:8080\"\n");
  auto refused = run_command({KEEL_NODE_BINARY, "--check", "--config", dir.file("open.toml")});
  CHECK(refused.exit_code == 2);
  CHECK(refused.err.find("gateway.token: a gateway listening on 0.0.0.0:8080 (not a loopback address) needs a token") !=
        std::string::npos);
}

namespace {

struct sse_event {
  std::string event;  // "" for a stored event
  std::string id;
  std::string data;
};

struct sse_answer {
  long status = 0;
  std::string raw;
  std::vector<sse_event> events;
  bool ended = false;  // an `end` event came
};

// Parses complete frames out of `raw` (from `offset`), as a browser's EventSource does.
void parse_frames(sse_answer& a, std::size_t& offset) {
  while (true) {
    auto end = a.raw.find("\n\n", offset);
    if (end == std::string::npos) return;
    sse_event e;
    bool any = false;
    std::size_t start = offset;
    while (start < end) {
      auto nl = a.raw.find('\n', start);
      if (nl == std::string::npos || nl > end) nl = end;
      auto line = a.raw.substr(start, nl - start);
      start = nl + 1;
      if (line.empty() || line[0] == ':') continue;
      auto colon = line.find(':');
      auto field = line.substr(0, colon);
      auto value = colon == std::string::npos ? "" : line.substr(colon + 1);
      if (!value.empty() && value[0] == ' ') value.erase(0, 1);
      if (field == "event") e.event = value, any = true;
      else if (field == "id") e.id = value, any = true;
      else if (field == "data") e.data += (e.data.empty() ? "" : "\n") + value, any = true;
    }
    offset = end + 2;
    if (any && !e.data.empty()) {
      if (e.event == "end") a.ended = true;
      a.events.push_back(std::move(e));
    }
  }
}

// Reads a stream until its `end` event, `stop` says so, or the time is up.
sse_answer read_stream(const std::string& url, const std::vector<std::string>& extra_headers = {},
                       std::function<bool(const sse_answer&)> stop = {}, long timeout_ms = 30'000) {
  struct context {
    sse_answer answer;
    std::size_t offset = 0;
    std::function<bool(const sse_answer&)> stop;
  } ctx;
  ctx.stop = std::move(stop);
  CURL* curl = curl_easy_init();
  if (!curl) return ctx.answer;  // status 0; not REQUIRE: readers run on their own threads
  curl_slist* headers = nullptr;
  bool authorized = false;
  for (const auto& h : extra_headers) authorized = authorized || h.rfind("Authorization:", 0) == 0;
  if (auto a = default_authorization_header(); !authorized && !a.empty()) headers = curl_slist_append(headers, a.c_str());
  for (const auto& h : extra_headers) headers = curl_slist_append(headers, h.c_str());
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, +[](char* data, size_t size, size_t count, void* to) -> size_t {
    auto& c = *static_cast<context*>(to);
    c.answer.raw.append(data, size * count);
    parse_frames(c.answer, c.offset);
    if (c.stop && c.stop(c.answer)) return 0;  // enough: hang up
    return size * count;
  });
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &ctx);
  curl_easy_perform(curl);
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &ctx.answer.status);
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  return ctx.answer;
}

// The seqs of the stored events in a stream, in the order they came.
std::vector<std::uint64_t> seqs_of(const sse_answer& a) {
  std::vector<std::uint64_t> out;
  for (const auto& e : a.events)
    if (e.event.empty()) {
      auto v = json::parse(e.data);
      CHECK(std::to_string(v["seq"].get<std::uint64_t>()) == e.id);  // the id is the seq
      out.push_back(v["seq"]);
    }
  return out;
}

std::vector<std::uint64_t> range(std::uint64_t from, std::uint64_t to) {
  std::vector<std::uint64_t> out;
  for (auto i = from; i <= to; ++i) out.push_back(i);
  return out;
}

} // namespace

TEST_CASE("http api: a run's stream gives every event once, in order, live, resumes where it stopped, and ends",
          "[e2e][integration][threads]") {
  cluster c(coder, {coder_script}, cluster_options{false, {}, {}, true});
  auto base = c.gateway_url();
  REQUIRE_EVENTUALLY(10'000, call("GET", base + "/readyz").status == 200);
  // Bad requests are answered before any stream starts.
  CHECK(call("GET", base + "/api/v1/runs/0000000000000000-n1/stream").status == 404);
  CHECK(call("GET", base + "/api/v1/runs/nonsense/stream").status == 404);
  CHECK(call("GET", base + "/api/v1/runs/0000000000000000-elsewhere/stream").status == 503);

  auto run = call("POST", base + "/api/v1/runs", R"({"agent": "coder", "input": "stream me"})").parsed()["run_id"].get<std::string>();
  auto url = base + "/api/v1/runs/" + run + "/stream";
  CHECK(call("GET", url + "?after=x").status == 400);
  CHECK(call("GET", url, "", {"Last-Event-ID: -1"}).status == 400);
  // 20 clients follow the run live from its start while a person answers its two steps.
  std::vector<sse_answer> live(20);
  std::vector<std::thread> readers;
  for (auto& a : live) readers.emplace_back([&a, url] { a = read_stream(url); });
  json shown;
  REQUIRE_EVENTUALLY(20'000, (shown = call("GET", base + "/api/v1/runs/" + run).parsed()).value("status", "") == "suspended");
  std::string first_step = shown["waiting"]["step_key"];
  REQUIRE(call("POST", base + "/api/v1/runs/" + run + "/steps/" + first_step + "/approve", "{}").status == 200);
  REQUIRE_EVENTUALLY(20'000, (shown = call("GET", base + "/api/v1/runs/" + run).parsed()).contains("waiting") &&
                               shown["waiting"]["step_key"] != first_step);
  // One client hangs up at the second suspension and comes back with the last id it saw.
  auto partial = read_stream(url, {}, [](const sse_answer& a) {
    return std::count_if(a.events.begin(), a.events.end(), [](const sse_event& e) {
             return e.data.find("\"event_type\":\"suspend\"") != std::string::npos;
           }) == 2;
  });
  auto partial_seqs = seqs_of(partial);
  REQUIRE(!partial_seqs.empty());
  CHECK(partial_seqs == range(1, partial_seqs.back()));
  REQUIRE(call("POST", base + "/api/v1/runs/" + run + "/steps/" + std::string(shown["waiting"]["step_key"]) + "/approve", "{}").status == 200);
  for (auto& t : readers) t.join();
  auto last = call("GET", base + "/api/v1/runs/" + run).parsed()["last_event_seq"].get<std::uint64_t>();
  REQUIRE(last > 8);
  for (const auto& a : live) {
    CHECK(a.status == 200);
    CHECK(a.raw.rfind("retry: ", 0) == 0);
    CHECK(seqs_of(a) == range(1, last));  // no gap, no repeat
    REQUIRE(a.ended);
    CHECK(json::parse(a.events.back().data)["status"] == "completed");
  }
  auto resumed = read_stream(url, {"Last-Event-ID: " + std::to_string(partial_seqs.back())});
  CHECK(seqs_of(resumed) == range(partial_seqs.back() + 1, last));
  CHECK(resumed.ended);
  // ?after= does the same; a header beats it (a browser reconnecting keeps the URL it had).
  CHECK(seqs_of(read_stream(url + "?after=5")) == range(6, last));
  CHECK(seqs_of(read_stream(url + "?after=2", {"Last-Event-ID: 7"})) == range(8, last));
  // A finished run: its history, then the end at once; past its last event, only the end.
  auto past = read_stream(url + "?after=" + std::to_string(last + 100));
  CHECK(seqs_of(past).empty());
  CHECK(past.ended);
}

TEST_CASE("http api: streams ping while a run waits, and a client that leaves is forgotten", "[e2e][integration][threads]") {
  // A run that waits: its stream stays open with pings until the client leaves.
  cluster c(coder, {coder_script}, cluster_options{false, {"gateway.stream_ping_ms = 100"}, {}, true});
  auto base = c.gateway_url();
  REQUIRE_EVENTUALLY(10'000, call("GET", base + "/readyz").status == 200);
  auto run = call("POST", base + "/api/v1/runs", R"({"agent": "coder", "input": "wait"})").parsed()["run_id"].get<std::string>();
  REQUIRE_EVENTUALLY(20'000, call("GET", base + "/api/v1/runs/" + run).parsed().value("status", "") == "suspended");
  // 200 clients at once on one run: each gets the history, none ends (the run waits).
  std::vector<sse_answer> many(200);
  std::vector<std::thread> readers;
  for (auto& a : many)
    readers.emplace_back([&a, url = base + "/api/v1/runs/" + run + "/stream"] {
      a = read_stream(url, {}, [](const sse_answer& s) {
        return std::any_of(s.events.begin(), s.events.end(), [](const sse_event& e) { return e.data.find("\"suspend\"") != std::string::npos; });
      });
    });
  for (auto& t : readers) t.join();
  for (const auto& a : many) {
    CHECK(a.status == 200);
    CHECK(!a.ended);
    CHECK(seqs_of(a).front() == 1);
  }
  // Every one of them hung up: the gateway forgets them.
  REQUIRE_EVENTUALLY(10'000, call("GET", base + "/healthz").parsed()["streams"] == 0);
  // One that stays gets a ping at the interval (100 ms here), and nothing else while the run waits.
  auto quiet = read_stream(base + "/api/v1/runs/" + run + "/stream?after=1000", {}, [](const sse_answer& s) {
    std::size_t pings = 0, at = 0;
    while ((at = s.raw.find(": ping\n\n", at)) != std::string::npos) ++pings, ++at;
    return pings >= 3;
  });
  CHECK(quiet.events.empty());
  CHECK(!quiet.ended);
  REQUIRE_EVENTUALLY(10'000, call("GET", base + "/healthz").parsed()["streams"] == 0);
}

TEST_CASE("http api: a streamed model's text comes as delta events while the step runs", "[e2e][integration][threads]") {
  // The service waits a second before it streams, so that the client is following by then.
  fake_service anthropic([](const fake_request&) {
    std::vector<std::string> chunks = {
      sse("message_start", json{{"type", "message_start"}, {"message", {{"id", "m1"}, {"type", "message"}, {"role", "assistant"},
                                                                       {"content", json::array()}, {"usage", {{"input_tokens", 10}, {"output_tokens", 0}}}}}}),
      sse("content_block_start", json{{"type", "content_block_start"}, {"index", 0}, {"content_block", {{"type", "text"}, {"text", ""}}}}),
      sse("content_block_delta", json{{"type", "content_block_delta"}, {"index", 0}, {"delta", {{"type", "text_delta"}, {"text", "Hello, "}}}}),
      sse("content_block_delta", json{{"type", "content_block_delta"}, {"index", 0}, {"delta", {{"type", "text_delta"}, {"text", "stream."}}}}),
      sse("content_block_stop", json{{"type", "content_block_stop"}, {"index", 0}}),
      sse("message_delta", json{{"type", "message_delta"}, {"delta", {{"stop_reason", "end_turn"}}}, {"usage", {{"output_tokens", 4}}}}),
      sse("message_stop", json{{"type", "message_stop"}})};
    return fake_reply{200, "", chunks, {}, 1500};
  });
  cluster c(R"(
[agents.talker]
provider = "anthropic"
model = "claude-sonnet-4-5"
base_url = ")" + anthropic.url() + R"("
api_key_file = "{dir}/anthropic.key"
[agents.talker.sandbox]
workspace = "{dir}/ws"
)", {{"anthropic.key", "sk-ant-test-key\n"}}, cluster_options{false, {}, {}, true});
  auto base = c.gateway_url();
  REQUIRE_EVENTUALLY(10'000, call("GET", base + "/readyz").status == 200);
  auto run = call("POST", base + "/api/v1/runs", R"({"agent": "talker", "input": "hi"})").parsed()["run_id"].get<std::string>();
  auto a = read_stream(base + "/api/v1/runs/" + run + "/stream");
  REQUIRE(a.ended);
  std::string text;
  for (const auto& e : a.events)
    if (e.event == "delta") text += json::parse(e.data)["text"].get<std::string>();
  CHECK(text == "Hello, stream.");
  // The deltas carry no id: a client that reconnects resumes from the last stored event.
  for (const auto& e : a.events)
    if (e.event == "delta") CHECK(e.id.empty());
  CHECK(json::parse(a.events.back().data)["status"] == "completed");
}

TEST_CASE("http api: runs are found by session, time and text, and paged with a cursor that misses none",
          "[e2e][integration]") {
  cluster c(R"(
[agents.quick]
script = "{dir}/quick.json"
[agents.quick.sandbox]
workspace = "{dir}/ws"
[agents.other]
script = "{dir}/quick.json"
[agents.other.sandbox]
workspace = "{dir}/ws2"
)", {{"quick.json", R"({"turns": [{"text": "Answer for {{input}}"}]})"}}, cluster_options{false, {}, {}, true});
  auto base = c.gateway_url();
  REQUIRE_EVENTUALLY(10'000, call("GET", base + "/readyz").status == 200);
  std::vector<std::string> ids;
  std::int64_t middle_ms = 0;
  for (int i = 0; i < 45; ++i) {
    json body{{"agent", i % 3 == 0 ? "other" : "quick"}, {"input", "task number " + std::to_string(i) + (i == 17 ? " needle<b>" : "")}};
    if (i % 5 == 0) body["session_id"] = "s-five";
    auto made = call("POST", base + "/api/v1/runs", body.dump());
    REQUIRE(made.status == 201);
    ids.push_back(made.parsed()["run_id"]);
    if (i == 29) middle_ms = call("GET", base + "/api/v1/runs/" + ids.back()).parsed()["created_ms"];
  }
  REQUIRE_EVENTUALLY(20'000, call("GET", base + "/api/v1/runs?status=completed&limit=100").parsed()["runs"].size() == 45);
  // Every run once through pages of 7, newest first.
  std::vector<std::string> seen;
  std::string cursor;
  int pages = 0;
  while (true) {
    auto page = call("GET", base + "/api/v1/runs?limit=7" + (cursor.empty() ? "" : "&cursor=" + cursor)).parsed();
    ++pages;
    for (auto& r : page["runs"]) seen.push_back(r["run_id"]);
    CHECK(page["runs"].size() <= 7);
    if (!page.contains("next_cursor")) break;
    cursor = page["next_cursor"];
    REQUIRE(pages < 20);
  }
  auto newest_first = ids;
  std::reverse(newest_first.begin(), newest_first.end());
  CHECK(seen == newest_first);
  // Filters, alone and together.
  auto count = [&](const std::string& query) { return call("GET", base + "/api/v1/runs?limit=1000&" + query).parsed()["runs"].size(); };
  CHECK(count("session_id=s-five") == 9);
  CHECK(count("agent=other") == 15);
  CHECK(count("agent=other&session_id=s-five") == 3);  // i = 0, 15, 30
  CHECK(count("q=NEEDLE") == 1);                        // text, any case, in the input
  CHECK(count("q=needle%3Cb%3E") == 1);
  CHECK(count("q=answer%20for%20task%20number%2017") == 1);  // and in the output
  CHECK(count("q=nothing-like-this") == 0);
  CHECK(count("since_ms=" + std::to_string(middle_ms)) >= 16);  // run 29 and the ones after it
  CHECK(count("since_ms=" + std::to_string(middle_ms)) + count("until_ms=" + std::to_string(middle_ms)) == 45);
  CHECK(count("status=completed&agent=quick") == 30);
  // Bad filters are refused with what is wrong, and change nothing.
  auto code = [&](const std::string& query) { return call("GET", base + "/api/v1/runs?" + query).status; };
  CHECK(code("cursor=nonsense") == 400);
  CHECK(code("cursor=12.not-a-run") == 400);
  CHECK(code("since_ms=yesterday") == 400);
  CHECK(code("q=" + std::string(300, 'x')) == 400);
  CHECK(code("session_id=" + std::string(200, 's')) == 400);
  CHECK(code("agent=..%2F..") == 400);
  CHECK(call("GET", base + "/api/v1/runs?cursor=nonsense").parsed()["error"]["message"].get<std::string>().find("cursor") != std::string::npos);
}

TEST_CASE("http api: agents with what they run on and may do, and the workers that serve them", "[e2e][integration]") {
  cluster c(coder, {coder_script}, cluster_options{false, {}, {}, true});
  auto base = c.gateway_url();
  REQUIRE_EVENTUALLY(10'000, call("GET", base + "/readyz").status == 200);
  auto agents = call("GET", base + "/api/v1/agents").parsed()["agents"];
  REQUIRE(agents.size() == 1);
  const auto& a = agents[0];
  CHECK(a["id"] == "coder");
  CHECK(a["provider"] == "scripted");
  CHECK(std::find(a["tools"].begin(), a["tools"].end(), "exec") != a["tools"].end());
  CHECK(a["sandbox"]["exec_security"] == "approval-always");
  CHECK(a["workers"] == json::array({"n1"}));
  CHECK(a["slots"] == 64);
  testing::command_output listed;
  REQUIRE_EVENTUALLY(10'000, (listed = c.keel({"agents"})).exit_code == 0);
  CHECK(listed.out.find("coder") != std::string::npos);
  CHECK(listed.out.find("scripted") != std::string::npos);
  json as_json;
  REQUIRE_EVENTUALLY(10'000, (as_json = json::parse(c.keel({"agents", "--json"}).out, nullptr, false)).is_array());
  CHECK(as_json[0]["id"] == "coder");
}

TEST_CASE("http api: the dashboard's pages are served with a strict policy, nothing else is", "[e2e][integration]") {
  cluster c(coder, {coder_script}, cluster_options{false, {"gateway.token = \"s3cret\""}, {}, true});
  auto base = c.gateway_url();
  REQUIRE_EVENTUALLY(10'000, call("GET", base + "/healthz").status == 200);
  for (const char* page : {"/", "/runs", "/runs/0000000000000000-n1", "/runs/0000000000000000-n1/steps/approve-3", "/agents",
                           "/nodes", "/approvals"}) {
    auto r = call("GET", base + page);  // pages hold no data: no token needed
    INFO(page);
    CHECK(r.status == 200);
    CHECK(r.headers["content-type"] == "text/html; charset=utf-8");
    CHECK(r.body.find("<script type=\"module\" src=\"/assets/app.js\"") != std::string::npos);
    CHECK(r.headers["content-security-policy"].find("script-src 'self'") != std::string::npos);
    CHECK(r.headers["content-security-policy"].find("frame-ancestors 'none'") != std::string::npos);
    CHECK(r.headers["x-frame-options"] == "DENY");
  }
  auto script = call("GET", base + "/assets/app.js");
  CHECK(script.status == 200);
  CHECK(script.headers["content-type"] == "text/javascript; charset=utf-8");
  for (const char* missing : {"/assets/../CMakeLists.txt", "/assets/%2e%2e/x", "/runs/a/../../etc/passwd", "/runs/<script>",
                              "/etc/passwd", "/assets/", "/favicon.ico"}) {
    INFO(missing);
    CHECK(call("GET", base + missing).status == 404);
  }
  CHECK(call("POST", base + "/", "{}").status == 404);
  CHECK(call("GET", base + "/api/v1/runs").status == 401);  // the data still needs the token
}

TEST_CASE("http api: a gateway with no orchestrator behind it says so with 503 on every route that needs one",
          "[e2e][integration]") {
  nats_server nats;
  temp_dir dir;
  auto port = free_loopback_port();
  REQUIRE(port.ok());
  auto token = write_gateway_token(dir.file("tokens"), "tester");
  set_default_authorization("Authorization: Bearer " + token);
  write_file(dir.file("gateway.toml"), "[node]\nname = \"g1\"\nroles = [\"gateway\"]\n[nats]\nservers = [\"" + nats.url() +
                                         "\"]\n[gateway]\nlisten = \"127.0.0.1:" + std::to_string(*port) + "\"\ntokens_file = \"" +
                                         dir.file("tokens") + "\"\n");
  auto node = start_command({KEEL_NODE_BINARY, "--config", dir.file("gateway.toml")}, dir, "gateway");
  auto base = "http://127.0.0.1:" + std::to_string(*port);
  REQUIRE_EVENTUALLY(10'000, status_of_get(base + "/healthz") == 200);
  auto code_of = [](const http_answer& a) { return a.parsed()["error"].value("code", std::string{}); };
  for (const auto& [method, path] : std::vector<std::pair<std::string, std::string>>{
         {"GET", "/readyz"}, {"GET", "/api/v1/runs"}, {"GET", "/api/v1/approvals"}, {"GET", "/api/v1/agents"},
         {"POST", "/api/v1/runs"}, {"GET", "/api/v1/runs/0000000000000000-o1"},
         {"GET", "/api/v1/runs/0000000000000000-o1/events"}, {"GET", "/api/v1/runs/0000000000000000-o1/stream"},
         {"POST", "/api/v1/runs/0000000000000000-o1/cancel"},
         {"POST", "/api/v1/runs/0000000000000000-o1/steps/approve-2/approve"}}) {
    auto a = call(method, base + path, method == "POST" ? R"({"agent": "coder"})" : "");
    INFO(method << " " << path << " " << a.body);
    CHECK(a.status == 503);
    CHECK(code_of(a) == "unavailable");
  }
  // The gateway itself is a node: it answers for itself.
  auto nodes = call("GET", base + "/api/v1/nodes").parsed();
  REQUIRE(nodes["nodes"].size() == 1);
  CHECK(nodes["nodes"][0]["roles"] == json::array({"gateway"}));
  node.stop(5000);
}

TEST_CASE("http api: a run is cancelled over HTTP, its stream ends with the cancel", "[e2e][integration][threads]") {
  cluster c(coder, {coder_script}, cluster_options{false, {}, {}, true});
  auto base = c.gateway_url();
  REQUIRE_EVENTUALLY(10'000, call("GET", base + "/readyz").status == 200);
  auto run = call("POST", base + "/api/v1/runs", R"({"agent": "coder", "input": "to cancel"})").parsed()["run_id"].get<std::string>();
  REQUIRE_EVENTUALLY(20'000, call("GET", base + "/api/v1/runs/" + run).parsed().value("status", "") == "suspended");
  sse_answer streamed;
  std::thread reader([&] { streamed = read_stream(base + "/api/v1/runs/" + run + "/stream"); });
  REQUIRE_EVENTUALLY(10'000, call("GET", base + "/healthz").parsed()["streams"] == 1);
  CHECK(call("POST", base + "/api/v1/runs/" + run + "/cancel", R"({"reason": 7})").status == 400);  // a reason is text
  auto cancelled = call("POST", base + "/api/v1/runs/" + run + "/cancel", R"({"reason": "not needed"})");
  CHECK(cancelled.status == 200);
  CHECK(cancelled.parsed()["status"] == "cancelled");
  reader.join();
  REQUIRE(streamed.ended);
  CHECK(json::parse(streamed.events.back().data)["status"] == "cancelled");
  auto last_stored = json::parse(streamed.events[streamed.events.size() - 2].data);
  CHECK(last_stored["event_type"] == "run_cancelled");
  CHECK(last_stored["data"]["reason"] == "not needed");
  CHECK(call("POST", base + "/api/v1/runs/" + run + "/cancel", "{}").status == 409);
  // An answer with a `by` that is not text, or too long, is refused; the run is unchanged.
  CHECK(call("POST", base + "/api/v1/runs/" + run + "/steps/approve-2/approve", R"({"by": 5})").status == 400);
  CHECK(call("POST", base + "/api/v1/runs/" + run + "/steps/approve-2/approve", "{\"by\": \"" + std::string(200, 'b') + "\"}").status == 400);
}

TEST_CASE("http api: docs/openapi.json and the gateway agree: every route named is served, every route served is named",
          "[e2e][integration]") {
  auto doc = json::parse(read_file(std::string(KEEL_SOURCE_DIR) + "/docs/openapi.json"));
  cluster c(coder, {coder_script}, cluster_options{false, {}, {}, true});
  auto base = c.gateway_url();
  REQUIRE_EVENTUALLY(10'000, call("GET", base + "/readyz").status == 200);
  auto run = call("POST", base + "/api/v1/runs", R"({"agent": "coder", "input": "x"})").parsed()["run_id"].get<std::string>();
  REQUIRE_EVENTUALLY(20'000, call("GET", base + "/api/v1/runs/" + run).parsed().value("status", "") == "suspended");
  std::set<std::string> named;
  for (auto& [path, methods] : doc["paths"].items()) {
    for (auto& [method, op] : methods.items()) {
      std::string upper = method == "get" ? "GET" : method == "delete" ? "DELETE" : "POST";
      named.insert(upper + " " + path);
      auto target = replace_all(replace_all(path, "{id}", run), "{step}", "approve-2");
      if (path.find("/stream") != std::string::npos) target += "?after=1000000";  // answered, not followed
      http_answer a;
      if (path.find("/stream") != std::string::npos) {
        auto s = read_stream(base + target, {}, [](const sse_answer&) { return true; }, 5000);
        a.status = s.status;
      } else {
        a = call(upper, base + target, upper == "POST" ? R"({"agent": "coder"})" : upper == "DELETE" ? "{}" : "");
      }
      INFO(upper << " " << target << " -> " << a.status << " " << a.body);
      CHECK(a.status != 0);
      CHECK(a.body.find("no route") == std::string::npos);  // the gateway knows it
      // Every status it may answer is documented for the route.
      CHECK(op["responses"].contains(std::to_string(a.status)));
    }
  }
  // And the other way: the gateway's routes, each named in the document.
  for (const char* route : {"GET /healthz", "GET /readyz", "POST /api/v1/runs", "GET /api/v1/runs", "GET /api/v1/runs/{id}",
                            "GET /api/v1/runs/{id}/events", "GET /api/v1/runs/{id}/stream", "POST /api/v1/runs/{id}/cancel",
                            "POST /api/v1/runs/{id}/retry", "POST /api/v1/runs/{id}/steps/{step}/approve", "POST /api/v1/runs/{id}/steps/{step}/reject",
                            "GET /api/v1/approvals", "GET /api/v1/agents", "GET /api/v1/tools", "GET /api/v1/nodes",
                            "POST /api/v1/runs/{id}/signals", "GET /api/v1/schedules", "POST /api/v1/schedules/{name}/pause",
                            "POST /api/v1/schedules/{name}/resume", "POST /hooks/{name}", "GET /api/v1/queues",
                            "POST /api/v1/schedules", "DELETE /api/v1/schedules/{name}", "GET /metrics", "GET /api/v1/costs",
                            "POST /api/v1/runs/{id}/fork", "POST /api/v1/runs/{id}/rerun", "POST /api/v1/runs/{id}/replay",
                            "POST /api/v1/runs/bulk"}) {
    INFO(route);
    CHECK(named.count(route) == 1);
  }
  CHECK(named.size() == 29);
}

TEST_CASE("http api: 50 runs followed by 4 clients each, answered while they follow, every stream whole to its end",
          "[e2e][integration][threads]") {
  cluster c(coder, {coder_script}, cluster_options{false, {}, {}, true});
  auto base = c.gateway_url();
  REQUIRE_EVENTUALLY(10'000, call("GET", base + "/readyz").status == 200);
  std::vector<std::string> runs;
  for (int i = 0; i < 50; ++i)
    runs.push_back(call("POST", base + "/api/v1/runs", "{\"agent\": \"coder\", \"input\": \"r" + std::to_string(i) + "\"}").parsed()["run_id"]);
  std::vector<sse_answer> streams(runs.size() * 4);
  std::vector<std::thread> readers;
  for (std::size_t i = 0; i < streams.size(); ++i)
    readers.emplace_back([&, i] { streams[i] = read_stream(base + "/api/v1/runs/" + runs[i / 4] + "/stream", {}, {}, 60'000); });
  // Answer every step of every run, as they come, until all have completed.
  auto deadline = steady_ms() + 60'000;
  std::size_t completed = 0;
  while (completed < runs.size() && steady_ms() < deadline) {
    completed = 0;
    for (const auto& run : runs) {
      auto shown = call("GET", base + "/api/v1/runs/" + run).parsed();
      if (shown["status"] == "completed") ++completed;
      else if (shown.contains("waiting"))
        call("POST", base + "/api/v1/runs/" + run + "/steps/" + shown["waiting"]["step_key"].get<std::string>() + "/approve", "{}");
    }
  }
  REQUIRE(completed == runs.size());
  for (auto& t : readers) t.join();
  for (std::size_t i = 0; i < streams.size(); ++i) {
    auto last = call("GET", base + "/api/v1/runs/" + runs[i / 4]).parsed()["last_event_seq"].get<std::uint64_t>();
    INFO("stream " << i << " of run " << runs[i / 4]);
    CHECK(seqs_of(streams[i]) == range(1, last));
    CHECK(streams[i].ended);
  }
  REQUIRE_EVENTUALLY(10'000, call("GET", base + "/healthz").parsed()["streams"] == 0);
}

// The test helpers that tests call from many threads at once (HTTP calls, commands) assert
// nothing: Catch's assertions are not thread-safe, and one made off the test's thread ends the
// binary (tests/support/failure_report.cpp). Each says what went wrong in what it returns: an
// answer, no answer (status 0 and why), a command that ran, one that could not start (-1).
TEST_CASE("test helpers: HTTP calls and commands from 16 threads at once report, never assert",
          "[e2e][support]") {
  fake_service echo([](const fake_request& r) { return fake_reply{200, r.body.dump()}; });
  auto closed_port = free_loopback_port();
  REQUIRE(closed_port.ok());
  constexpr int threads = 16, rounds = 10;
  std::vector<int> answered(threads), unanswered(threads), ran(threads), not_started(threads);
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t)
    workers.emplace_back([&, t] {
      for (int i = 0; i < rounds; ++i) {
        auto a = call("POST", echo.url() + "/x", "{\"n\": " + std::to_string(i) + "}");
        if (a.status == 200 && a.parsed().is_object() && a.parsed().value("n", -1) == i) ++answered[t];
        auto none = call("GET", "http://127.0.0.1:" + std::to_string(*closed_port) + "/");
        if (none.status == 0 && none.body.rfind("no answer: ", 0) == 0 && none.parsed().is_discarded()) ++unanswered[t];
        auto echoed = run_command({"/bin/echo", std::to_string(t)});
        if (echoed.exit_code == 0 && echoed.out == std::to_string(t) + "\n") ++ran[t];
        auto missing = run_command({"/nonexistent/keel-no-such-binary"});
        if (missing.exit_code != 0) ++not_started[t];
      }
    });
  for (auto& w : workers) w.join();
  for (int t = 0; t < threads; ++t) {
    INFO("thread " << t);
    CHECK(answered[t] == rounds);
    CHECK(unanswered[t] == rounds);
    CHECK(ran[t] == rounds);
    CHECK(not_started[t] == rounds);
  }
}
