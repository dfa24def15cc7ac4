#include "broker/authorization.hpp"

#include "runtime/ids.hpp"
#include "runtime/secrets.hpp"

#include <toml++/toml.h>

#include <crypt.h>
#include <sys/stat.h>

#include <sstream>

namespace keel::broker {

const char* to_string(broker_role r) {
  switch (r) {
    case broker_role::orchestrator: return "orchestrator";
    case broker_role::worker: return "worker";
    case broker_role::gateway: return "gateway";
    case broker_role::person: return "person";
  }
  return "person";
}

bool role_from_string(std::string_view text, broker_role& out) {
  for (auto r : {broker_role::orchestrator, broker_role::worker, broker_role::gateway, broker_role::person})
    if (text == to_string(r)) {
      out = r;
      return true;
    }
  return false;
}

std::string identity_problem(std::string_view name) {
  // Names keel's own parts send under (docs/WORKFLOWS.md): no user may publish under them.
  if (auto reserved = reserved_sender_problem(name); !reserved.empty()) return reserved;
  if (is_valid_name(name)) return {};
  return "a name is 1 to 64 of letters, digits, '_' and '-'";
}

bool valid_identity(std::string_view name) { return identity_problem(name).empty(); }

result<credentials> read_credentials(const std::string& path) {
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0) return make_error(errc::config, path + ": cannot read the credentials file");
  if ((st.st_mode & 077) != 0)
    return make_error(errc::config, path + ": others may read these credentials; chmod 600 " + path);
  credentials c;
  try {
    auto table = toml::parse_file(path);
    c.user = table["user"].value_or(std::string{});
    c.password = table["password"].value_or(std::string{});
    auto role = table["role"].value_or(std::string{"person"});
    if (!role_from_string(role, c.role))
      return make_error(errc::config, path + ": role must be orchestrator, worker, gateway or person, not '" + role + "'");
    // A string of names with commas (flat TOML: every client's reader takes it).
    std::string queues = table["queues"].value_or(std::string{});
    for (std::size_t start = 0; !queues.empty() && start <= queues.size();) {
      auto comma = queues.find(',', start);
      auto name = queues.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
      if (!valid_identity(name)) return make_error(errc::config, path + ": queues: '" + name + "' is not a queue name");
      c.queues.push_back(name);
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  } catch (const toml::parse_error& e) {
    return make_error(errc::config, path + ": " + std::string(e.description()));
  }
  if (auto problem = identity_problem(c.user); !problem.empty())
    return make_error(errc::config, path + ": user: " + problem);
  if (c.password.empty()) return make_error(errc::config, path + ": no password");
  return c;
}

result<void> write_credentials(const std::string& path, const credentials& c) {
  toml::table table{{"user", c.user}, {"password", c.password}, {"role", to_string(c.role)}};
  if (!c.queues.empty()) {
    std::string queues;
    for (const auto& q : c.queues) queues += (queues.empty() ? "" : ",") + q;
    table.insert("queues", queues);
  }
  std::ostringstream text;
  text << "# keel broker credentials of " << to_string(c.role) << " '" << c.user
       << "' (keel credentials). Keep this file to its owner.\n"
       << table << "\n";
  return write_private_file(path, text.str());
}

std::string random_secret() { return random_hex(32); }

result<std::string> hash_password(const std::string& password) {
  char salt[CRYPT_GENSALT_OUTPUT_SIZE];
  if (!::crypt_gensalt_rn("$2b$", 10, nullptr, 0, salt, sizeof salt))
    return make_error(errc::internal, "cannot make a bcrypt salt");
  crypt_data data{};
  const char* hashed = ::crypt_r(password.c_str(), salt, &data);
  if (!hashed || hashed[0] != '$') return make_error(errc::internal, "cannot hash a password with bcrypt");
  return std::string(hashed);
}

namespace {

std::string list(const std::vector<std::string>& subjects) {
  std::string out = "[";
  for (std::size_t i = 0; i < subjects.size(); ++i) out += (i ? ", " : "") + ("\"" + subjects[i] + "\"");
  return out + "]";
}

// What a person (or a gateway, for any person: `who` = "*") may publish and read.
void person_rights(const subjects& s, const std::string& who, std::vector<std::string>& pub, std::vector<std::string>& sub) {
  auto b = s.base();
  pub.insert(pub.end(), {b + ".invoke." + who, b + ".runs.*.resume." + who, b + ".runs.*.cancel." + who,
                         b + ".runs.*.retry." + who, b + ".runs.*.signal." + who, b + ".runs.*.fork." + who, b + ".runs.*.replay", b + ".runs.*.get", b + ".runs.*.wait", b + ".runs.*.history",
                         b + ".runs.list", b + ".agents.list", b + ".tools.list", b + ".nodes.ping",
                         b + ".schedules.list", b + ".schedules.*.pause." + who, b + ".schedules.*.resume." + who,
                         b + ".queues.list", b + ".costs", b + ".schedules.define." + who, b + ".schedules.*.delete." + who, "$JS.API.CONSUMER.INFO." + s.tasks_stream() + ".*"});
  sub.insert(sub.end(), {b + ".runs.*.events", b + ".runs.*.deltas", b + ".nodes.heartbeat"});
}

} // namespace

std::string permissions_of(const credentials& c, const subjects& s) {
  auto b = s.base();
  auto tasks = s.tasks_stream();
  std::vector<std::string> pub, sub;
  bool responds = false;
  switch (c.role) {
    case broker_role::orchestrator:
      pub = {b + ".>", "$JS.API.>", "$JS.ACK.>", "$JS.FC.>", "$KV.>", "_INBOX.>"};
      sub = {b + ".>", "$KV.>"};
      break;
    case broker_role::worker:
      pub = {b + ".nodes.heartbeat", b + ".nodes.*.results", b + ".runs.*.task_wanted", b + ".runs.*.messages",
             b + ".runs.*.deltas", b + ".tools.declare." + c.user, "$JS.API.INFO", "$JS.API.STREAM.INFO." + tasks};
      if (c.queues.empty()) {
        pub.insert(pub.end(), {"$JS.API.CONSUMER.CREATE." + tasks, "$JS.API.CONSUMER.CREATE." + tasks + ".>",
                               "$JS.API.CONSUMER.DURABLE.CREATE." + tasks + ".*", "$JS.API.CONSUMER.INFO." + tasks + ".*",
                               "$JS.API.CONSUMER.MSG.NEXT." + tasks + ".*", "$JS.ACK." + tasks + ".>"});
      } else {
        // Only its queues' consumers, each created by the request that names its filter in the
        // subject (the broker checks the body against it): never one whose filter is in the body.
        for (const auto& q : c.queues) {
          auto consumer = tasks + ".workers_" + q;
          pub.insert(pub.end(), {"$JS.API.CONSUMER.CREATE." + consumer + "." + b + ".tasks." + q + ".>",
                                 "$JS.API.CONSUMER.INFO." + consumer, "$JS.API.CONSUMER.MSG.NEXT." + consumer,
                                 "$JS.ACK." + consumer + ".>"});
        }
      }
      sub = {b + ".nodes.ping"};
      responds = true;
      break;
    case broker_role::gateway:
      person_rights(s, "*", pub, sub);
      pub.insert(pub.end(), {b + ".nodes.*.invoke.*", b + ".nodes.heartbeat"});
      sub.push_back(b + ".nodes.ping");
      responds = true;
      break;
    case broker_role::person:
      person_rights(s, c.user, pub, sub);
      break;
  }
  sub.push_back("_INBOX." + c.user + ".>");
  std::string out = "permissions: { publish: { allow: " + list(pub) + " }, subscribe: { allow: " + list(sub) + " }";
  if (responds) out += ", allow_responses: true";
  return out + " }";
}

result<std::string> authorization_block(const std::vector<credentials>& users, const subjects& s) {
  std::string out = "authorization {\n  users = [\n";
  for (const auto& u : users) {
    if (!valid_identity(u.user)) return make_error(errc::invalid_argument, "user '" + u.user + "': " + identity_problem(u.user));
    auto hashed = hash_password(u.password);
    if (!hashed) return hashed.error();
    out += "    { user: \"" + u.user + "\", password: \"" + *hashed + "\",\n      " + permissions_of(u, s) + " }\n";
  }
  return out + "  ]\n}\n";
}

} // namespace keel::broker
