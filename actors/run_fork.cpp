// Forks (docs/FORKS.md): a recorded run's conversation cut after a model step (or before a call
// whose approval is answered anew), its events up to there marked replayed, and a new run's state
// that goes on from that point.
#include "actors/run_fork.hpp"
#include "actors/event_fields.hpp"

#include "llm/conversation.hpp"

#include <algorithm>
#include <set>

namespace keel::actors {

using wire::value;

namespace {

constexpr std::size_t fork_field_bytes_max = 256;
constexpr std::size_t system_prompt_bytes_max = 256 << 10;
constexpr std::size_t answers_max = 100;

// The kinds of event that tell what a step did; the rest (the run's own start and end, retries,
// queues, timers of the recorded run) are not the fork's.
const std::set<std::string>& step_events() {
  static const std::set<std::string> kinds{
    "llm_step_started", "llm_step_completed", "tool_call_started", "tool_call_completed", "suspend", "resumed",
    "approval_escalated", "approval_expired", "wait_started", "wait_ended", "event_received", "sub_agent_started",
    "fan_out_started", "fan_out_child_ended"};
  return kinds;
}

// The task number in a step key ("approve-7": 7).
std::uint64_t key_number(const std::string& key) {
  auto dash = key.rfind('-');
  if (dash == std::string::npos) return 0;
  return std::strtoull(key.c_str() + dash + 1, nullptr, 10);
}

} // namespace

result<fork_request> fork_request_from_value(const value& body) {
  if (!body.is_object()) return make_error(errc::malformed, "a fork request is a map");
  fork_request r;
  for (auto it = body.begin(); it != body.end(); ++it) {
    const auto& key = it.key();
    const auto& v = it.value();
    auto text = [&](std::size_t max) -> result<std::string> {
      if (!v.is_string()) return make_error(errc::invalid_argument, key + " must be a string");
      if (v.get<std::string>().size() > max)
        return make_error(errc::invalid_argument, key + " is " + std::to_string(v.get<std::string>().size()) +
                                                    " bytes; at most " + std::to_string(max));
      return v.get<std::string>();
    };
    if (key == "v" || key == "type") continue;
    if (key == "at_step") {
      if (!v.is_number_integer() || (!v.is_number_unsigned() && v.get<std::int64_t>() < 0))
        return make_error(errc::invalid_argument, "at_step must be a whole number of at least 0");
      r.at_step = v.is_number_unsigned() ? v.get<std::uint64_t>() : static_cast<std::uint64_t>(v.get<std::int64_t>());
    } else if (key == "provider" || key == "model" || key == "idempotency_key") {
      auto t = text(fork_field_bytes_max);
      if (!t) return t.error();
      if (std::any_of(t->begin(), t->end(), [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; }))
        return make_error(errc::invalid_argument, key + " holds a control character");
      if (key == "provider" && !t->empty() && *t != "scripted" && *t != "anthropic" && *t != "openai")
        return make_error(errc::invalid_argument, "provider must be one of scripted, anthropic, openai");
      if (key == "idempotency_key" && t->rfind("keel-", 0) == 0)
        return make_error(errc::invalid_argument, "idempotency keys starting with keel- are keel's own");
      (key == "provider" ? r.provider : key == "model" ? r.model : r.idempotency_key) = *t;
    } else if (key == "system_prompt") {
      auto t = text(system_prompt_bytes_max);
      if (!t) return t.error();
      r.system_prompt = *t;
    } else if (key == "answers") {
      if (!v.is_object()) return make_error(errc::invalid_argument, "answers must be a map of step key to {approved, feedback}");
      if (v.size() > answers_max)
        return make_error(errc::invalid_argument, "answers has " + std::to_string(v.size()) + " entries; at most " +
                                                    std::to_string(answers_max));
      for (auto a = v.begin(); a != v.end(); ++a) {
        const auto& given = a.value();
        if (!given.is_object() || !given.contains("approved") || !given["approved"].is_boolean())
          return make_error(errc::invalid_argument, "answers." + a.key() + " must be {approved: true|false, feedback}");
        for (auto f = given.begin(); f != given.end(); ++f)
          if (f.key() != "approved" && f.key() != "feedback")
            return make_error(errc::invalid_argument, "answers." + a.key() + " has no field '" + f.key() + "' (approved, feedback)");
        store::answer answer{given["approved"].get<bool>(), {}};
        if (given.contains("feedback")) {
          if (!given["feedback"].is_string() || given["feedback"].get<std::string>().size() > 16'384)
            return make_error(errc::invalid_argument, "answers." + a.key() + ".feedback must be a string of at most 16384 bytes");
          answer.feedback = given["feedback"].get<std::string>();
        }
        r.answers[a.key()] = std::move(answer);
      }
    } else {
      return make_error(errc::invalid_argument, "a fork request has no field '" + key +
                                                  "' (at_step, provider, model, system_prompt, answers, idempotency_key)");
    }
  }
  if (!body.contains("at_step")) return make_error(errc::invalid_argument, "at_step is required");
  return r;
}

result<recorded_run> read_recorded_run(const store::run_store& store, const std::string& run_id) {
  auto record = store.get(run_id, false);
  if (!record) return record.error();
  if (!*record) return make_error(errc::not_found, "no run " + run_id);
  recorded_run r;
  r.record = std::move(**record);
  auto count = number_in(r.record.state, "messages_count");
  auto packed = store.messages(run_id, 0, count, SIZE_MAX);
  if (!packed) return packed.error();
  for (const auto& bytes : *packed) {
    auto m = wire::unpack(bytes, store::disk_limits());
    if (!m) return make_error(errc::conflict, "a message of run " + run_id + " cannot be read: " + m.error().message);
    r.messages.push_back(std::move(*m));
  }
  auto events = store.events(run_id);
  if (!events) return events.error();
  r.events = std::move(*events);
  return r;
}

result<fork_plan> plan_fork(const std::string& run_id, const recorded_run& from, const fork_request& request,
                            std::int64_t now_ms) {
  const auto& source = from.record;
  auto state = store::run_state_from_value(source.state);
  if (!state) return make_error(errc::conflict, "run " + source.run_id + " cannot be read: " + state.error().message);
  if (from.messages.size() < state->messages_count)
    return make_error(errc::conflict, "run " + source.run_id + " kept " + std::to_string(from.messages.size()) + " of its " +
                                        std::to_string(state->messages_count) +
                                        " messages (retention.keep_conversations = false drops them when a run ends): "
                                        "it cannot be forked");
  if (from.messages.empty()) return make_error(errc::conflict, "run " + source.run_id + " has no conversation to fork");
  // The approvals the recorded run asked, by step key: the call each was about.
  std::map<std::string, std::string> asked;  // step key -> call id
  for (const auto& e : from.events)
    if (e.event_type == "suspend") asked[text_in(e.data, "step_key")] = text_in(e.data, "call_id");
  std::map<std::string, store::answer> preset;  // by call id
  for (const auto& [key, answer] : request.answers) {
    auto it = asked.find(key);
    if (it == asked.end()) {
      std::string known;
      for (const auto& [k, _] : asked) known += (known.empty() ? "" : ", ") + k;
      return make_error(errc::invalid_argument, "run " + source.run_id + " asked no approval '" + key + "'; it asked: " +
                                                  (known.empty() ? "none" : known));
    }
    preset[it->second] = answer;
  }
  // The model step each call was made in (calls are named by the model; ids repeat only by accident).
  std::map<std::string, std::uint64_t> step_of_call;
  std::uint64_t recorded_steps = 0;
  std::vector<llm::message> messages;
  messages.reserve(from.messages.size());
  for (std::size_t i = 0; i < from.messages.size(); ++i) {
    auto m = llm::message_from_value(from.messages[i]);
    if (!m) return make_error(errc::conflict, "message " + std::to_string(i) + " of run " + source.run_id +
                                                " cannot be read: " + m.error().message);
    if (m->role == "assistant") {
      ++recorded_steps;
      for (const auto& c : m->tool_calls) step_of_call.emplace(c.id, recorded_steps);
    }
    messages.push_back(std::move(*m));
  }
  if (request.at_step > recorded_steps)
    return make_error(errc::invalid_argument, "run " + source.run_id + " has " + std::to_string(recorded_steps) +
                                                " model steps recorded: at_step is at most " + std::to_string(recorded_steps));
  for (const auto& [key, answer] : request.answers) {
    auto step = step_of_call.count(asked[key]) ? step_of_call[asked[key]] : 0;
    if (step > request.at_step)
      return make_error(errc::invalid_argument, key + " was asked at step " + std::to_string(step) + ", after step " +
                                                  std::to_string(request.at_step) + ": fork at step " + std::to_string(step) +
                                                  " or later to answer it again");
  }
  // The cut: after model step at_step and the calls it made, or before the first call that is
  // answered anew or has no recorded result (a run that failed or waits there).
  fork_plan plan;
  store::run_state fork;
  std::vector<store::tool_call> calls;
  std::size_t call_index = 0, kept = 1;
  std::uint64_t step = 0;
  std::string last_text;
  for (std::size_t i = 1; i < messages.size(); ++i) {
    const auto& m = messages[i];
    if (m.role == "assistant") {
      if (call_index < calls.size() || step == request.at_step) break;
      ++step;
      calls.clear();
      for (const auto& c : m.tool_calls) calls.push_back({c.id, c.name, c.arguments});
      call_index = 0;
      last_text = m.text;
      kept = i + 1;
      continue;
    }
    if (m.role != "tool" || call_index >= calls.size() || m.tool_call_id != calls[call_index].id ||
        preset.count(calls[call_index].id))
      break;
    ++call_index;
    ++plan.replayed_calls;
    kept = i + 1;
  }
  if (step > 0 && calls.empty())  // a model answer without calls ends a run: nothing would follow it
    return make_error(errc::invalid_argument, "at step " + std::to_string(step) + " the model gave run " + source.run_id +
                                                "'s final answer: fork at step " + std::to_string(step - 1) +
                                                " at most to change what follows");
  plan.replayed_steps = step;
  // The live calls: from the first one not replayed, in the last step replayed.
  std::set<std::string> live_calls;
  for (std::size_t j = call_index; j < calls.size(); ++j) live_calls.insert(calls[j].id);
  // The recorded steps' events, as far as the cut, marked replayed; the fork's task numbers go on
  // past the highest they name (its approvals' step keys never repeat one of them).
  value replayed = value::array();
  std::uint64_t task_seq = 0;
  bool started = false;
  for (const auto& e : from.events) {
    if (e.event_type == "run_started") {
      started = true;
      continue;
    }
    if (!started || !step_events().count(e.event_type)) continue;
    const auto& d = e.data;
    if ((e.event_type == "llm_step_started" || e.event_type == "llm_step_completed") && number_in(d, "step") > step) break;
    if (live_calls.count(text_in(d, "call_id"))) break;
    value data = d.is_object() ? d : value::object();
    for (const char* dropped : {"cost_usd", "run_cost_usd", "run_usage", "worker", "attempt"}) data.erase(dropped);
    data["replayed"] = true;
    data["recorded_seq"] = e.seq;
    data["recorded_ms"] = e.time_ms;
    task_seq = std::max({task_seq, number_in(d, "task_step"), key_number(text_in(d, "step_key"))});
    replayed.push_back(value{{"event_type", e.event_type}, {"data", std::move(data)}});
  }
  fork.input = state->input;
  fork.messages_count = kept;
  fork.steps = static_cast<std::int64_t>(step);
  fork.task_seq = std::max<std::uint64_t>(task_seq, step + plan.replayed_calls);
  fork.calls = calls;
  fork.call_index = call_index;
  fork.last_text = last_text;
  fork.started_by = request.by;
  fork.provider = request.provider.empty() ? state->provider : request.provider;
  fork.model = request.model.empty() ? state->model : request.model;
  fork.system_prompt = request.system_prompt ? request.system_prompt : state->system_prompt;
  fork.preset_answers = std::move(preset);
  if (state->queue && !state->queue->key.empty()) fork.queue = store::queue_place{"", state->queue->key, 0, 0};
  fork.fork = value{{"run_id", source.run_id}, {"at_step", step}, {"asked_step", request.at_step}, {"by", request.by},
                    {"replayed_steps", step}, {"replayed_calls", plan.replayed_calls}};
  fork.replayed_events = std::move(replayed);
  auto& r = plan.record;
  r.run_id = run_id;
  r.agent = source.agent;
  r.session_id = source.session_id;
  r.idempotency_key = request.idempotency_key;
  r.status = store::run_status::pending;
  r.created_ms = now_ms;
  r.updated_ms = now_ms;
  r.state = store::to_value(fork);
  r.state.erase("messages_count");
  value conversation = value::array();
  for (std::size_t i = 0; i < kept; ++i) conversation.push_back(from.messages[i]);
  r.state["messages"] = std::move(conversation);
  return plan;
}

} // namespace keel::actors
