// One NATS connection: connect to a list of servers with reconnect, publish, request with a
// timeout, plain and queue subscriptions, and drain on shutdown. Plain C++; nats.c stays inside.
#pragma once

#include "runtime/result.hpp"

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace keel::broker {

struct connection_options {
  std::vector<std::string> servers;
  std::string name;                   // shown by the server's monitoring
  std::int64_t connect_timeout_ms = 2000;
  std::int64_t reconnect_wait_ms = 250;
  std::int64_t reconnect_attempts_max = -1;  // -1: forever
  bool send_asap = true;              // flush every publish at once (replies come 5x sooner)
  std::int64_t pending_messages_max = 65536;  // per subscription, before the server drops ours
  // Deliver every subscription's messages on the library's shared delivery threads instead of a
  // thread each (a gateway holds one subscription per run it streams).
  bool shared_delivery = false;
  // The broker's user and password (broker/authorization.hpp); empty: connect anonymously. With a
  // user, replies come to inboxes under `_INBOX.<user>.`, the only ones its permissions let it read.
  std::string user;
  std::string password;
};

struct message {
  std::string subject;
  // Empty when no reply is expected, or when the sender named a subject that is not an inbox
  // (`_INBOX.`) for it: nothing is ever answered anywhere else.
  std::string reply;
  std::string data;
};

using handler = std::function<void(message&&)>;

class subscription;
class pull_subscription;

class connection {
public:
  // Fails with errc::unavailable, naming the servers, when none can be reached.
  static result<std::shared_ptr<connection>> connect(const connection_options& options);
  ~connection();
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;

  result<void> publish(std::string_view subject, std::string_view data);
  result<void> publish(std::string_view subject, std::string_view reply, std::string_view data);
  // errc::timeout when nobody answers in time; errc::unavailable when nobody listens at all.
  result<message> request(std::string_view subject, std::string_view data,
                          std::int64_t timeout_ms);

  // `queue` empty: every subscriber gets each message; otherwise one member of the queue does.
  // The handler runs on a delivery thread of the connection, one message at a time.
  result<std::unique_ptr<subscription>> subscribe(std::string_view subject, std::string_view queue,
                                                  handler on_message);

  // A subscription that the caller's own threads read with next(): a message goes to one thread
  // waiting for it, which handles it with no hand-off to another thread. Shared, so that threads
  // that outlive their owner keep it alive.
  result<std::shared_ptr<pull_subscription>> subscribe_pull(std::string_view subject,
                                                            std::string_view queue);

  result<void> flush(std::int64_t timeout_ms);
  // Stops taking messages, lets handlers finish what was delivered, flushes, closes.
  result<void> drain(std::int64_t timeout_ms);

  std::string new_inbox() const;
  bool connected() const;
  std::string connected_url() const;

  struct impl;

private:
  friend struct native_access;
  explicit connection(std::unique_ptr<impl> state);
  std::unique_ptr<impl> impl_;
};

class subscription {
public:
  ~subscription();  // unsubscribes
  subscription(const subscription&) = delete;
  subscription& operator=(const subscription&) = delete;
  result<void> unsubscribe();

  struct impl;
  explicit subscription(std::unique_ptr<impl> state);

private:
  std::unique_ptr<impl> impl_;
};

class pull_subscription {
public:
  ~pull_subscription();
  pull_subscription(const pull_subscription&) = delete;
  pull_subscription& operator=(const pull_subscription&) = delete;

  // The next message, waiting up to timeout_ms (an empty optional then). Any number of threads
  // may wait at once. errc::cancelled once unsubscribed or the connection is closed.
  result<std::optional<message>> next(std::int64_t timeout_ms);
  // Wakes every waiting thread with errc::cancelled; messages not yet taken are dropped.
  result<void> unsubscribe();

  struct impl;
  explicit pull_subscription(std::unique_ptr<impl> state);

private:
  std::unique_ptr<impl> impl_;
};

// Subjects under `<prefix>.<namespace>`, as docs/PROTOCOL.md lists them.
struct subjects {
  std::string prefix = "keel";
  std::string ns = "default";

  std::string base() const { return prefix + "." + ns; }
  // Requests that act end with the name of who sends them (broker/authorization.hpp): the
  // broker lets a person publish only under its own name. "*" subscribes to every sender.
  std::string invoke(std::string_view who) const { return base() + ".invoke." + std::string(who); }
  // An invoke for one orchestrator (a gateway spreading invokes over them).
  std::string node_invoke(std::string_view node, std::string_view who) const {
    return base() + ".nodes." + std::string(node) + ".invoke." + std::string(who);
  }
  std::string run_resume(std::string_view run, std::string_view who) const { return run_verb(run, "resume", who); }
  std::string run_cancel(std::string_view run, std::string_view who) const { return run_verb(run, "cancel", who); }
  std::string run_retry(std::string_view run, std::string_view who) const { return run_verb(run, "retry", who); }
  std::string run_signal(std::string_view run, std::string_view who) const { return run_verb(run, "signal", who); }
  std::string run_fork(std::string_view run, std::string_view who) const { return run_verb(run, "fork", who); }
  std::string run_verb(std::string_view run, std::string_view verb, std::string_view who) const {
    return base() + ".runs." + std::string(run) + "." + std::string(verb) + "." + std::string(who);
  }
  std::string run_events(std::string_view run) const { return base() + ".runs." + std::string(run) + ".events"; }
  std::string run_query(std::string_view run) const { return base() + ".runs." + std::string(run) + ".get"; }
  std::string run_wait(std::string_view run) const { return base() + ".runs." + std::string(run) + ".wait"; }
  std::string runs_events_all() const { return base() + ".runs.*.events"; }
  std::string runs_list() const { return base() + ".runs.list"; }
  std::string agents_list() const { return base() + ".agents.list"; }
  std::string tasks(std::string_view queue) const { return base() + ".tasks." + std::string(queue); }
  // One subject per task, so that the broker can say whether a step's task is still queued.
  std::string task(std::string_view queue, std::string_view run, std::uint64_t step) const {
    return tasks(queue) + "." + std::string(run) + "." + std::to_string(step);
  }
  std::string run_task_wanted(std::string_view run) const { return base() + ".runs." + std::string(run) + ".task_wanted"; }
  std::string run_messages(std::string_view run) const { return base() + ".runs." + std::string(run) + ".messages"; }
  // The JetStream stream holding this prefix and namespace's queued tasks.
  std::string tasks_stream() const { return "KEEL_TASKS_" + prefix + "_" + ns; }
  std::string node_results(std::string_view node) const { return base() + ".nodes." + std::string(node) + ".results"; }
  std::string node_control(std::string_view node) const { return base() + ".nodes." + std::string(node) + ".control"; }
  // Tool workers declare the tools of a queue to the orchestrators (docs/PROTOCOL.md, tools).
  std::string tools_declare(std::string_view who) const { return base() + ".tools.declare." + std::string(who); }
  std::string tools_changed() const { return base() + ".tools.changed"; }
  std::string tools_list() const { return base() + ".tools.list"; }
  // The key-value bucket of declared tools: one key per queue.
  std::string tools_bucket() const { return "KEEL_TOOLS_" + prefix + "_" + ns; }
  std::string heartbeat() const { return base() + ".nodes.heartbeat"; }
  std::string nodes_ping() const { return base() + ".nodes.ping"; }
};

} // namespace keel::broker
