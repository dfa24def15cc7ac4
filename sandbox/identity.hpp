// Who a command runs as: never the node's own user. When keel runs as root, commands (and the
// file tools' writes) take the uid and gid of an account of their own, `keel-sandbox` by
// default (scripts/setup.sh makes it); `run_as = "worker"` keeps the worker's own, on purpose.
#pragma once

#include "runtime/result.hpp"

#include <string>
#include <sys/types.h>

namespace keel::sandbox {

inline constexpr const char* sandbox_account = "keel-sandbox";

struct identity {
  bool distinct = false;  // false: the worker's own user (run_as = "worker")
  uid_t uid = 0;
  gid_t gid = 0;
  std::string name;
};

// The identity `run_as` names ("worker", or an account), checked: an account that does not
// exist, or a worker that cannot take on another uid, is an error saying what to do.
result<identity> command_identity(const std::string& run_as);

// In a child between fork and exec (async-signal-safe): no supplementary groups, then the gid
// and uid of `id`, real, effective and saved. Returns 0 or an errno with the step named.
int become(const identity& id, const char** failed_step) noexcept;

// While alive, this thread opens, creates and changes files as `id` (its filesystem uid and
// gid, which Linux keeps per thread): what the file tools make belongs to the command's user,
// and what that user could not touch, they cannot either.
class acting_as {
public:
  explicit acting_as(const identity& id);
  ~acting_as();
  acting_as(const acting_as&) = delete;
  acting_as& operator=(const acting_as&) = delete;

private:
  bool switched_ = false;
  uid_t uid_ = 0;
  gid_t gid_ = 0;
};

// Gives the directory `fd` (a workspace) to `id` when keel runs as root, it belongs to someone
// else and it is empty (a workspace keel just made). A directory that already holds something
// keeps its owner: its owner could remove or replace anything in it.
result<void> hand_over(int fd, const identity& id);

// An error naming the first directory on the way to `path` that `id` may not search (a command
// could not reach its own workspace by name), with what to do about it.
result<void> check_reachable(const std::string& path, const identity& id);

} // namespace keel::sandbox
