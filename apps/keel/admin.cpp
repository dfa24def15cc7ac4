// `keel admin backup|restore`: a node's store copied while it serves, and put back into a fresh
// data directory (docs/OPERATIONS.md, backup and restore).
#include "apps/keel/commands.hpp"
#include "runtime/error_reply.hpp"

#include "broker/authorization.hpp"
#include "broker/connection.hpp"
#include "runtime/run_store.hpp"
#include "runtime/wire.hpp"

#include <CLI/CLI.hpp>

#include <filesystem>
#include <iostream>

namespace keel::cli {

namespace fs = std::filesystem;

namespace {

int backup(const client_flags& flags, const std::string& node, const std::string& name, std::int64_t timeout_ms) {
  auto fail = [](const std::string& m) {
    std::cerr << "keel admin backup: " << m << "\n";
    return 1;
  };
  if (!broker::valid_identity(node)) return fail("'" + node + "' is not a node id");
  if (!broker::valid_identity(name)) return fail("a backup's name is 1 to 64 of A-Z a-z 0-9 _ -");
  auto c = flags.resolve();
  if (!c) return fail(c.error().message);
  auto nats = connect_command(*c, "admin backup");
  if (!nats) return fail(nats.error().message);
  broker::subjects subjects{c->prefix, c->ns};
  auto reply = (*nats)->request(subjects.base() + ".admin." + node + ".backup", wire::pack(wire::value{{"name", name}}), timeout_ms);
  if (!reply) {
    if (reply.error().code == errc::unavailable)
      return fail("node " + node + " does not answer (not running, not an orchestrator, or these credentials may not ask it)");
    return fail(reply.error().message);
  }
  auto answer = wire::unpack(reply->data);
  if (!answer || !answer->is_object()) return fail("the node's answer cannot be read");
  if (text_field(*answer, "type") == "error")
    return fail(error_message_of(*answer, std::string("the node refused")));
  std::cout << "backup " << name << " of node " << answer->value("node", node) << ": " << answer->value("path", std::string())
            << " (" << answer->value("bytes", std::uint64_t{0}) << " bytes)\n";
  return 0;
}

int restore(const std::string& from, const std::string& data_dir) {
  auto fail = [](const std::string& m) {
    std::cerr << "keel admin restore: " << m << "\n";
    return 1;
  };
  std::error_code ec;
  if (!fs::is_directory(from, ec) || !fs::exists(fs::path(from) / "CURRENT", ec))
    return fail(from + " is not a backup (no RocksDB CURRENT file in it)");
  auto target = fs::path(data_dir) / "runs";
  if (fs::exists(target, ec) && !fs::is_empty(target, ec))
    return fail(target.string() + " holds a store already: restore into a fresh data directory (the node stopped)");
  fs::create_directories(data_dir, ec);
  if (ec) return fail("cannot create " + data_dir + ": " + ec.message());
  fs::permissions(data_dir, fs::perms::owner_all, fs::perm_options::replace, ec);
  auto staging = fs::path(data_dir) / "runs.restoring";
  fs::remove_all(staging, ec);
  fs::copy(from, staging, fs::copy_options::recursive, ec);
  if (ec) return fail("copying " + from + ": " + ec.message());
  // The copy must open as a store and read: a damaged or partial backup is refused, not served.
  std::string node;
  std::size_t runs = 0;
  {
    auto opened = store::run_store::open({staging.string(), true});
    if (!opened) {
      fs::remove_all(staging, ec);
      return fail("the backup does not open as a run store: " + opened.error().message);
    }
    auto id = (*opened)->get_meta("node_id");
    if (id && *id) node = **id;
    auto recent = (*opened)->list_recent(SIZE_MAX);
    if (!recent) {
      fs::remove_all(staging, ec);
      return fail("the backup's runs cannot be read: " + recent.error().message);
    }
    runs = recent->size();
  }
  fs::rename(staging, target, ec);
  if (ec) return fail("cannot put the store in place: " + ec.message());
  std::cout << "restored " << runs << " runs of node " << (node.empty() ? std::string("(unnamed)") : node) << " into "
            << target.string() << "; start the node with node.data_dir = \"" << data_dir << "\"\n";
  return 0;
}

} // namespace

void add_admin_command(CLI::App& app, int& exit_code) {
  auto* admin = app.add_subcommand("admin", "Back up a node's store while it serves, and restore it");
  admin->require_subcommand(1);
  auto flags = std::make_shared<client_flags>();
  auto node = std::make_shared<std::string>(), name = std::make_shared<std::string>();
  auto wait_ms = std::make_shared<std::int64_t>(120'000);
  auto* b = admin->add_subcommand("backup", "Have NODE copy its store now into <its data_dir>/backups/NAME");
  b->add_option("node", *node, "The node's id (keel nodes)")->required();
  b->add_option("name", *name, "The backup's name: a new folder under the node's data_dir/backups")->required();
  b->add_option("--wait-ms", *wait_ms, "How long to wait for the node to finish");
  add_client_flags(*b, *flags);
  b->callback([=, &exit_code] { exit_code = backup(*flags, *node, *name, *wait_ms); });
  auto from = std::make_shared<std::string>(), data_dir = std::make_shared<std::string>();
  auto* r = admin->add_subcommand("restore", "Put a backup in place as the store of a fresh data directory (the node stopped)");
  r->add_option("--from", *from, "The backup's folder")->required();
  r->add_option("--data-dir", *data_dir, "The node's data directory (node.data_dir); its store must not exist yet")->required();
  r->callback([=, &exit_code] { exit_code = restore(*from, *data_dir); });
}

} // namespace keel::cli
