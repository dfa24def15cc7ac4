#include "actors/run_machine.hpp"
#include "actors/tool_calls.hpp"
#include "actors/workflow_tools.hpp"
#include "runtime/backoff.hpp"

#include "sandbox/command_policy.hpp"

#include "llm/conversation.hpp"
#include "runtime/clock.hpp"
#include "sandbox/tools.hpp"

#include <algorithm>

namespace keel::actors {

using wire::value;
using store::run_status;

namespace {

// Fields of record.state (see docs/PROTOCOL.md, "run state"):
//   input, messages[], steps, usage{}, task_seq, pending{step, attempt, kind, approved},
//   calls[], call_index, suspended{step_key, call_index, form}, answers{key: {...}},
//   allow_rules[{kind, command}] (allow_patterns[] in older runs: exact commands), output,
//   stop_reason, error
constexpr std::size_t event_result_bytes_max = 16 << 10;
constexpr std::size_t state_input_bytes_max = 4 << 10;
constexpr std::size_t answers_kept_max = 256;

std::string preview(const std::string& text, std::size_t max_chars) {
  if (text.size() <= max_chars) return text;
  return text.substr(0, max_chars) + "...";
}

// 1 s, 2 s, 4 s... up to the bound: a service that is down is not asked 100 times a minute.
std::int64_t backoff_ms(std::uint32_t failures, std::int64_t max_ms) { return backoff_wait_ms(failures, 1000, max_ms); }

} // namespace

namespace {
store::token_usage to_stored(const llm::usage& u) {
  return {u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens};
}
llm::usage to_llm(const store::token_usage& u) {
  return {u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens};
}
value usage_value(const store::token_usage& u) { return llm::to_value(to_llm(u)); }
value call_value(const store::tool_call& c) { return value{{"id", c.id}, {"name", c.name}, {"arguments", c.arguments}}; }
} // namespace

run_machine::run_machine(store::run_record record, const config::agent_config& agent, run_context context)
  : record_(std::move(record)), agent_(agent), context_(std::move(context)) {
  auto state = store::run_state_from_value(record_.state);
  if (!state) {
    damaged_ = state.error();
    return;
  }
  state_ = std::move(*state);
  // A record that brings its conversation whole (a new run, or one stored before messages were
  // kept apart): its messages not yet on disk are written by the next transition.
  if (record_.state.is_object() && record_.state.contains("messages") && record_.state["messages"].is_array()) {
    const auto& messages = record_.state["messages"];
    for (std::size_t i = record_.messages_on_disk; i < messages.size(); ++i) packed_[i] = wire::pack(messages[i]);
    record_.state.erase("messages");
  }
}

std::optional<std::string> run_machine::packed(std::size_t index) const {
  auto it = packed_.find(index);
  if (it == packed_.end()) return std::nullopt;
  return it->second;
}

store::run_record run_machine::create(const std::string& run_id, const wire::invoke_request& invoke,
                                      std::int64_t now_ms) {
  store::run_record r;
  r.run_id = run_id;
  r.agent = invoke.agent;
  r.session_id = invoke.session_id;
  r.idempotency_key = invoke.idempotency_key;
  r.status = run_status::pending;
  r.created_ms = now_ms;
  r.updated_ms = now_ms;
  std::string text = invoke.input.is_string() ? invoke.input.get<std::string>()
                     : invoke.input.is_object() && invoke.input.contains("input") &&
                         invoke.input["input"].is_string()
                       ? invoke.input["input"].get<std::string>()
                       : invoke.input.dump();
  store::run_state state;
  // The snapshot is written at every step: a large input is kept whole only where it is written
  // once (the first message and the run_started event); the state keeps its start.
  auto input_bytes = wire::pack(invoke.input).size();
  state.input = input_bytes <= state_input_bytes_max
                  ? invoke.input
                  : value{{"preview", text.substr(0, state_input_bytes_max)}, {"bytes", input_bytes}};
  state.started_by = invoke.by;
  state.parent = invoke.parent;
  state.provider = invoke.provider;
  state.model = invoke.model;
  // Its concurrency key, until start() puts the run in its agent's queue (an agent without one
  // is refused a key before the run is made).
  if (!invoke.concurrency_key.empty()) state.queue = store::queue_place{"", invoke.concurrency_key, 0, 0};
  r.state = store::to_value(state);
  r.state.erase("messages_count");
  llm::message first{"user", text, {}, {}, {}, false};
  r.state["messages"] = value::array({llm::to_value(first)});
  return r;
}

effects run_machine::begin() {
  effects e;
  e.changed = true;
  e.transition.record.run_id = record_.run_id;
  e.transition.stored_status = stored_status_;
  e.from = record_.status;
  return e;
}

void run_machine::emit(effects& e, const std::string& type, wire::value data) {
  record_.last_event_seq += 1;
  e.transition.events.push_back(
    wire::event{record_.run_id, record_.last_event_seq, type, wall_ms(), std::move(data)});
}

// A fork's recorded steps (run_fork.cpp), as its first transition publishes them: once.
void run_machine::emit_replayed(effects& e) {
  if (!state_.replayed_events.is_array()) return;
  for (auto& item : state_.replayed_events) {
    if (!item.is_object() || !item.contains("event_type") || !item["event_type"].is_string()) continue;
    emit(e, item["event_type"].get<std::string>(), item.value("data", value::object()));
  }
  state_.replayed_events = value();
}

store::journal_entry run_machine::next_entry(const std::string& kind, wire::value data) {
  record_.last_journal_seq += 1;
  return {record_.last_journal_seq, kind, wall_ms(), std::move(data)};
}

void run_machine::journal(effects& e, const std::string& kind, wire::value data) {
  e.transition.journal.push_back(next_entry(kind, std::move(data)));
}

void run_machine::add_message(const wire::value& message) {
  packed_[state_.messages_count] = wire::pack(message);
  state_.messages_count += 1;
}

void run_machine::finish(effects& e) {
  record_.updated_ms = wall_ms();
  // The conversation is written message by message, each once; the rest of the state (small)
  // is stored whole, and only the header is copied.
  // Nothing of an unchanged step is written, so nothing counts as written.
  if (e.changed) {
    e.transition.messages_from = record_.messages_on_disk;
    for (std::size_t i = record_.messages_on_disk; i < state_.messages_count; ++i) {
      auto it = packed_.find(i);
      assert(it != packed_.end());  // every message not on disk was added here
      e.transition.messages.push_back(it->second);
    }
    record_.messages_on_disk = state_.messages_count;
    if (!damaged_) record_.state = store::to_value(state_);
    e.transition.snapshot = store::pack_record(record_);
    stored_status_ = record_.status;
    if (state_.queue && !state_.queue->name.empty()) {
      if (record_.status == run_status::queued && e.from != run_status::queued) e.queue_enter = state_.queue;
      if (store::is_terminal(record_.status) && !store::is_terminal(e.from)) e.queue_release = state_.queue;
    }
  }
  auto& header = e.transition.record;
  header.run_id = record_.run_id;
  header.agent = record_.agent;
  header.session_id = record_.session_id;
  header.idempotency_key = record_.idempotency_key;
  header.status = record_.status;
  header.created_ms = record_.created_ms;
  header.updated_ms = record_.updated_ms;
  header.last_event_seq = record_.last_event_seq;
  header.last_journal_seq = record_.last_journal_seq;
  e.leave_memory = !store::is_active(record_.status);
  e.deadline_ms = !e.tasks.empty() && state_.pending ? state_.pending->deadline_ms : 0;
}

// A run whose stored state cannot be read fails with the reason; what was stored is kept beside it.
effects run_machine::fail_damaged() {
  effects e = begin();
  auto message = damaged_->message;
  value kept = record_.state;
  record_.status = run_status::failed;
  record_.state = value{{"error", message}, {"damaged_state", kept}, {"messages_count", record_.messages_on_disk}};
  emit(e, "run_failed", value{{"error", message}});
  finish(e);
  return e;
}

effects run_machine::start(bool task_queued) {
  if (damaged_) {
    if (!store::is_terminal(record_.status)) return fail_damaged();
    return effects{};
  }
  effects e = begin();
  if (record_.status == run_status::pending) {
    record_.status = run_status::running;
    if (agent_.run_timeout_ms > 0) state_.deadline_ms = record_.created_ms + agent_.run_timeout_ms;
    emit(e, "run_started", value{{"agent", record_.agent}, {"input", state_.input},
                                 {"session_id", record_.session_id}, {"by", state_.started_by}});
    if (state_.parent.is_object()) e.transition.events.back().data["parent"] = state_.parent;
    if (state_.fork.is_object()) {  // a fork: its recorded steps, as they went in the run it came from
      e.transition.events.back().data["fork"] = state_.fork;
      emit_replayed(e);
    }
    if (!agent_.run_queue.empty()) enter_queue(e);
    else advance(e);
  } else if (record_.status == run_status::running && state_.pending && task_queued) {
    e.changed = false;  // the broker holds the task: queued, or running on a worker
  } else if (record_.status == run_status::running && state_.pending) {
    resend(e, "recovered after a restart");
  } else if (record_.status == run_status::running) {
    advance(e);
  } else {
    e.changed = false;  // suspended or finished: nothing is due
    // In line: its place is asked for again (its first ask may have been lost; a repeat is harmless).
    if (record_.status == run_status::queued && state_.queue && !state_.queue->name.empty()) e.queue_enter = state_.queue;
  }
  finish(e);
  return e;
}

void run_machine::advance(effects& e) {
  if (state_.call_index < state_.calls.size()) {
    const auto& call = state_.calls[state_.call_index];
    if (is_workflow_tool(agent_, call.name)) return begin_wait(e);
    auto known = declared();
    auto resolved = resolve_call(agent_, known.get(), call.name, call.arguments);
    if (resolved.what == resolved_call::kind::refused) {
      add_tool_message(e, call, value{{"error", resolved.problem}}, true);
      state_.call_index += 1;
      advance(e);
      return;
    }
    const auto chain = state_.parent.is_object() && state_.parent.contains("chain") && state_.parent["chain"].is_array()
                         ? state_.parent["chain"].size() : 0;
    if (resolved.what == resolved_call::kind::sub_agent && chain + 1 >= sub_agent_depth_max) {
      add_tool_message(e, call, value{{"error", "sub-agents nest at most " + std::to_string(sub_agent_depth_max) +
                                                  " runs deep; this run is " + std::to_string(chain + 1) + " deep"}}, true);
      state_.call_index += 1;
      advance(e);
      return;
    }
    if (resolved.what == resolved_call::kind::declared && resolved.tool->approval) {
      ask_first(e, *resolved.tool);
      return;
    }
    dispatch_tool(e, false);
    return;
  }
  if (state_.steps >= agent_.max_steps) {
    complete(e, state_.last_text, "max_steps");
    return;
  }
  auto used = state_.usage.input_tokens + state_.usage.output_tokens;
  if (agent_.max_tokens > 0 && used >= agent_.max_tokens) {
    complete(e, state_.last_text, "max_tokens");
    return;
  }
  if (agent_.budget_usd > 0 && state_.cost_usd + state_.children_cost_usd >= agent_.budget_usd) {
    auto dollars = [](double v) {
      char text[48];
      std::snprintf(text, sizeof text, "$%.6f", v);
      return std::string(text);
    };
    fail(e, "budget_exceeded: the run has cost " + dollars(state_.cost_usd + state_.children_cost_usd) + ", at or over agents." +
              agent_.id + ".budget_usd (" + dollars(agent_.budget_usd) + ")");
    e.transition.events.back().data["reason"] = "budget_exceeded";
    return;
  }
  dispatch_llm(e);
}

std::shared_ptr<const tools::declared_tools> run_machine::declared() const {
  return context_.declared_tools ? context_.declared_tools() : nullptr;
}

// The pending step again, same step number, next attempt, at once.
void run_machine::resend(effects& e, const std::string& reason) {
  auto& pending = *state_.pending;
  pending.attempt += 1;
  if (pending.model) pending.deadline_ms = 0;
  arm_deadline(0);
  emit(e, "task_retried", value{{"task_step", pending.step}, {"attempt", pending.attempt}, {"reason", reason},
                                {"next_try_in_ms", 0}});
  e.tasks.push_back(pending_task());
}

effects run_machine::on_deadline(std::uint64_t step, std::uint32_t attempt) {
  effects e = begin();
  if (record_.status != run_status::running || !wants(step, attempt) || state_.pending->deadline_ms == 0 ||
      now() < state_.pending->deadline_ms) {
    e.changed = false;
    return e;
  }
  auto& pending = *state_.pending;
  const auto limit_ms = agent_.step_timeout_ms;
  const auto seconds = std::to_string(limit_ms / 1000);
  if (pending.model) {
    // A model call that gave no answer: given up and sent again, within node.step_retry_ms.
    emit(e, "step_timed_out", value{{"task_step", step}, {"attempt", attempt}, {"kind", "model"}, {"timeout_ms", limit_ms},
                                    {"outcome", "sent again"}});
    pending.deadline_ms = 0;
    redispatch(e, "the model gave no answer within " + seconds + " s (step_timeout_ms)");
    finish(e);
    return e;
  }
  const store::tool_call call = state_.calls.at(state_.call_index);
  auto queue = pending.queue;
  auto sub_agent = pending.sub_agent;
  if (!queue.empty()) {
    auto known = declared();
    auto tool = declared_tool_of(known.get(), queue, call.name);
    auto timeout = tool ? tool->timeout_ms : tools::timeout_ms_default;
    emit(e, "task_timed_out", value{{"task_step", step}, {"attempt", attempt}, {"queue", queue}, {"tool", call.name},
                                    {"timeout_ms", timeout}});
    state_.pending.reset();
    add_tool_message(e, call,
                     value{{"error", "tool '" + call.name + "' gave no result within " + std::to_string(timeout / 1000) +
                                       " s (from queue '" + queue + "'); it was not run, or is still running"}},
                     true);
  } else if (!sub_agent.empty()) {
    // A child run past the limit is cancelled; the model reads why.
    if (state_.children.is_array())
      for (const auto& child : state_.children)
        if (child.value("task_step", std::uint64_t{0}) == step) e.cancel_children.push_back(child.value("run_id", std::string{}));
    e.cancel_reason = "its parent run " + record_.run_id + " gave it no more time (step_timeout_ms, " + seconds + " s)";
    emit(e, "step_timed_out", value{{"task_step", step}, {"attempt", attempt}, {"kind", "sub_agent"}, {"tool", call.name},
                                    {"timeout_ms", limit_ms}, {"outcome", "child run cancelled"}});
    state_.pending.reset();
    add_tool_message(e, call,
                     value{{"error", "agent " + sub_agent + " gave no result within " + seconds +
                                       " s (step_timeout_ms); its run was cancelled"}},
                     true);
  } else {
    emit(e, "step_timed_out", value{{"task_step", step}, {"attempt", attempt}, {"kind", "tool"}, {"tool", call.name},
                                    {"timeout_ms", limit_ms}, {"outcome", "error result"}});
    state_.pending.reset();
    add_tool_message(e, call,
                     value{{"error", "tool '" + call.name + "' gave no result within " + seconds +
                                       " s (step_timeout_ms); it may not have run, or may still be running"}},
                     true);
  }
  state_.call_index += 1;
  advance(e);
  finish(e);
  return e;
}

effects run_machine::on_task_lost(std::uint64_t step, std::uint32_t attempt, const std::string& reason) {
  effects e = begin();
  if (record_.status != run_status::running || !wants(step, attempt)) {
    e.changed = false;
    return e;
  }
  resend(e, reason);
  finish(e);
  return e;
}

// The pending step again after a failure that may pass: with a growing wait, for as long as
// limits.step_retry_ms allows since its first failure; then the run fails (and can be retried).
void run_machine::redispatch(effects& e, const std::string& reason) {
  auto& pending = *state_.pending;
  auto now = wall_ms();
  if (pending.failing_since_ms == 0) pending.failing_since_ms = now;
  pending.failures += 1;
  auto delay = backoff_ms(pending.failures, context_.retry_backoff_max_ms);
  // The time spent failing: by the clock, or at least the waits asked for so far.
  auto spent = std::max(now - pending.failing_since_ms, pending.waited_ms);
  if (spent + delay > context_.step_retry_ms) {
    fail(e, "step " + std::to_string(pending.step) + " kept failing for " + std::to_string(spent / 1000) + " s (" +
              std::to_string(pending.failures) + " tries; last: " + reason + ")");
    return;
  }
  pending.waited_ms += delay;
  pending.attempt += 1;
  if (pending.model) pending.deadline_ms = 0;  // each attempt of a model call has its own limit
  arm_deadline(delay);
  std::string waiting = std::string(pending.model ? "waiting on the model" : "waiting to run the tool again") +
                        ", next try in " + std::to_string((delay + 999) / 1000) + " s";
  pending.retry = store::step_retry{reason, now + delay, waiting};
  emit(e, "task_retried", value{{"task_step", pending.step}, {"attempt", pending.attempt}, {"reason", reason},
                                {"next_try_in_ms", delay}, {"waiting", waiting}});
  e.tasks.push_back(pending_task());
  e.task_delay_ms = delay;
}

bool run_machine::expects(std::uint64_t step) const {
  return !damaged_ && record_.status == run_status::running && state_.pending && state_.pending->step == step;
}

bool run_machine::expects(const wire::task_result& result) const { return expects(result.step); }

namespace {
// A result as the journal keeps it: the message itself, so that it can be replayed as it came.
value result_entry_data(std::uint64_t step, std::string_view message) {
  return value{{"step", step}, {"message", value::binary(std::vector<std::uint8_t>(message.begin(), message.end()))}};
}
} // namespace

store::journal_entry run_machine::record_result(std::uint64_t step, std::string_view message) {
  return next_entry("result", result_entry_data(step, message));
}

store::journal_entry run_machine::record_result(const wire::task_result& result) {
  return record_result(result.step, wire::encode(result));
}

result<effects> run_machine::apply_received(const store::received_result& received) {
  auto result = wire::decode<wire::task_result>(received.message, store::disk_limits());
  if (!result) return result.error();
  if (result->run_id != record_.run_id)
    return make_error(errc::invalid_argument, "it names run " + result->run_id);
  if (!expects(*result)) return effects{};
  auto entry = record_result(result->step, received.message);
  effects e = on_task_result(*result, true);
  e.transition.journal.insert(e.transition.journal.begin(), std::move(entry));
  e.transition.received_done.push_back(received.order);
  e.transition.sync = false;  // the received result, synced already, is enough to write it again
  return e;
}

namespace {
// Effects of inputs applied one after another, as one transition with everything, in order.
void merge(effects& all, effects&& e) {
  if (!all.changed) {
    auto done = std::move(all.transition.received_done);
    all = std::move(e);
    all.transition.received_done.insert(all.transition.received_done.begin(), done.begin(), done.end());
    return;
  }
  auto append = [](auto& to, auto& from) {
    for (auto& x : from) to.push_back(std::move(x));
  };
  append(all.transition.journal, e.transition.journal);
  append(all.transition.events, e.transition.events);
  append(all.transition.messages, e.transition.messages);
  append(all.transition.received_done, e.transition.received_done);
  all.transition.record = std::move(e.transition.record);
  all.transition.snapshot = std::move(e.transition.snapshot);
  all.tasks = std::move(e.tasks);
  all.task_delay_ms = e.task_delay_ms;
  all.leave_memory = e.leave_memory;
  all.deadline_ms = e.deadline_ms;
  append(all.cancel_children, e.cancel_children);
  if (!e.cancel_reason.empty()) all.cancel_reason = std::move(e.cancel_reason);
  if (e.queue_enter) all.queue_enter = std::move(e.queue_enter);
  if (e.queue_release) all.queue_release = std::move(e.queue_release);
  if (e.join) all.join = std::move(e.join);
}
} // namespace

effects run_machine::recover(const std::vector<store::journal_entry>& tail,
                             const std::vector<store::received_result>& received) {
  effects all;
  for (const auto& entry : tail) {
    if (entry.seq <= record_.last_journal_seq || entry.kind != "result") continue;
    const value& data = entry.data;
    if (!data.is_object() || !data.contains("message") || !data["message"].is_binary()) continue;
    const auto& bin = data["message"].get_binary();
    auto result = wire::decode<wire::task_result>(std::string(bin.begin(), bin.end()), store::disk_limits());
    record_.last_journal_seq = entry.seq;
    if (!result || !expects(*result)) continue;
    merge(all, on_task_result(*result, true));
  }
  for (const auto& r : received) {
    auto e = apply_received(r);
    if (e && e->changed) {
      merge(all, std::move(*e));
      continue;
    }
    all.transition.received_done.push_back(r.order);  // late, repeated or unreadable: dropped
  }
  // Everything here follows from what is on disk already.
  all.transition.sync = false;
  return all;
}

effects run_machine::on_task_result(const wire::task_result& result) {
  return on_task_result(result, false);
}

effects run_machine::on_task_result(const wire::task_result& result, bool recorded) {
  if (!expects(result)) return effects{};  // late or repeated: that step's result was recorded already
  effects e = begin();
  if (!recorded) e.transition.journal.push_back(record_result(result));
  if (!result.ok) {
    std::string message = result.failure ? result.failure->message : "task failed";
    // What another attempt cannot change (a bad request, a missing key, a refused call) ends the
    // run now, with the reason; the rest (overload, network, a worker gone) is tried again. A task
    // handed out too often (its workers died holding it, task_deliveries_max times) goes again as
    // a new attempt after the growing wait: workers killed one after another by something else
    // do not fail the run, and a task that kills every worker taking it costs at most that many
    // workers per wait, until step_retry_ms fails the run.
    errc code = result.failure ? result.failure->code : errc::internal;
    bool transient = code == errc::unavailable || code == errc::timeout || code == errc::io ||
                     code == errc::internal || code == errc::cancelled || code == errc::not_found ||
                     code == errc::exhausted;
    if (!transient) fail(e, message);
    else redispatch(e, message);
    finish(e);
    return e;
  }
  bool llm_step = state_.pending->model;
  bool approved = state_.pending->approved;
  auto step = state_.pending->step;
  auto queue = state_.pending->queue;
  const bool sub_agent = !state_.pending->sub_agent.empty();
  state_.pending.reset();
  if (llm_step) {
    auto completion = llm::completion_from_value(result.payload);
    if (!completion) {
      fail(e, "the model's answer could not be read: " + completion.error().message);
      finish(e);
      return e;
    }
    llm::message assistant{"assistant", completion->text, completion->tool_calls, {}, {}, false};
    add_message(llm::to_value(assistant));
    state_.steps += 1;
    auto used = to_llm(state_.usage);
    used.input_tokens += completion->used.input_tokens;
    used.output_tokens += completion->used.output_tokens;
    used.cache_read_tokens += completion->used.cache_read_tokens;
    used.cache_write_tokens += completion->used.cache_write_tokens;
    state_.usage = to_stored(used);
    auto cost = step_cost(completion->used);
    if (cost) state_.cost_usd += *cost;
    state_.last_text = completion->text;
    state_.calls.clear();
    value calls = value::array();
    for (const auto& c : completion->tool_calls) {
      state_.calls.push_back({c.id, c.name, c.arguments});
      calls.push_back(call_value(state_.calls.back()));
    }
    state_.call_index = 0;
    emit(e, "llm_step_completed",
         value{{"step", state_.steps}, {"text", completion->text}, {"tool_calls", calls},
               {"usage", llm::to_value(completion->used)}, {"run_usage", usage_value(state_.usage)},
               {"stop_reason", completion->stop_reason}, {"attempt", result.attempt}, {"worker", result.worker},
               {"messages_sent", state_.messages_count - 1}});
    if (cost) {
      e.transition.events.back().data["cost_usd"] = *cost;
      e.transition.events.back().data["run_cost_usd"] = state_.cost_usd;
    }
    if (completion->tool_calls.empty()) complete(e, completion->text, "end_turn");
    else advance(e);
    finish(e);
    return e;
  }
  // A tool step: done, refused, or it needs a person's approval first.
  auto index = state_.call_index;
  const store::tool_call call = state_.calls.at(index);
  std::string status = "done";
  if (result.payload.is_object() && result.payload.contains("status") && result.payload["status"].is_string())
    status = result.payload["status"].get<std::string>();
  value form = result.payload.is_object() && result.payload.contains("form") ? result.payload["form"] : value();
  std::optional<tool_answer> answer;
  if (!queue.empty()) {  // a tool worker's answer, checked against what its tool declared
    auto known = declared();
    auto tool = declared_tool_of(known.get(), queue, call.name);
    answer = check_answer(tool.get(), result.payload);
    status = answer->status;
    form = tool ? tool->form(call.arguments) : value{{"kind", "tool"}, {"tool", call.name}, {"queue", queue},
                                                      {"arguments", call.arguments}};
    if (answer->form.is_object()) form["details"] = answer->form;
  }
  if (status == "needs_approval" && !approved) {
    suspend(e, "approve-" + std::to_string(step), index, form);
    finish(e);
    return e;
  }
  value tool_result = result.payload.is_object() && result.payload.contains("result") ? result.payload["result"] : value::object();
  // A worker's answer is checked as any outside input: a field of the wrong type is not an error
  // flag (nor an exception).
  bool is_error = (result.payload.is_object() && result.payload.contains("is_error") &&
                   result.payload["is_error"].is_boolean() && result.payload["is_error"].get<bool>()) ||
                  status != "done";
  if (answer) {
    tool_result = answer->result.is_null() ? value::object() : answer->result;
    is_error = answer->is_error || status != "done";
  }
  if (status == "needs_approval") {  // approved, yet the tool asked again: never loop
    tool_result = value{{"error", "the tool asked for approval again after it was approved"}};
    is_error = true;
  }
  if (sub_agent) add_children_usage(tool_result);
  add_tool_message(e, call, tool_result, is_error, answer.has_value());
  state_.call_index = index + 1;
  advance(e);
  finish(e);
  return e;
}

void run_machine::add_tool_message(effects& e, const store::tool_call& call, const wire::value& result,
                                   bool is_error, bool declared) {
  llm::message m{"tool", llm::tool_result_text(call.name, result, is_error, declared), {}, call.id, call.name, is_error};
  add_message(llm::to_value(m));
  // The event carries the result when it is small; a large one (a file read whole, a long log)
  // is in the conversation already, and the event says how large it was and shows its start.
  auto size = wire::pack(result).size();
  value shown = size <= event_result_bytes_max ? result : value{{"truncated", true}, {"bytes", size}};
  emit(e, "tool_call_completed",
       value{{"call_id", call.id}, {"tool", call.name}, {"is_error", is_error},
             {"result", shown}, {"text_preview", preview(m.text, 2000)}});
}

result<effects> run_machine::on_resume(const wire::resume_request& request) {
  if (damaged_) return make_error(errc::conflict, "run " + record_.run_id + " cannot be read: " + damaged_->message);
  if (auto earlier = state_.answers.find(request.step_key); earlier != state_.answers.end()) {
    if (earlier->second.approved != request.approved)
      return make_error(errc::conflict, "step " + request.step_key + " was already " +
                                          (earlier->second.approved ? "approved" : "rejected"));
    effects e;  // the same answer again: same reply, nothing written
    e.resume_reply = wire::resume_reply{record_.run_id, request.step_key, true};
    return e;
  }
  if (record_.status != run_status::suspended || !state_.suspended)
    return make_error(errc::conflict, "run " + record_.run_id + " is " +
                                        std::string(store::to_string(record_.status)) +
                                        "; no step " + request.step_key + " is waiting");
  const auto waiting = *state_.suspended;
  if (waiting.step_key != request.step_key)
    return make_error(errc::conflict, "run " + record_.run_id + " waits on step " + waiting.step_key +
                                        ", not " + request.step_key);
  const store::tool_call call = state_.calls.at(waiting.call_index);
  // What to remember: the exact command, or (for a simple command) its words as a prefix.
  std::optional<store::remembered_rule> rule;
  const std::string always = request.always.empty() && request.always_allow ? "exact" : request.always;
  bool built_in_exec = std::find(agent_.tools.begin(), agent_.tools.end(), std::string("exec")) != agent_.tools.end() &&
                       call.name == "exec";
  if (request.approved && !always.empty()) {
    if (!built_in_exec || !call.arguments.is_object() || !call.arguments.contains("command") ||
        !call.arguments["command"].is_string())
      return make_error(errc::invalid_argument, "only an exec call can be remembered with 'always'");
    auto command = call.arguments["command"].get<std::string>();
    if (always == "prefix") {
      if (!sandbox::is_simple_command(command))
        return make_error(errc::invalid_argument,
                          "a prefix can be remembered only for a simple command (plain words, no shell "
                          "syntax); remember the exact command instead");
      std::string words;
      for (const auto& w : sandbox::command_words(command)) words += (words.empty() ? "" : " ") + w;
      command = words;
    }
    if (request.always_scope == "session" && record_.session_id.empty())
      return make_error(errc::invalid_argument, "run " + record_.run_id + " has no session to remember it for");
    rule = store::remembered_rule{always, command};
  }
  effects e = begin();
  answer(e, request, rule);
  e.resume_reply = wire::resume_reply{record_.run_id, request.step_key, false};
  finish(e);
  return e;
}

// A person's answer (or the default answer of an approval nobody answered): recorded, then the
// call runs as the form showed it, or the model is told it was rejected.
void run_machine::answer(effects& e, const wire::resume_request& request, const std::optional<store::remembered_rule>& rule) {
  const auto waiting = *state_.suspended;
  const store::tool_call call = state_.calls.at(waiting.call_index);
  const std::string always = rule ? rule->kind : std::string();
  state_.answers[request.step_key] = store::answer{request.approved, request.feedback};
  // The answers a repeat is checked against: the latest ones (an answer repeated after hundreds
  // more were given is refused as not waiting, and changes nothing either way).
  while (state_.answers.size() > answers_kept_max) {
    auto oldest = std::min_element(state_.answers.begin(), state_.answers.end(), [](const auto& a, const auto& b) {
      auto number = [](const std::string& key) { return std::strtoull(key.c_str() + key.find('-') + 1, nullptr, 10); };
      return number(a.first) < number(b.first);
    });
    state_.answers.erase(oldest);
  }
  journal(e, "answer", value{{"step_key", request.step_key}, {"approved", request.approved},
                             {"feedback", request.feedback}, {"always", always},
                             {"always_scope", request.always_scope}});
  emit(e, "resumed", value{{"step_key", request.step_key}, {"approved", request.approved},
                           {"feedback", request.feedback}, {"by", request.by}, {"always", always},
                           {"always_scope", request.always_scope}});
  record_.status = run_status::running;
  state_.suspended.reset();
  if (request.approved) {
    if (rule && request.always_scope == "session") {
      e.transition.list_appends.emplace_back(session_rules_key(record_.agent, record_.session_id),
                                             wire::pack(value{{"kind", rule->kind}, {"command", rule->command}}));
    } else if (rule) {
      state_.allow_rules.push_back(*rule);
    }
    dispatch_tool(e, true, waiting.form);  // the call runs as this form showed it, or not at all
  } else {
    std::string message = "The person rejected this " + call.name + " call.";
    if (!request.feedback.empty()) message += " Their feedback: " + request.feedback;
    add_tool_message(e, call, value{{"rejected", true}, {"message", message}}, true);
    state_.call_index = waiting.call_index + 1;
    advance(e);
  }
}

std::string session_rules_key(const std::string& agent, const std::string& session_id) {
  return "session_allow/" + agent + "/" + session_id;
}

bool run_machine::wants(std::uint64_t step, std::uint32_t attempt) const {
  return !damaged_ && record_.status == run_status::running && state_.pending && state_.pending->step == step &&
         state_.pending->attempt == attempt;
}

result<effects> run_machine::retry(const std::string& by) {
  if (damaged_) return make_error(errc::conflict, "run " + record_.run_id + " cannot be read: " + damaged_->message);
  if (record_.status != run_status::failed)
    return make_error(errc::conflict, "run " + record_.run_id + " is " + std::string(store::to_string(record_.status)) +
                                        "; only a failed run can be retried");
  if (record_.state.is_object() && record_.state.contains("damaged_state"))
    return make_error(errc::conflict, "run " + record_.run_id + " failed because its stored state was damaged; "
                                      "it cannot go on");
  effects e = begin();
  record_.status = run_status::running;
  state_.error.reset();
  const auto& failed = state_.failed_pending;
  emit(e, "run_retried", value{{"task_step", failed ? value(failed->step) : value()}, {"by", by}});
  // A run stopped by its time limit gets that long again.
  state_.deadline_ms = agent_.run_timeout_ms > 0 ? now() + agent_.run_timeout_ms : 0;
  // A run of a queue goes back in line (at its end), and on from where it failed once admitted.
  if (!agent_.run_queue.empty()) enter_queue(e);
  else go_on(e);
  finish(e);
  return e;
}

// What comes after a start, an admission or a retry: the step a failed run failed on (a new
// attempt), or whatever is due.
void run_machine::go_on(effects& e) {
  auto failed = std::move(state_.failed_pending);
  state_.failed_pending.reset();
  if (failed) {
    failed->failing_since_ms = 0;
    failed->failures = 0;
    failed->waited_ms = 0;
    failed->retry.reset();
    // A person's retry gives a tool worker's call a new deadline: the old one may have passed
    // already, and the call would be given up as it is sent again.
    failed->deadline_ms = 0;
    state_.pending = *failed;
    resend(e, "retried on request");
  } else {
    advance(e);
  }
}

result<effects> run_machine::cancel(const std::string& reason, const std::string& by) {
  if (store::is_terminal(record_.status))
    return make_error(errc::conflict, "run " + record_.run_id + " has already " +
                                        std::string(store::to_string(record_.status)));
  if (damaged_) return fail_damaged();
  effects e = begin();
  record_.status = run_status::cancelled;
  if (state_.pending && !state_.pending->sub_agent.empty() && state_.children.is_array())
    for (const auto& child : state_.children)
      if (child.value("task_step", std::uint64_t{0}) == state_.pending->step) e.cancel_children.push_back(child.value("run_id", std::string{}));
  if (state_.waiting && state_.waiting->kind == "join") cancel_join(e, "its parent run " + record_.run_id + " was cancelled");
  state_.pending.reset();
  state_.suspended.reset();
  state_.waiting.reset();
  emit(e, "run_cancelled", value{{"reason", reason}, {"by", by}});
  finish(e);
  return e;
}

void run_machine::complete(effects& e, const std::string& output, const std::string& stop_reason) {
  record_.status = run_status::completed;
  state_.pending.reset();
  state_.output = output;
  state_.stop_reason = stop_reason;
  emit(e, "run_completed", value{{"output", output}, {"stop_reason", stop_reason},
                                 {"steps", state_.steps}, {"usage", usage_value(state_.usage)}});
}

void run_machine::fail(effects& e, const std::string& message) {
  record_.status = run_status::failed;
  // Kept, so that `keel retry` sends the same step again.
  if (state_.pending) state_.failed_pending = state_.pending;
  state_.pending.reset();
  state_.error = message;
  e.tasks.clear();
  e.task_delay_ms = 0;
  emit(e, "run_failed", value{{"error", message}, {"steps", state_.steps}, {"usage", usage_value(state_.usage)}});
}

} // namespace keel::actors
