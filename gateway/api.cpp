#include "gateway/api.hpp"
#include "runtime/error_reply.hpp"
#include "runtime/metrics.hpp"
#include "gateway/request_guard.hpp"
#include "gateway/request.hpp"

#include "gateway/static_files.hpp"
#include "gateway/webhooks.hpp"
#include "runtime/clock.hpp"
#include "runtime/ids.hpp"
#include "runtime/wire.hpp"

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace keel::gateway {

using wire::value;

int status_of(errc code) {
  switch (code) {
    case errc::malformed:
    case errc::invalid_argument:
    case errc::unsupported_version: return 400;
    case errc::too_large: return 413;
    case errc::not_found: return 404;
    case errc::conflict: return 409;
    case errc::denied: return 403;
    case errc::unavailable:
    case errc::timeout: return 503;
    case errc::unknown: return 504;  // done or not: the body says how to find out
    default: return 500;
  }
}

// Headers every answer carries: nothing here may be framed, sniffed or loaded from elsewhere.
void secure(http_response& r) {
  r.headers.emplace_back("X-Frame-Options", "DENY");
  r.headers.emplace_back("X-Content-Type-Options", "nosniff");
  r.headers.emplace_back("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'");
  r.headers.emplace_back("Cache-Control", "no-store");
}

http_response json(int status, const value& body) {
  http_response r;
  r.status = status;
  r.body = body.dump(-1, ' ', false, value::error_handler_t::replace);
  secure(r);
  return r;
}

http_response failure(const keel::error& e) {
  return json(status_of(e.code), value{{"error", {{"code", std::string(to_string(e.code))}, {"message", e.message}}}});
}

api::api(std::shared_ptr<broker::connection> nats, api_options options)
  : nats_(std::move(nats)), options_(std::move(options)),
    tokens_(std::make_unique<token_book>(options_.token, options_.token_name, options_.tokens_file)) {
  auto history = [nats = nats_, subjects = options_.subjects, timeout = options_.request_timeout_ms](
                   const std::string& run, std::uint64_t from) -> result<value> {
    auto reply = nats->request(subjects.base() + ".runs." + run + ".history",
                               wire::pack(value{{"v", 1}, {"type", "get_history"}, {"from_seq", from}, {"limit", 500}}), timeout);
    if (!reply) return make_error(errc::unavailable, "the run's orchestrator did not answer: " + reply.error().message);
    auto v = wire::unpack(reply->data);
    if (!v || !v->is_object()) return make_error(errc::internal, "an orchestrator's answer could not be read");
    if (text_field(*v, "type") == "error")
      return make_error(errc::unavailable, error_message_of(*v, std::string{}));
    return v;
  };
  streams_ = std::make_shared<run_streams>(nats_, options_.subjects, history, options_.streams);
  auto beats = nats_->subscribe(options_.subjects.heartbeat(), "", [this](broker::message&& m) { on_heartbeat(m.data); });
  if (beats) heartbeats_ = std::move(*beats);
}

api::~api() { stop(); }
void api::stop() {
  heartbeats_.reset();
  if (streams_) streams_->stop();
}
std::size_t api::streams() const { return streams_ ? streams_->clients() : 0; }

result<value> api::ask(const std::string& subject, const value& body) {
  return answer_of(nats_->request(subject, wire::pack(body), options_.request_timeout_ms));
}

result<value> api::answer_of(result<broker::message> reply) {
  if (!reply) {
    if (reply.error().code == errc::timeout || reply.error().code == errc::unavailable)
      return make_error(errc::unavailable, "no orchestrator answered: " + reply.error().message);
    return reply.error();
  }
  auto v = wire::unpack(reply->data);
  if (!v || !v->is_object()) return make_error(errc::internal, "an orchestrator's answer could not be read");
  if (text_field(*v, "type") == "error") {
    errc code = errc::internal;
    (void)from_string(error_code_of(*v), code);
    return make_error(code, error_message_of(*v, std::string{}));
  }
  return v;
}

// The nodes alive now, from their heartbeats: a listing waits for as many answers as there are
// live orchestrators (or nodes), not for its whole time.
void api::on_heartbeat(const std::string& bytes) {
  auto beat = wire::decode<wire::heartbeat>(bytes);
  if (!beat) return;
  std::lock_guard lock{live_mutex_};
  if (beat->state != "up") {
    live_.erase(beat->node_id);
    return;
  }
  // Its id goes into a subject (an invoke addressed to it): a node id of keel's form only.
  if (!is_valid_name(beat->node_id)) return;
  bool orchestrator = std::find(beat->roles.begin(), beat->roles.end(), "orchestrator") != beat->roles.end();
  live_[beat->node_id] = live_node{orchestrator, steady_ms() + 3 * std::max<std::int64_t>(beat->interval_ms, 200), steady_ms()};
}

std::vector<std::string> api::recent_ids(bool orchestrators_only, std::int64_t within_ms) const {
  std::lock_guard lock{live_mutex_};
  auto now = steady_ms();
  std::vector<std::string> out;
  for (const auto& [id, node] : live_)
    if (now - node.seen_ms <= within_ms && (!orchestrators_only || node.orchestrator)) out.push_back(id);
  return out;
}

std::string api::next_orchestrator() {
  std::lock_guard lock{live_mutex_};
  auto now = steady_ms();
  std::vector<const std::string*> up;
  for (const auto& [id, node] : live_)
    if (node.orchestrator && node.until_ms > now) up.push_back(&id);
  if (up.empty()) return {};
  return *up[turn_++ % up.size()];
}

// An invoke goes to the live orchestrators in turn, each by its own subject; when the one chosen
// has no subscriber there (it stopped since its last heartbeat), to the queue group, which gives
// it to any. A timeout is not tried elsewhere: the run may have been made.
result<value> api::invoke(const value& body, const std::string& who) {
  auto chosen = next_orchestrator();
  if (!chosen.empty()) {
    auto reply = nats_->request(options_.subjects.node_invoke(chosen, who), wire::pack(body), options_.request_timeout_ms);
    if (reply || reply.error().code != errc::unavailable) return answer_of(std::move(reply));
  }
  return ask(options_.subjects.invoke(who), body);
}

std::string api::client_of(const http_request& request) {
  auto it = request.headers.find("authorization");
  if (it != request.headers.end())
    if (auto name = tokens_->who(it->second)) return "token " + *name;
  return request.peer;
}

std::size_t api::live_count(bool orchestrators_only) const {
  std::lock_guard lock{live_mutex_};
  auto now = steady_ms();
  std::size_t n = 0;
  for (const auto& [id, node] : live_)
    if (node.until_ms > now && (!orchestrators_only || node.orchestrator)) ++n;
  return n;
}

// A request every orchestrator (or every node) answers: the answers that come until each live one
// has answered, or list_wait_ms passed (then at least the first, up to the request timeout). An
// error answer from any of them is the result.
result<std::vector<value>> api::collect(const std::string& subject, const value& body, bool orchestrators_only) {
  struct gathering {
    std::mutex mutex;
    std::condition_variable arrived;
    std::vector<value> answers;
    std::optional<keel::error> refused;
  };
  auto g = std::make_shared<gathering>();  // a late answer finds it still there
  auto inbox = nats_->new_inbox();
  auto sub = nats_->subscribe(inbox, "", [g](broker::message&& reply) {
    auto v = wire::unpack(reply.data);
    std::lock_guard lock{g->mutex};
    if (!v || !v->is_object()) return;
    if (text_field(*v, "type") == "error") {
      errc code = errc::internal;
      (void)from_string(error_code_of(*v), code);
      g->refused = make_error(code, error_message_of(*v, std::string{}));
    } else {
      g->answers.push_back(std::move(*v));
    }
    g->arrived.notify_all();
  });
  if (!sub) return sub.error();
  auto expected = live_count(orchestrators_only);
  if (auto sent = nats_->publish(subject, inbox, wire::pack(body)); !sent) return sent.error();
  std::unique_lock lock{g->mutex};
  g->arrived.wait_for(lock, std::chrono::milliseconds(options_.list_wait_ms),
                      [&] { return g->refused || (expected > 0 && g->answers.size() >= expected); });
  // None yet (every orchestrator slow, a machine under load): the first answer is waited for, up
  // to the request timeout, rather than answering "unavailable" while they are there.
  if (expected > 0 && !g->refused && g->answers.empty() && options_.request_timeout_ms > options_.list_wait_ms)
    g->arrived.wait_for(lock, std::chrono::milliseconds(options_.request_timeout_ms - options_.list_wait_ms),
                        [&] { return g->refused || !g->answers.empty(); });
  auto answers = std::move(g->answers);
  auto refused = g->refused;
  lock.unlock();
  (void)(*sub)->unsubscribe();
  if (refused) return *refused;
  if (answers.empty())
    return make_error(errc::unavailable, std::string(orchestrators_only ? "no orchestrator" : "no node") + " answered within " +
                                           std::to_string(options_.list_wait_ms) + " ms");
  return answers;
}

// The JSON body of a request that acts (start, answer, cancel, retry): who acts is the token's
// name, so a body that names someone (`by`) is refused rather than silently overruled.
result<value> acting_body(const http_request& request) {
  auto body = json_body(request);
  if (body && body->is_object() && body->contains("by"))
    return make_error(errc::invalid_argument, "by is not taken: what a request does is recorded under the name of its token");
  return body;
}

void api::handle(http_request request, const responder& respond) {
  auto t = parse_target(request.target);
  auto parts = parts_of(t.path);
  const auto& m = request.method;
  if (t.path == "/healthz" && m == "GET") return respond(json(200, value{{"status", "ok"}, {"streams", streams()}}));
  // Only what a browser meant to send here, from the gateway's own pages, for its own names.
  if (auto refused = check_request(request, options_.hosts, t.path.rfind("/api/", 0) == 0))
    return respond(json(refused->status, value{{"error", {{"code", refused->code}, {"message", refused->message}}}}));
  // Webhook triggers (docs/WORKFLOWS.md): authenticated by the hook's own secret or token.
  if (parts.size() == 2 && parts[0] == "hooks") {
    if (m != "POST") return respond(failure(make_error(errc::not_found, "a webhook takes POST only")));
    auto checked = check_webhook(options_.webhooks, parts[1], request);
    if (!checked) {
      auto r = failure(checked.error());
      if (checked.error().code == errc::denied) r.status = 401;
      return respond(r);
    }
    value invoke{{"v", 1}, {"type", "invoke"}, {"agent", checked->agent}, {"input", checked->input},
                 {"idempotency_key", checked->idempotency_key}};
    auto reply = this->invoke(invoke, checked->who);
    if (!reply) return respond(failure(reply.error()));
    bool created = reply->value("created", true);
    return respond(json(created ? 202 : 200, value{{"run_id", reply->value("run_id", std::string{})}, {"created", created}}));
  }
  // The dashboard's pages and files hold no data (the page asks the API for it, with the token).
  if (t.path.rfind("/api/", 0) != 0 && t.path != "/readyz" && t.path != "/metrics") {
    if (m == "GET" || m == "HEAD")
      if (auto page = dashboard_response(t.path)) return respond(std::move(*page));
    return respond(failure(make_error(errc::not_found, "no page " + m + " " + t.path)));
  }
  // Every other route asks for a token, and acts under its name. With no token known at all (a
  // tokens file emptied or removed) nothing is open: every request is refused.
  auto it = request.headers.find("authorization");
  auto name = it == request.headers.end() ? std::nullopt : tokens_->who(it->second);
  if (!name) {
    auto r = json(401, value{{"error", {{"code", "denied"}, {"message", tokens_->any() ? "a bearer token is required"
                                                                                      : "this gateway knows no token: make one with `keel token add NAME`"}}}});
    r.headers.emplace_back("WWW-Authenticate", "Bearer");
    return respond(r);
  }
  const std::string who = *name;
  auto run_subject = [&](const std::string& run, const char* verb) {
    return options_.subjects.base() + ".runs." + run + "." + verb;
  };
  auto acting = [&](const std::string& run, const char* verb) { return options_.subjects.run_verb(run, verb, who); };
  if (t.path == "/metrics" && m == "GET") {  // this node's, for Prometheus (docs/OPERATIONS.md)
    http_response r;
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body = metrics::render();
    return respond(std::move(r));
  }
  if (t.path == "/readyz" && m == "GET") {
    if (!nats_->connected()) return respond(failure(make_error(errc::unavailable, "not connected to NATS")));
    auto answered = ask(options_.subjects.runs_list(), value{{"v", 1}, {"type", "list_runs"}, {"limit", 1}});
    if (!answered) return respond(failure(make_error(errc::unavailable, "no orchestrator answers")));
    return respond(json(200, value{{"status", "ready"}}));
  }
  if (parts.size() < 2 || parts[0] != "api" || parts[1] != "v1")
    return respond(failure(make_error(errc::not_found, "no route " + m + " " + t.path)));
  parts.erase(parts.begin(), parts.begin() + 2);
  // /runs
  if (parts.size() == 1 && parts[0] == "runs" && m == "POST") {
    auto body = acting_body(request);
    if (!body) return respond(failure(body.error()));
    if (!body->contains("agent") || !(*body)["agent"].is_string())
      return respond(failure(make_error(errc::invalid_argument, "agent (a string) is required")));
    value invoke{{"v", 1}, {"type", "invoke"}, {"agent", (*body)["agent"]}, {"input", body->value("input", value(""))}};
    for (const char* key : {"session_id", "idempotency_key", "provider", "model", "concurrency_key"}) {
      if (!body->contains(key)) continue;
      if (!(*body)[key].is_string()) return respond(failure(make_error(errc::invalid_argument, std::string(key) + " must be a string")));
      invoke[key] = (*body)[key];
    }
    auto reply = this->invoke(invoke, who);
    if (!reply) return respond(failure(reply.error()));
    bool created = reply->value("created", true);
    return respond(json(created ? 201 : 200, value{{"run_id", reply->value("run_id", std::string{})}, {"created", created}}));
  }
  if (parts.size() == 1 && parts[0] == "runs" && m == "GET") return list(request, t.query, respond);
  if (parts.size() == 1 && parts[0] == "agents" && m == "GET") return agents(respond);
  if (parts.size() == 1 && parts[0] == "tools" && m == "GET") {
    // What tool workers declared, queue by queue, as the orchestrators hold it.
    auto answer = ask(options_.subjects.tools_list(), value{{"v", 1}, {"type", "list_tools"}});
    if (!answer) return respond(failure(answer.error()));
    value out{{"queues", answer->contains("queues") ? (*answer)["queues"] : value::array()}};
    if (answer->contains("schemas_left_out")) out["schemas_left_out"] = (*answer)["schemas_left_out"];
    return respond(json(200, out));
  }
  if (parts.size() == 1 && parts[0] == "approvals" && m == "GET") {
    // Every step waiting for a person, across the orchestrators, oldest first.
    auto answers = collect(options_.subjects.runs_list(), value{{"v", 1}, {"type", "list_runs"}, {"status", "suspended"}, {"limit", 1000}});
    if (!answers) return respond(failure(answers.error()));
    value approvals = value::array();
    bool more = false;  // an orchestrator holds more than one page of waiting runs
    for (auto& a : *answers) {
      more = more || a.contains("next") || a.value("cut", false);
      for (auto& r : a["runs"])
        if (r.contains("waiting")) {
          approvals.push_back(value{{"run_id", r["run_id"]}, {"agent", r["agent"]}, {"step_key", r["waiting"]["step_key"]},
                                    {"form", r["waiting"]["form"]}, {"waiting_since_ms", r["updated_ms"]}});
          // A sub-agent's run: the runs above it, root first (the person answers for the chain).
          if (r.contains("chain")) approvals.back()["chain"] = r["chain"];
          if (r.contains("parent")) approvals.back()["parent"] = r["parent"];
          // Workflows: when it gets the agent's default answer, and whom it was escalated to.
          for (const char* key : {"expires_ms", "escalated_to"})
            if (r["waiting"].contains(key)) approvals.back()[key] = r["waiting"][key];
        }
    }
    std::sort(approvals.begin(), approvals.end(), [](const value& a, const value& b) {
      return a.value("waiting_since_ms", std::int64_t{0}) < b.value("waiting_since_ms", std::int64_t{0});
    });
    return respond(json(200, value{{"approvals", approvals}, {"more", more}}));
  }
  // Schedules (docs/WORKFLOWS.md): one orchestrator that drives them answers.
  if (parts.size() == 1 && parts[0] == "schedules" && m == "GET") {
    auto reply = ask(options_.subjects.base() + ".schedules.list", value{{"v", 1}, {"type", "list_schedules"}});
    if (!reply) return respond(failure(reply.error()));
    return respond(json(200, value{{"schedules", (*reply)["schedules"]}}));
  }
  if (parts.size() == 1 && parts[0] == "costs" && m == "GET") {
    // Cost and tokens per agent over a window, across the orchestrators (docs/OPERATIONS.md).
    value body{{"v", 1}, {"type", "costs"}};
    for (const char* key : {"since_ms", "until_ms"}) {
      auto it = t.query.find(key);
      if (it == t.query.end()) continue;
      char* end = nullptr;
      errno = 0;
      long long n = std::strtoll(it->second.c_str(), &end, 10);
      if (it->second.empty() || *end != '\0' || errno == ERANGE || n < 0)
        return respond(failure(make_error(errc::invalid_argument, std::string(key) + " must be a whole number of milliseconds since 1970")));
      body[key] = static_cast<std::int64_t>(n);
    }
    auto answers = collect(options_.subjects.base() + ".costs", body);
    if (!answers) return respond(failure(answers.error()));
    std::map<std::string, value> by_agent;
    bool cut = false;
    std::int64_t read = 0;
    for (auto& a : *answers) {
      cut = cut || a.value("cut", false);
      read += a.value("runs_read", std::int64_t{0});
      for (auto& row : a["agents"]) {
        auto& total = by_agent[row.value("agent", std::string())];
        if (total.is_null()) {
          total = row;
          continue;
        }
        for (const char* k : {"runs", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"})
          total[k] = total.value(k, std::int64_t{0}) + row.value(k, std::int64_t{0});
        total["cost_usd"] = total.value("cost_usd", 0.0) + row.value("cost_usd", 0.0);
      }
    }
    value agents = value::array();
    for (auto& [name, row] : by_agent) agents.push_back(row);
    return respond(json(200, value{{"agents", agents}, {"runs_read", read}, {"cut", cut}, {"orchestrators", answers->size()}}));
  }
  if (parts.size() == 1 && parts[0] == "queues" && m == "GET") {
    auto reply = ask(options_.subjects.base() + ".queues.list", value{{"v", 1}, {"type", "list_queues"}});
    if (!reply) return respond(failure(reply.error()));
    return respond(json(200, value{{"queues", (*reply)["queues"]}}));
  }
  // Schedules made and removed through the API (docs/WORKFLOWS.md).
  if (parts.size() == 1 && parts[0] == "schedules" && m == "POST") {
    auto body = acting_body(request);
    if (!body) return respond(failure(body.error()));
    auto reply = ask(options_.subjects.base() + ".schedules.define." + who, value{{"v", 1}, {"type", "define_schedule"}, {"schedule", *body}});
    if (!reply) return respond(failure(reply.error()));
    return respond(json(reply->value("created", true) ? 201 : 200, (*reply)["schedule"]));
  }
  if (parts.size() == 2 && parts[0] == "schedules" && m == "DELETE") {
    auto body = acting_body(request);
    if (!body) return respond(failure(body.error()));
    if (!is_valid_name(parts[1])) return respond(failure(make_error(errc::invalid_argument, "a schedule's name is [A-Za-z0-9_-]")));
    auto reply = ask(options_.subjects.base() + ".schedules." + parts[1] + ".delete." + who, value{{"v", 1}, {"type", "delete_schedule"}});
    if (!reply) return respond(failure(reply.error()));
    return respond(json(200, value{{"name", parts[1]}, {"removed", true}, {"by", reply->value("by", std::string())}}));
  }
  if (parts.size() == 3 && parts[0] == "schedules" && (parts[2] == "pause" || parts[2] == "resume") && m == "POST") {
    auto body = acting_body(request);
    if (!body) return respond(failure(body.error()));
    if (!is_valid_name(parts[1])) return respond(failure(make_error(errc::invalid_argument, "a schedule's name is [A-Za-z0-9_-]")));
    auto reply = ask(options_.subjects.base() + ".schedules." + parts[1] + "." + parts[2] + "." + who, value{{"v", 1}, {"type", parts[2]}});
    if (!reply) return respond(failure(reply.error()));
    return respond(json(200, (*reply)["schedule"]));
  }
  if (parts.size() == 1 && parts[0] == "nodes" && m == "GET") {
    auto answers = collect(options_.subjects.nodes_ping(), value{{"v", 1}, {"type", "ping"}}, false);
    if (!answers) return respond(failure(answers.error()));
    std::map<std::string, value> nodes;  // one answer per node, by id
    for (auto& a : *answers) {
      auto id = a.value("node_id", std::string{});
      if (id.empty()) continue;
      a.erase("v");
      a.erase("type");
      nodes[id] = std::move(a);
    }
    value list = value::array();
    for (auto& [id, n] : nodes) list.push_back(std::move(n));
    return respond(json(200, value{{"nodes", list}}));
  }
  if (actions(who, parts, request, respond)) return;
  if (parts.size() >= 2 && parts[0] == "runs") {
    const auto& run = parts[1];
    if (!run_id{run}.valid()) return respond(failure(make_error(errc::not_found, "'" + run + "' is not a keel run id")));
    if (parts.size() == 2 && m == "GET") {
      auto reply = ask(run_subject(run, "get"), value{{"v", 1}, {"type", "get_run"}});
      if (!reply) return respond(failure(reply.error()));
      return respond(json(200, (*reply)["run"]));
    }
    if (parts.size() == 3 && parts[2] == "stream" && m == "GET") return stream(request, run, t.query, respond);
    if (parts.size() == 3 && parts[2] == "events" && m == "GET") {
      auto after = count_param(t, "after", 0);
      auto limit = count_param(t, "limit", 500);
      if (!after) return respond(failure(after.error()));
      if (!limit) return respond(failure(limit.error()));
      auto reply = ask(run_subject(run, "history"),
                       value{{"v", 1}, {"type", "get_history"}, {"from_seq", *after + 1}, {"limit", std::max<std::uint64_t>(1, *limit)}});
      if (!reply) return respond(failure(reply.error()));
      return respond(json(200, value{{"run_id", run}, {"status", (*reply)["status"]}, {"events", (*reply)["events"]},
                                     {"more", (*reply)["more"]}}));
    }
    if (parts.size() == 3 && parts[2] == "cancel" && m == "POST") {
      auto body = acting_body(request);
      if (!body) return respond(failure(body.error()));
      value cancel{{"v", 1}, {"type", "cancel"}};
      if (body->contains("reason")) cancel["reason"] = (*body)["reason"];
      auto reply = ask(acting(run, "cancel"), cancel);
      if (!reply) return respond(failure(reply.error()));
      return respond(json(200, (*reply)["run"]));
    }
    if (parts.size() == 3 && parts[2] == "retry" && m == "POST") {
      auto body = acting_body(request);
      if (!body) return respond(failure(body.error()));
      auto reply = ask(acting(run, "retry"), value{{"v", 1}, {"type", "retry"}});
      if (!reply) return respond(failure(reply.error()));
      return respond(json(200, (*reply)["run"]));
    }
    // An outside event for the run (docs/WORKFLOWS.md): {name, payload, id}; the id may come as the
    // Idempotency-Key header instead (a repeat with it is not taken twice).
    if (parts.size() == 3 && parts[2] == "signals" && m == "POST") {
      auto body = acting_body(request);
      if (!body) return respond(failure(body.error()));
      if (!body->is_object() || !body->contains("name") || !(*body)["name"].is_string())
        return respond(failure(make_error(errc::invalid_argument, "a signal names its event: {\"name\": \"...\", \"payload\": ...}")));
      value signal{{"v", 1}, {"type", "signal"}, {"name", (*body)["name"]}};
      if (body->contains("payload")) signal["payload"] = (*body)["payload"];
      if (body->contains("id")) signal["id"] = (*body)["id"];
      else if (auto key = request.headers.find("idempotency-key"); key != request.headers.end() && !key->second.empty())
        signal["id"] = key->second;
      auto reply = ask(acting(run, "signal"), signal);
      if (!reply) return respond(failure(reply.error()));
      return respond(json(200, value{{"run_id", run}, {"name", (*body)["name"]}, {"id", (*reply)["id"]},
                                     {"delivered", reply->value("delivered", false)},
                                     {"duplicate", reply->value("duplicate", false)}}));
    }
    if (parts.size() == 5 && parts[2] == "steps" && (parts[4] == "approve" || parts[4] == "reject") && m == "POST") {
      auto body = acting_body(request);
      if (!body) return respond(failure(body.error()));
      bool approved = parts[4] == "approve";
      value data{{"approved", approved}};
      if (body->contains("feedback")) data["feedback"] = (*body)["feedback"];
      if (approved && body->contains("always")) data["always"] = (*body)["always"];
      if (approved && body->contains("always_scope")) data["always_scope"] = (*body)["always_scope"];
      // Who answered is the token's name (the orchestrator records it from the subject).
      auto reply = ask(acting(run, "resume"), value{{"v", 1}, {"type", "resume"}, {"step_key", parts[3]}, {"data", data}});
      if (!reply) return respond(failure(reply.error()));
      return respond(json(200, value{{"run_id", run}, {"step_key", parts[3]}, {"approved", approved},
                                     {"duplicate", reply->value("duplicate", false)}}));
    }
  }
  return respond(failure(make_error(errc::not_found, "no route " + m + " " + t.path)));
}

// A position in the list of runs, as clients hold it: "<created_ms>.<run id>".
std::string cursor_text(const value& next) {
  return std::to_string(next.value("created_ms", std::int64_t{0})) + "." + next.value("run_id", std::string{});
}

result<value> cursor_of(const std::string& text) {
  auto dot = text.find('.');
  if (dot == std::string::npos || dot == 0 || dot > 18 || text.find_first_not_of("0123456789") != dot ||
      !run_id{text.substr(dot + 1)}.valid())
    return make_error(errc::invalid_argument, "cursor is not one this API gave (a 'next' of an earlier page)");
  return value{{"created_ms", std::stoll(text.substr(0, dot))}, {"run_id", text.substr(dot + 1)}};
}

// The runs of every orchestrator, merged newest first. Each answers a page and where it stopped
// when it holds more; the merged page ends at the highest such point, so that the next page (from
// that cursor) misses no run of any orchestrator.
void api::list(const http_request&, const std::map<std::string, std::string>& query, const responder& respond) {
  target t;
  t.query = query;
  auto limit = count_param(t, "limit", 50);
  if (!limit) return respond(failure(limit.error()));
  *limit = std::clamp<std::uint64_t>(*limit, 1, 1000);
  value body{{"v", 1}, {"type", "list_runs"}, {"limit", *limit}};
  for (const char* key : {"status", "agent", "session_id"})
    if (auto it = query.find(key); it != query.end() && !it->second.empty()) body[key] = it->second;
  if (auto it = query.find("q"); it != query.end() && !it->second.empty()) body["text"] = it->second;
  for (const char* key : {"since_ms", "until_ms"}) {
    if (!query.count(key)) continue;
    auto n = count_param(t, key, 0);
    if (!n) return respond(failure(n.error()));
    body[key] = static_cast<std::int64_t>(std::min<std::uint64_t>(*n, INT64_MAX));
  }
  if (auto it = query.find("cursor"); it != query.end() && !it->second.empty()) {
    auto c = cursor_of(it->second);
    if (!c) return respond(failure(c.error()));
    body["before"] = *c;
  }
  auto answers = collect(options_.subjects.runs_list(), body);
  if (!answers) return respond(failure(answers.error()));
  std::vector<value> runs;
  std::optional<value> stop;  // the highest point where an orchestrator stopped with more to give
  auto above = [](const value& a, const value& b) {  // a lists before b
    auto ta = a.value("created_ms", std::int64_t{0}), tb = b.value("created_ms", std::int64_t{0});
    return ta != tb ? ta > tb : a.value("run_id", std::string{}) > b.value("run_id", std::string{});
  };
  value nodes = value::array();
  for (auto& a : *answers) {
    nodes.push_back(a.value("node_id", std::string{}));
    for (auto& r : a["runs"]) runs.push_back(std::move(r));
    if (a.contains("next") && a["next"].is_object() && (!stop || above(a["next"], *stop))) stop = a["next"];
  }
  std::sort(runs.begin(), runs.end(), above);
  if (stop) {
    auto end = std::find_if(runs.begin(), runs.end(), [&](const value& r) { return !above(r, *stop) && r.value("run_id", std::string{}) != (*stop).value("run_id", std::string{}); });
    runs.erase(end, runs.end());
  }
  // The next page starts below the last run shown when the page was cut to the limit, else below
  // where the orchestrators stopped.
  std::optional<value> next = stop;
  if (runs.size() > *limit) {
    runs.resize(*limit);
    next = value{{"created_ms", runs.back()["created_ms"]}, {"run_id", runs.back()["run_id"]}};
  }
  value out{{"runs", runs}, {"orchestrators", nodes}};
  // Orchestrators heard from within the last minute (and not stopped) that did not answer in
  // time: down, paused or slow; their runs are not in this page.
  value missing = value::array();
  for (const auto& id : recent_ids(true, 60'000))
    if (std::find(nodes.begin(), nodes.end(), value(id)) == nodes.end()) missing.push_back(id);
  if (!missing.empty()) out["missing"] = missing;
  if (next) out["next_cursor"] = cursor_text(*next);
  respond(json(200, out));
}

// The agents the orchestrators know, each with the workers that serve it now.
void api::agents(const responder& respond) {
  auto answers = collect(options_.subjects.agents_list(), value{{"v", 1}, {"type", "list_agents"}});
  if (!answers) return respond(failure(answers.error()));
  auto nodes = collect(options_.subjects.nodes_ping(), value{{"v", 1}, {"type", "ping"}}, false);
  std::map<std::string, value> by_id;
  for (auto& a : *answers)
    for (auto& agent : a["agents"]) {
      auto id = agent.value("id", std::string{});
      if (!id.empty() && !by_id.count(id)) by_id[id] = std::move(agent);
    }
  for (auto& [id, agent] : by_id) {
    value workers = value::array();
    std::int64_t slots = 0, busy = 0;
    if (nodes)
      for (auto& n : *nodes) {
        const auto& served = n["agents"];
        if (!served.is_array() || std::find(served.begin(), served.end(), value(id)) == served.end()) continue;
        workers.push_back(n.value("node_id", std::string{}));
        slots += n.value("slots", std::int64_t{0});
        busy += n.value("slots_busy", std::int64_t{0});
      }
    agent["workers"] = workers;
    agent["slots"] = slots;
    agent["slots_busy"] = busy;
  }
  value list = value::array();
  for (auto& [id, agent] : by_id) list.push_back(std::move(agent));
  respond(json(200, value{{"agents", list}}));
}

// GET /api/v1/runs/{id}/stream: Server-Sent Events from after `Last-Event-ID` (a reconnecting
// browser sends it) or `?after=`.
void api::stream(const http_request& request, const std::string& run, const std::map<std::string, std::string>& query,
                 const responder& respond) {
  target t;
  t.query = query;
  auto after = count_param(t, "after", 0);
  if (!after) return respond(failure(after.error()));
  if (auto it = request.headers.find("last-event-id"); it != request.headers.end() && !it->second.empty()) {
    target h;
    h.query["last_event_id"] = it->second;
    auto id = count_param(h, "last_event_id", 0);
    if (!id) return respond(failure(make_error(errc::invalid_argument, "Last-Event-ID must be an event's seq")));
    after = id;
  }
  if (!streams_->has_room())
    return respond(failure(make_error(errc::unavailable, "this gateway streams to as many clients as it may; try another")));
  auto reply = ask(options_.subjects.base() + ".runs." + run + ".get", value{{"v", 1}, {"type", "get_run"}});
  if (!reply) return respond(failure(reply.error()));
  http_response r;
  r.content_type = "text/event-stream; charset=utf-8";
  secure(r);
  r.headers.emplace_back("X-Accel-Buffering", "no");
  auto streams = streams_;
  auto from = *after;
  r.on_stream = [streams, run, from](std::shared_ptr<stream_sink> sink) { streams->follow(run, from, std::move(sink)); };
  respond(std::move(r));
}

} // namespace keel::gateway
