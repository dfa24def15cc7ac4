// A JetStream work queue: a task is stored by the broker until a worker acknowledges it, handed
// to a worker only when that worker asks for it (a worker asks only for as many as it has free
// slots), and handed again only when the worker holding it stops saying it is alive (it sends
// "in progress" while the task runs; silence past the ack wait means it is gone). Plain C++;
// nats.c stays inside.
#pragma once

#include "broker/connection.hpp"
#include "runtime/result.hpp"

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

struct __jsCtx;  // nats.c's JetStream context (jsCtx)

namespace keel::broker {

struct work_queue_options {
  std::string stream;                  // the stream's name ([A-Za-z0-9_-])
  std::vector<std::string> subjects;   // what it stores
  std::size_t message_bytes_max = 1 << 20;
  std::int64_t replicas = 1;
  std::int64_t duplicate_window_ms = 120'000;  // a message id seen within this is stored once
};

struct consumer_options {
  std::string stream;
  std::string durable;        // the consumer's name, shared by every worker of a queue
  std::string filter_subject;
  std::int64_t ack_wait_ms = 4000;      // silence past this hands the message to another worker
  std::int64_t ack_pending_max = 100'000;
};

// One message handed to this worker. Acknowledge it once its outcome is safe elsewhere; until
// then say in_progress() more often than the ack wait. Thread-safe.
class delivery {
public:
  ~delivery();
  delivery(const delivery&) = delete;
  delivery& operator=(const delivery&) = delete;

  const message& body() const { return body_; }
  std::uint64_t times_delivered() const { return delivered_; }  // 1 the first time
  std::int64_t stored_ms() const { return stored_ms_; }         // when the broker stored it (wall clock)
  std::uint64_t stream_sequence() const { return sequence_; }

  result<void> ack();
  result<void> in_progress();
  result<void> nak(std::int64_t delay_ms);  // hand it again after the delay
  bool acknowledged() const;

  struct native;
  explicit delivery(native* raw);

private:
  mutable std::mutex mutex_;
  native* raw_;
  message body_;
  std::uint64_t delivered_ = 1;
  std::int64_t stored_ms_ = 0;
  std::uint64_t sequence_ = 0;
  bool acknowledged_ = false;
};

class pull_consumer {
public:
  ~pull_consumer();
  pull_consumer(const pull_consumer&) = delete;
  pull_consumer& operator=(const pull_consumer&) = delete;
  // Up to `batch` messages, waiting up to timeout_ms for the first; empty on timeout. One thread
  // at a time.
  result<std::vector<std::unique_ptr<delivery>>> fetch(int batch, std::int64_t timeout_ms);
  // Takes no more tasks (a fetch then fails as cancelled); tasks fetched can still be
  // acknowledged. For a taker that stops while tasks it holds still run.
  void unsubscribe();

  struct impl;
  explicit pull_consumer(std::unique_ptr<impl> state);

private:
  std::unique_ptr<impl> impl_;
};

// A message stored without waiting (publish_async) that the broker refused or did not confirm
// within its wait: what it was, so that it can be offered again.
struct publish_failure {
  std::string subject;
  std::string data;
  std::string id;
  keel::error why;
};
using publish_failed = std::function<void(publish_failure&&)>;

class jetstream {
public:
  // `on_failed` is called, on a thread of nats.c, for each publish_async the broker did not confirm.
  static result<std::unique_ptr<jetstream>> open(std::shared_ptr<connection> nats,
                                                 std::int64_t request_timeout_ms = 5000,
                                                 publish_failed on_failed = {});
  ~jetstream();
  jetstream(const jetstream&) = delete;
  jetstream& operator=(const jetstream&) = delete;

  // Creates the stream, or brings an existing one to these options.
  result<void> ensure_work_queue(const work_queue_options& options);
  result<void> ensure_consumer(const consumer_options& options);
  // Returns once the broker stored the message (or had stored one with this id in the window).
  result<void> publish(std::string_view subject, std::string_view data, std::string_view id);
  // Sends the message to be stored and returns at once; the broker's confirmation comes later,
  // and a refusal (or no confirmation within ack_wait_ms) goes to `on_failed`. An error here
  // (too many unconfirmed, disconnected) means it was not sent.
  result<void> publish_async(std::string_view subject, std::string_view data, std::string_view id,
                             std::int64_t ack_wait_ms);
  // Whether a message with exactly this subject is stored: queued, or held by a worker.
  result<bool> holds(std::string_view stream, std::string_view subject);
  // The last message the stream holds on `subject` (none: empty).
  result<std::optional<std::string>> last_message(std::string_view stream, std::string_view subject);
  // Messages stored and not yet acknowledged.
  result<std::uint64_t> stored_messages(std::string_view stream);
  // What a consumer has before it: messages not yet handed out, and handed out but not yet
  // acknowledged (a worker runs them).
  struct backlog {
    std::uint64_t waiting = 0;
    std::uint64_t running = 0;
  };
  result<backlog> consumer_backlog(std::string_view stream, std::string_view consumer);
  result<std::unique_ptr<pull_consumer>> subscribe(const consumer_options& options);
  // The nats.c context (for the broker folder's own files: broker/native.hpp).
  ::__jsCtx* native() const;

  struct impl;

private:
  explicit jetstream(std::unique_ptr<impl> state);
  std::unique_ptr<impl> impl_;
};

// JetStream on this connection, with the stream of queued tasks (subjects.tasks_stream(), holding
// <prefix>.<ns>.tasks.>) created or brought to these options by an orchestrator (`make`); a
// worker (which may not change streams) waits until it is there.
result<std::unique_ptr<jetstream>> open_task_queue(std::shared_ptr<connection> nats, const subjects& names,
                                                   std::size_t message_bytes_max, std::int64_t replicas,
                                                   std::int64_t request_timeout_ms, bool make, publish_failed on_failed = {});

// A stream or consumer name from parts of subjects: what is not [A-Za-z0-9_-] becomes '_'.
std::string stream_name(std::string_view text);

} // namespace keel::broker
