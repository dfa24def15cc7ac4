// The agent loop of one run as a state machine: every input (start, a task result, a person's
// answer, an expired lease, a cancel) gives one transition to write to disk and the effects to
// carry out once it is written (tasks to send, events to publish, a reply). Plain C++: the run
// actor wraps it, and tests drive it directly.
#pragma once

#include "runtime/config.hpp"
#include "runtime/tool_declaration.hpp"
#include "runtime/run_state.hpp"
#include "runtime/run_store.hpp"
#include "runtime/wire.hpp"

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace keel::llm { struct usage; }

namespace keel::actors {

struct run_context {
  std::string results_subject;     // where workers send task results (this node's)
  std::int64_t step_retry_ms = 3'600'000;   // a step failing for a passing reason is tried this long
  std::int64_t retry_backoff_max_ms = 60'000;
  std::size_t inline_bytes_max = 256 << 10;  // new messages carried in a model task, up to this
  // The tools that tool workers declared, as the orchestrator holds them now (empty: none).
  std::function<std::shared_ptr<const tools::declared_tools>()> declared_tools;
  // Other agents of the node's config, by id (sub-agents' descriptions); empty: none known.
  std::function<const config::agent_config*(const std::string&)> find_agent;
  // The wall clock (ms) the workflow limits are measured on; empty: the system's (tests set it).
  std::function<std::int64_t()> clock;
  // Prices by "<provider>/<model>" (config [prices]); null: none.
  const std::map<std::string, config::price>* prices = nullptr;
  // The epoch in which this node holds a domain (replication::lease_keeper); empty or 0: none.
  std::function<std::uint64_t(std::string_view domain)> epoch;
};

struct effects {
  bool changed = false;                 // false: nothing to write or do (a stale input)
  store::run_transition transition;     // written before anything below happens
  std::vector<wire::task> tasks;        // sent once written
  std::int64_t task_delay_ms = 0;       // wait this long before sending (retry backoff)
  std::optional<wire::resume_reply> resume_reply;
  bool leave_memory = false;            // suspended or finished: the actor may go
  // A declared tool's task: when its call is given up if no result came (wall clock, ms; 0: none).
  std::int64_t deadline_ms = 0;
  // Child runs to cancel once written (the run was cancelled while a sub-agent worked for it).
  std::vector<std::string> cancel_children;
  std::string cancel_reason;  // empty: the run was cancelled
  // The answer to an event sent to the run (signal_reply), written first when changed.
  std::optional<wire::value> signal_reply;
  // Queues, once written: the run got in line (ask for its place), or it ended (free its slot).
  std::optional<store::queue_place> queue_enter;
  std::optional<store::queue_place> queue_release;
  store::run_status from = store::run_status::pending;  // the status before this transition
  // A fan-out (run_joins.cpp), once written: its children to start (by index; idempotent by their
  // keys), and those started whose outcome has not come, to ask after.
  struct join_work {
    std::uint64_t step = 0;
    std::vector<std::size_t> start;
    std::vector<std::pair<std::size_t, std::string>> check;
  };
  std::optional<join_work> join;
};

class run_machine {
public:
  // A record whose state cannot be read (damaged on disk) makes a machine whose start() fails
  // the run with the reason, keeping what was stored for a person to look at.
  run_machine(store::run_record record, const config::agent_config& agent, run_context context);

  // A new run, as written before the invoke is answered; start() then sends its first step.
  static store::run_record create(const std::string& run_id, const wire::invoke_request& invoke,
                                  std::int64_t now_ms);

  // For a new run or one recovered after a crash: sends whatever is due. A step in flight when
  // the node died is sent again (same step, next attempt) unless the broker still holds its task
  // (`task_queued`): then its result is on its way.
  effects start(bool task_queued = false);
  effects on_task_result(const wire::task_result& result);

  // The fast path for a result, in two writes: the result as it came is written first (a
  // received_result, by whoever took it off NATS), and the next task may go once it is on disk;
  // apply_received() works out what follows meanwhile: the journal entry that keeps the result,
  // the rest of the step, and the removal of the received record, for the second write.
  // Effects unchanged: the result is late or repeated; an error: it cannot be read. Either way
  // the caller removes the record. After a crash between the two writes, recover() does the same
  // with the records on disk, in their order.
  bool expects(const wire::task_result& result) const;  // false: late or repeated
  bool expects(std::uint64_t step) const;
  result<effects> apply_received(const store::received_result& received);
  // The journal entry that keeps a result: the message itself, so that it replays as it came.
  store::journal_entry record_result(const wire::task_result& result);
  store::journal_entry record_result(std::uint64_t step, std::string_view message);
  effects on_task_result(const wire::task_result& result, bool recorded);
  // Results recorded whose consequences were not written: journal entries past the snapshot (as
  // earlier versions wrote them) and received records. Applies them in order; the effects write
  // those consequences, remove every received record, and send what is due. Unchanged effects
  // (with records to remove, maybe) when nothing applies.
  effects recover(const std::vector<store::journal_entry>& tail,
                  const std::vector<store::received_result>& received = {});
  // A resume for a step that is not waiting is an error, unless it repeats an answer already
  // recorded: then the reply is the same and nothing changes.
  result<effects> on_resume(const wire::resume_request& request);
  result<effects> cancel(const std::string& reason, const std::string& by);
  // A failed run goes on from the step that failed (a new attempt of it), or from what was due.
  result<effects> retry(const std::string& by);
  // The step and attempt in flight, if any: a worker asks before it spends money on a task.
  bool wants(std::uint64_t step, std::uint32_t attempt) const;
  // The attempt in flight is neither in the work queue nor on a worker, and its result never came
  // (the broker lost a task it had confirmed, or never stored it): the next attempt goes at once.
  // Unchanged when that attempt is no longer the one in flight.
  effects on_task_lost(std::uint64_t step, std::uint32_t attempt, const std::string& reason);
  // A declared tool's call whose deadline passed with no result: the model is told it gave no
  // result in time, and the run goes on. Unchanged when that attempt is no longer in flight, or
  // its deadline is still ahead (the caller waits again until then).
  effects on_deadline(std::uint64_t step, std::uint32_t attempt);
  // A sub-agent's call (a tool step whose pending.sub_agent is set): its child run exists, with
  // this id. Recorded once (the run's children, an event); unchanged when known already, or when
  // that step is no longer in flight.
  effects on_child_started(std::uint64_t step, const std::string& child_run_id);

