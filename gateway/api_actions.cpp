// The API's forks, reruns, replays and bulk actions (docs/FORKS.md, docs/HTTP.md). A fork or a
// replay is asked of the orchestrator that owns the recorded run; a bulk action lists the runs its
// filter chooses (a preview, nothing done) and acts only on the ids the client sends back from it,
// each checked again against the filter when it is acted on.
#include "gateway/api.hpp"
#include "gateway/request.hpp"

#include "runtime/bulk_actions.hpp"
#include "runtime/clock.hpp"
#include "runtime/ids.hpp"

#include <set>

namespace keel::gateway {

using wire::value;

namespace {

constexpr std::int64_t bulk_time_max_ms = 60'000;

std::string text_of(const value& v, const char* key) {
  auto it = v.find(key);
  return it != v.end() && it->is_string() ? it->get<std::string>() : std::string();
}

} // namespace

bool api::actions(const std::string& who, const std::vector<std::string>& parts, const http_request& request,
                  const responder& respond) {
  const auto& m = request.method;
  auto answer = [&](http_response r) {
    respond(std::move(r));
    return true;
  };
  if (parts.size() == 2 && parts[0] == "runs" && parts[1] == "bulk") {
    if (m != "POST") return answer(failure(make_error(errc::not_found, "bulk actions take POST")));
    auto body = acting_body(request);
    if (!body) return answer(failure(body.error()));
    auto done = bulk(who, *body);
    if (!done) return answer(failure(done.error()));
    return answer(json(200, *done));
  }
  if (parts.size() != 3 || parts[0] != "runs" || m != "POST") return false;
  const auto& run = parts[1];
  const auto& verb = parts[2];
  if (verb != "fork" && verb != "rerun" && verb != "replay") return false;
  if (!run_id{run}.valid()) return answer(failure(make_error(errc::not_found, "'" + run + "' is not a keel run id")));
  auto body = acting_body(request);
  if (!body) return answer(failure(body.error()));
  if (!body->is_object()) return answer(failure(make_error(errc::invalid_argument, "the body is a JSON object")));
  if (verb == "replay") {
    auto reply = ask(options_.subjects.base() + ".runs." + run + ".replay", value{{"v", 1}, {"type", "replay"}});
    if (!reply) return answer(failure(reply.error()));
    reply->erase("v");
    reply->erase("type");
    return answer(json(200, *reply));
  }
  value fork{{"v", 1}, {"type", "fork"}};
  if (verb == "rerun") {  // a fork with nothing changed: only where it goes live
    for (auto it = body->begin(); it != body->end(); ++it)
      if (it.key() != "from_step" && it.key() != "idempotency_key")
        return answer(failure(make_error(errc::invalid_argument, "a rerun takes from_step (and idempotency_key); '" +
                                                                    it.key() + "' is a fork's")));
    if (!body->contains("from_step")) return answer(failure(make_error(errc::invalid_argument, "from_step is required")));
    fork["at_step"] = (*body)["from_step"];
    if (body->contains("idempotency_key")) fork["idempotency_key"] = (*body)["idempotency_key"];
  } else {
    for (auto it = body->begin(); it != body->end(); ++it) fork[it.key()] = it.value();
  }
  // The orchestrator checks every field; the answer names the new run.
  auto reply = ask(options_.subjects.run_fork(run, who), fork);
  if (!reply) return answer(failure(reply.error()));
  bool created = reply->value("created", true);
  auto made = text_of(*reply, "run_id");
  // Where the fork went live, as the fork holds it (an answer given anew may cut it earlier; a
  // repeat of the key names the fork made before, at its own step).
  value at = fork.value("at_step", value());
  if (auto shown = ask(options_.subjects.base() + ".runs." + made + ".get", value{{"v", 1}, {"type", "get_run"}}); shown)
    if ((*shown)["run"].contains("fork")) at = (*shown)["run"]["fork"].value("at_step", at);
  return answer(json(created ? 201 : 200, value{{"run_id", made}, {"created", created}, {"forked_from", run}, {"at_step", at}}));
}

result<value> api::bulk(const std::string& who, const value& body) {
  if (!body.is_object()) return make_error(errc::invalid_argument, "the body is a JSON object");
  for (auto it = body.begin(); it != body.end(); ++it)
    if (it.key() != "action" && it.key() != "filter" && it.key() != "feedback" && it.key() != "run_ids")
      return make_error(errc::invalid_argument, "a bulk action has no field '" + it.key() + "' (action, filter, feedback, run_ids)");
  auto action = text_of(body, "action");
  if (!is_bulk_action(action)) return make_error(errc::invalid_argument, "action is " + std::string(bulk_actions_text));
  value filter = body.value("filter", value::object());
  if (!filter.is_object()) return make_error(errc::invalid_argument, "filter is a map of status and agent");
  for (auto it = filter.begin(); it != filter.end(); ++it)
    if ((it.key() != "status" && it.key() != "agent") || !it.value().is_string())
      return make_error(errc::invalid_argument, "filter takes status and agent, as strings; not '" + it.key() + "'");
  auto status = text_of(filter, "status"), agent = text_of(filter, "agent");
  if (!status.empty() && !bulk_applies(action, status))
    return make_error(errc::invalid_argument, action + " does not apply to " + status + " runs");
  if (body.contains("feedback") && (!body["feedback"].is_string() || body["feedback"].get<std::string>().size() > 16'384))
    return make_error(errc::invalid_argument, "feedback is a string of at most 16384 bytes");
  auto feedback = text_of(body, "feedback");
  auto matches = [&](const value& run) {
    auto s = text_of(run, "status");
    return bulk_applies(action, s) && (status.empty() || s == status) && (agent.empty() || text_of(run, "agent") == agent);
  };
  if (!body.contains("run_ids")) {
    // The preview: the runs the action would touch now, newest first.
    value list{{"v", 1}, {"type", "list_runs"}, {"limit", bulk_runs_max}};
    if (!status.empty()) list["status"] = status;
    else if (action == "retry") list["status"] = "failed";
    else if (action != "cancel") list["status"] = "suspended";
    if (!agent.empty()) list["agent"] = agent;
    auto answers = collect(options_.subjects.runs_list(), list);
    if (!answers) return answers.error();
    std::vector<value> runs;
    for (auto& a : *answers)
      for (auto& r : a["runs"])
        if (matches(r)) {
          value shown{{"run_id", r["run_id"]}, {"agent", r["agent"]}, {"status", r["status"]}, {"created_ms", r["created_ms"]}};
          if (r.contains("waiting") && r["waiting"].is_object()) shown["step_key"] = text_of(r["waiting"], "step_key");
          runs.push_back(std::move(shown));
        }
    std::sort(runs.begin(), runs.end(), [](const value& a, const value& b) {
      return a.value("created_ms", std::int64_t{0}) > b.value("created_ms", std::int64_t{0});
    });
    if (runs.size() > bulk_runs_max) runs.resize(bulk_runs_max);
    return value{{"action", action}, {"runs", runs}, {"count", runs.size()}};
  }
  // The runs confirmed: ids, or {run_id, step_key} as the preview showed them. An answer
  // (approve, reject) needs the step key: the run may have moved on to another step since, which
  // nobody saw.
  const auto& ids = body["run_ids"];
  if (!ids.is_array() || ids.size() > bulk_runs_max)
    return make_error(errc::invalid_argument, "run_ids is a list of at most " + std::to_string(bulk_runs_max) + " run ids");
  const bool answers = action == "approve" || action == "reject";
  std::vector<std::pair<std::string, std::string>> confirmed;  // run, step key previewed
  for (const auto& entry : ids) {
    std::string id = entry.is_string() ? entry.get<std::string>() : entry.is_object() ? text_of(entry, "run_id") : std::string();
    std::string key = entry.is_object() ? text_of(entry, "step_key") : std::string();
    if (!run_id{id}.valid())
      return make_error(errc::invalid_argument, "run_ids holds something that is not a keel run id (or {run_id, step_key})");
    if (answers && key.empty())
      return make_error(errc::invalid_argument, action + " takes each run with the step key its preview showed: "
                                                         "run_ids: [{\"run_id\", \"step_key\"}]");
    confirmed.emplace_back(std::move(id), std::move(key));
  }
  std::set<std::string> seen;
  value results = value::array();
  std::size_t done = 0, failed = 0;
  // One request at a time, each bounded by the request timeout; the whole bounded too, so that a
  // slow cluster never holds an HTTP thread for long: what was not tried is said, to send again.
  const auto deadline = steady_ms() + bulk_time_max_ms;
  for (const auto& [id, previewed_key] : confirmed) {
    if (!seen.insert(id).second) continue;  // once each
    if (steady_ms() >= deadline) {
      results.push_back(value{{"run_id", id}, {"ok", false},
                              {"error", "not tried: the action ran for " + std::to_string(bulk_time_max_ms / 1000) +
                                          " s; send the ids not done again"}});
      ++failed;
      continue;
    }
    auto act = [&]() -> result<void> {
      // As it is now: a run that changed since the preview is left alone.
      auto now = ask(options_.subjects.base() + ".runs." + id + ".get", value{{"v", 1}, {"type", "get_run"}});
      if (!now) return now.error();
      const auto& run = (*now)["run"];
      if (!matches(run))
        return make_error(errc::conflict, "it is " + text_of(run, "status") + " now: no longer one the filter chooses");
      result<value> reply = value();
      if (action == "cancel") {
        reply = ask(options_.subjects.run_verb(id, "cancel", who),
                    value{{"v", 1}, {"type", "cancel"}, {"reason", feedback.empty() ? "cancelled in bulk" : feedback}});
      } else if (action == "retry") {
        reply = ask(options_.subjects.run_verb(id, "retry", who), value{{"v", 1}, {"type", "retry"}});
      } else {
        auto key = run.contains("waiting") && run["waiting"].is_object() ? text_of(run["waiting"], "step_key") : std::string();
        if (key.empty()) return make_error(errc::conflict, "it waits for no answer now");
        if (key != previewed_key)
          return make_error(errc::conflict, "it waits on " + key + " now, not on " + previewed_key + " as previewed: left alone");
        reply = ask(options_.subjects.run_verb(id, "resume", who),
                    value{{"v", 1}, {"type", "resume"}, {"step_key", key},
                          {"data", value{{"approved", action == "approve"}, {"feedback", feedback}}}});
      }
      if (!reply) return reply.error();
      return {};
    };
    auto outcome = act();
    value one{{"run_id", id}, {"ok", bool(outcome)}};
    if (!outcome) one["error"] = outcome.error().message;
    (outcome ? done : failed) += 1;
    results.push_back(std::move(one));
  }
  return value{{"action", action}, {"results", results}, {"done", done}, {"failed", failed}};
}

} // namespace keel::gateway
