// Who may say what on the broker. Every connection to a keel broker is a named NATS user with a
// role; the role's subject permissions are what nats-server enforces:
//   orchestrator  owns its namespace (every keel subject, the JetStream API, the key-value buckets)
//   worker        takes tasks from the task queue, hands back results, asks for a run's messages,
//                 streams deltas, beats, declares tools (as itself); it cannot publish events,
//                 resumes, cancels or invokes
//   gateway       what a person may do, on behalf of any named person (it checked their token)
//   person        invokes, answers, cancels and retries as itself only, reads runs, events and
//                 nodes; it cannot publish a task, a result or an event
// A request that acts (invoke, resume, cancel, retry) ends its subject with the name of who sent
// it; a person's permissions hold only subjects that end with its own name, so the name an
// orchestrator records is the one the broker checked.
#pragma once

#include "broker/connection.hpp"
#include "runtime/result.hpp"

#include <string>
#include <string_view>
#include <vector>

namespace keel::broker {

enum class broker_role { orchestrator, worker, gateway, person };
const char* to_string(broker_role r);
bool role_from_string(std::string_view text, broker_role& out);

// A name that may stand in a subject and in the broker's configuration: 1 to 64 of A-Z a-z 0-9 _ -.
bool valid_identity(std::string_view name);
// Why `name` is not one, for messages ("" when it is).
std::string identity_problem(std::string_view name);

struct credentials {
  std::string user;
  std::string password;
  broker_role role = broker_role::person;
  // A worker limited to these queues (empty: any): it may create, read and acknowledge only their
  // consumers (workers_<queue>, filtered to P.tasks.<queue>.>), so it never sees another queue's
  // tasks (an agent's model steps among them).
  std::vector<std::string> queues;
};

// A credentials file (TOML: user, password, role), refused when others than its owner may read it.
result<credentials> read_credentials(const std::string& path);
// Written 0600 through a temporary file and a rename.
result<void> write_credentials(const std::string& path, const credentials& c);

// 64 random hex digits (256 bits): a password.
std::string random_secret();
// A bcrypt hash nats-server accepts in place of a password.
result<std::string> hash_password(const std::string& password);

// The nats-server `authorization { users = [...] }` block for these users, each with its role's
// permissions under `subjects` (prefix and namespace). Hashes only: the file holds no password.
result<std::string> authorization_block(const std::vector<credentials>& users, const subjects& subjects);
// One user's `permissions: {...}` (for tests and docs).
std::string permissions_of(const credentials& c, const subjects& subjects);

} // namespace keel::broker
