// `keel credentials`: the broker's users (a credentials file each, owner-only) and the nats-server
// authorization they make (nats-auth.conf, hashes only), kept together in one directory.
// `keel token`: the gateway's named tokens.
#include "apps/keel/commands.hpp"
#include "apps/keel/credentials.hpp"

#include "broker/authorization.hpp"
#include "gateway/tokens.hpp"
#include "runtime/secrets.hpp"

#include <CLI/CLI.hpp>

#include <algorithm>

#include <filesystem>
#include <iostream>

namespace keel::cli {

namespace fs = std::filesystem;

result<std::vector<broker::credentials>> read_credentials_dir(const std::string& dir) {
  std::vector<broker::credentials> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.path().extension() != ".creds") continue;
    auto c = broker::read_credentials(entry.path().string());
    if (!c) return c.error();
    out.push_back(*c);
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.user < b.user; });
  return out;
}

result<void> write_authorization(const std::string& dir, const broker::subjects& subjects) {
  auto users = read_credentials_dir(dir);
  if (!users) return users.error();
  auto block = broker::authorization_block(*users, subjects);
  if (!block) return block.error();
  return write_private_file(dir + "/nats-auth.conf",
                            "# The broker's users and what each may publish and read (keel credentials). Hashes only.\n" + *block);
}

result<void> add_user(const std::string& dir, const std::string& name, broker::broker_role role, bool replace,
                      const std::vector<std::string>& queues = {}) {
  if (auto problem = broker::identity_problem(name); !problem.empty()) return make_error(errc::invalid_argument, "'" + name + "': " + problem);
  auto path = dir + "/" + name + ".creds";
  if (!replace && fs::exists(path)) return success();
  return broker::write_credentials(path, broker::credentials{name, broker::random_secret(), role, queues});
}

result<credentials_layout> ensure_credentials(const std::string& dir, const broker::subjects& subjects,
                                              const std::vector<std::string>& people) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return make_error(errc::io, "cannot create " + dir + ": " + ec.message());
  fs::permissions(dir, fs::perms::owner_all, fs::perm_options::replace, ec);
  for (auto [name, role] : {std::pair{"orchestrator", broker::broker_role::orchestrator},
                            std::pair{"worker", broker::broker_role::worker}, std::pair{"gateway", broker::broker_role::gateway}})
    if (auto r = add_user(dir, name, role, false); !r) return r.error();
  for (const auto& person : people)
    if (auto r = add_user(dir, person, broker::broker_role::person, false); !r) return r.error();
  if (auto r = write_authorization(dir, subjects); !r) return r.error();
  credentials_layout out;
  out.dir = dir;
  out.authorization = dir + "/nats-auth.conf";
  return out;
}

namespace {

int fail(const std::string& what, const error& e) {
  std::cerr << "keel " << what << ": " << e.message << "\n";
  return e.code == errc::invalid_argument || e.code == errc::config ? 2 : 1;
}

std::string default_tokens_file() {
  auto c = read_context();
  if (c && !c->tokens_file.empty()) return c->tokens_file;
  return keel_home() + "/dev/node/gateway-tokens";
}

} // namespace

