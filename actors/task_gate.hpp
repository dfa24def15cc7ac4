// The next task of a step whose result is written on its own first: it goes out once the result
// is on disk and the task is ready, by whichever of the two comes second (the thread that wrote
// the result, or the run's actor). A result the run does not apply leaves its gate unopened.
#pragma once

#include <caf/allowed_unsafe_message_type.hpp>

#include <functional>
#include <memory>
#include <mutex>

namespace keel::actors {

class task_gate {
public:
  void on_written(bool ok) {
    std::function<void()> go;
    {
      std::lock_guard lock{mutex_};
      written_ = true;
      failed_ = !ok;
      if (ok) go = std::move(send_);
    }
    if (go) go();
  }
  // `send` publishes the task and arms its lease.
  void on_ready(std::function<void()> send) {
    {
      std::lock_guard lock{mutex_};
      if (!written_) {
        send_ = std::move(send);
        return;
      }
      if (failed_) return;
    }
    send();
  }

private:
  std::mutex mutex_;
  bool written_ = false;
  bool failed_ = false;
  std::function<void()> send_;
};

} // namespace keel::actors

// Goes from a NATS thread to a run's actor in the same process, never serialised.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::shared_ptr<keel::actors::task_gate>)