  // Workflows (docs/WORKFLOWS.md; run_waits.cpp). Whatever has fallen due by the clock: a sleep
  // that ended, a wait for an event that gave up, an approval's default answer or escalation, the
  // run's time limit. Unchanged when nothing has (woken early: next_wake_ms() says when).
  effects on_wake();
  // Its queue's record says it runs: a run in line starts (event run_admitted); unchanged when it
  // is not in line (admitted before, cancelled, ended).
  effects on_admitted(std::int64_t since_ms = 0);  // since_ms: the place admitted (0: any)
  // A fan-out's child run exists (recorded once; unchanged when known, or not this run's join).
  effects on_join_child(std::uint64_t step, std::size_t index, const std::string& child_run_id);
  // Whether that child belongs to a fan-out the run still waits for (false: cancel it).
  bool awaits_join_child(std::uint64_t step, std::size_t index, const std::string& child_run_id) const;
  // An event sent to the run: handed to its wait for that name, or kept until it waits for it.
  // A repeat of an event taken (same id) is answered as before and changes nothing; a run that
  // has ended, a bad name or payload, or too many events kept are errors.
  result<effects> on_signal(const store::signal_record& signal);
  std::int64_t next_wake_ms() const;

  // The record as last written (its state is the stored value of state()).
  const store::run_record& record() const { return record_; }
  const store::run_state& state() const { return state_; }
  const std::string& run_id() const { return record_.run_id; }
  // The conversation's messages this machine holds packed (the newest; older ones are on disk).
  std::optional<std::string> packed(std::size_t index) const;

private:
  effects begin();                 // a fresh effects with the current record
  void emit(effects& e, const std::string& type, wire::value data);
  void emit_replayed(effects& e);  // a fork's recorded steps' events, once
  store::journal_entry next_entry(const std::string& kind, wire::value data);  // the next seq
  void journal(effects& e, const std::string& kind, wire::value data);
  void finish(effects& e);         // copies the record into the transition
  void advance(effects& e);        // the next call, the next model step, or the end
  void dispatch_llm(effects& e);
  void dispatch_tool(effects& e, bool approved, const wire::value& form = wire::value());
  void ask_first(effects& e, const tools::declared_tool& tool);   // a declared tool's call waits for a person
  void suspend(effects& e, const std::string& step_key, std::uint64_t call_index, const wire::value& form);
  void enter_queue(effects& e);                                   // in line, not running (run_waits.cpp)
  void go_on(effects& e);                                          // after a start, admission or retry
  void begin_wait(effects& e);                                     // a waiting tool's call (run_waits.cpp)
  void end_wait(effects& e, const wire::value& result, bool is_error = false);  // its result; the run goes on
  void begin_join(effects& e);                                     // run_agents (run_joins.cpp)
  result<effects> join_outcome(const store::signal_record& signal);
  void join_wake(effects& e, std::int64_t at);                     // its limit, or a look at its children
  void end_join(effects& e, const std::string& why_cancel);        // the call's result; the rest cancelled
  void cancel_join(effects& e, const std::string& reason);         // its children not ended, to cancel
  void record_join_child(effects& e, std::size_t index, const std::string& child_run_id);
  void take_event(effects& e, const store::signal_record& signal);
  void answer(effects& e, const wire::resume_request& request, const std::optional<store::remembered_rule>& rule);
  void arm_deadline(std::int64_t delay_ms);                        // a declared tool's step: when it is given up
  std::shared_ptr<const tools::declared_tools> declared() const;
  std::int64_t now() const;  // context_.clock, or the system's wall clock
  void redispatch(effects& e, const std::string& reason);  // after a failure: backoff, time-bounded
  void resend(effects& e, const std::string& reason);      // after a restart: at once
  void complete(effects& e, const std::string& output, const std::string& stop_reason);
  void fail(effects& e, const std::string& message);
  void add_tool_message(effects& e, const store::tool_call& call, const wire::value& result, bool is_error,
                        bool declared = false);
  void add_message(const wire::value& message);
  void add_children_usage(const wire::value& outcome);
  std::optional<double> step_cost(const llm::usage& used) const;
  wire::task pending_task();
  effects fail_damaged();

  store::run_record record_;
  store::run_state state_;
  std::optional<keel::error> damaged_;  // the stored state could not be read
  // The conversation's messages packed, by index: those added since this machine was made, and
  // any the record brought whole. A message never changes once added; one that a model task has
  // carried and the store has written is dropped from memory.
  std::map<std::size_t, std::string> packed_;
  // The status the store has once this machine's first transition is written (transitions are
  // written in order, and a failed one ends the machine): later ones need not read it.
  std::optional<store::run_status> stored_status_;
  // How many messages the last model task carried or named: the next one carries only what came
  // after (memory only; after a restart a worker fetches what it lacks).
  std::size_t messages_sent_ = 0;
  const config::agent_config& agent_;
  run_context context_;
};

// Where a session's remembered approvals are kept in the run store (a list of {kind, command}).
std::string session_rules_key(const std::string& agent, const std::string& session_id);

} // namespace keel::actors