void add_credentials_command(CLI::App& app, int& exit_code) {
  struct options {
    std::string dir, prefix = "keel", ns = "default", name, role = "person";
    std::vector<std::string> people;
    std::vector<std::string> queues;
  };
  auto o = std::make_shared<options>();
  auto* creds = app.add_subcommand("credentials", "The broker's users: credentials files and nats-server's authorization");
  creds->require_subcommand(1);
  auto subjects = [o] { return broker::subjects{o->prefix, o->ns}; };
  auto* init = creds->add_subcommand("init", "Make the users of every role (and people) in DIR, and DIR/nats-auth.conf");
  init->add_option("dir", o->dir, "Directory (made owner-only)")->required();
  init->add_option("--person", o->people, "A person's user (repeatable)");
  init->add_option("--prefix", o->prefix, "Subject prefix");
  init->add_option("--namespace", o->ns, "Namespace");
  init->callback([o, subjects, &exit_code] {
    auto made = ensure_credentials(o->dir, subjects(), o->people);
    if (!made) exit_code = fail("credentials init", made.error());
    else std::cout << "Credentials in " << made->dir << "; nats-server includes " << made->authorization << "\n";
  });
  for (const char* verb : {"add", "rotate", "remove"}) {
    auto* sub = creds->add_subcommand(verb, std::string(verb) == "add"      ? "Add a user (a person by default)"
                                            : std::string(verb) == "rotate" ? "Give a user a new password"
                                                                            : "Remove a user");
    sub->add_option("name", o->name, "User name")->required();
    sub->add_option("--dir", o->dir, "The credentials directory")->required();
    sub->add_option("--prefix", o->prefix, "Subject prefix");
    sub->add_option("--namespace", o->ns, "Namespace");
    if (std::string(verb) == "add") {
      sub->add_option("--role", o->role, "orchestrator, worker, gateway or person");
      sub->add_option("--queues", o->queues, "A worker: only these queues' tasks (comma-separated or repeated; default: every queue)")
        ->delimiter(',');
    }
    sub->callback([o, subjects, verb = std::string(verb), &exit_code] {
      result<void> r = success();
      auto path = o->dir + "/" + o->name + ".creds";
      if (verb == "remove") {
        if (!fs::remove(path)) r = make_error(errc::not_found, "no user '" + o->name + "' in " + o->dir);
      } else if (verb == "rotate") {
        auto old = broker::read_credentials(path);
        if (!old) r = old.error();
        else r = add_user(o->dir, o->name, old->role, true, old->queues);
      } else {
        broker::broker_role role;
        if (!broker::role_from_string(o->role, role)) r = make_error(errc::invalid_argument, "--role: orchestrator, worker, gateway or person");
        else if (fs::exists(path)) r = make_error(errc::conflict, "user '" + o->name + "' exists; rotate or remove it");
        else if (!o->queues.empty() && role != broker::broker_role::worker) r = make_error(errc::invalid_argument, "--queues is for a worker");
        else if (auto bad = std::find_if(o->queues.begin(), o->queues.end(), [](const std::string& q) { return !broker::valid_identity(q); });
                 bad != o->queues.end()) r = make_error(errc::invalid_argument, "--queues: '" + *bad + "' is not a queue name");
        else r = add_user(o->dir, o->name, role, false, o->queues);
      }
      if (r) r = write_authorization(o->dir, subjects());
      if (!r) {
        exit_code = fail("credentials " + verb, r.error());
        return;
      }
      std::cout << "Done. nats-server takes the new " << o->dir << "/nats-auth.conf on a reload (kill -HUP <pid>)";
      if (verb != "remove") std::cout << "; the user's file is " << path;
      std::cout << "\n";
    });
  }

  auto t = std::make_shared<options>();
  auto* token = app.add_subcommand("token", "The gateway's named tokens (gateway.tokens_file)");
  token->require_subcommand(1);
  auto* add = token->add_subcommand("add", "Make a token for NAME and print it (once)");
  auto* remove = token->add_subcommand("remove", "Remove NAME's token");
  auto* list = token->add_subcommand("list", "Names that have a token");
  for (auto* sub : {add, remove, list}) sub->add_option("--file", t->dir, "The tokens file (default: that of `keel dev`)");
  add->add_option("name", t->name, "Who the token is for")->required();
  remove->add_option("name", t->name, "Whose token")->required();
  auto run = [t, &exit_code](const std::string& verb) {
    auto file = t->dir.empty() ? default_tokens_file() : t->dir;
    auto tokens = gateway::read_tokens_file(file);
    if (!tokens) return void(exit_code = fail("token " + verb, tokens.error()));
    if (verb == "list") {
      for (const auto& n : *tokens) std::cout << n.name << "\n";
      return;
    }
    if (auto problem = broker::identity_problem(t->name); !problem.empty())
      return void(exit_code = fail("token " + verb, make_error(errc::invalid_argument, "'" + t->name + "': " + problem)));
    auto at = std::find_if(tokens->begin(), tokens->end(), [&](const auto& n) { return n.name == t->name; });
    std::string made;
    if (verb == "remove") {
      if (at == tokens->end()) return void(exit_code = fail("token remove", make_error(errc::not_found, "no token for '" + t->name + "' in " + file)));
      tokens->erase(at);
    } else {
      if (at != tokens->end()) tokens->erase(at);  // a new token replaces the old one
      made = gateway::random_token();
      tokens->push_back({t->name, gateway::token_hash(made)});
    }
    if (auto w = gateway::write_tokens_file(file, *tokens); !w) return void(exit_code = fail("token " + verb, w.error()));
    if (!made.empty()) std::cout << made << "\n";
    std::cerr << "keel token: " << file << " changed; the gateway reads it again within a second\n";
  };
  add->callback([run] { run("add"); });
  remove->callback([run] { run("remove"); });
  list->callback([run] { run("list"); });
}

} // namespace keel::cli
