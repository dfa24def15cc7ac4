#include "apps/node_admin.hpp"

#include "broker/authorization.hpp"
#include "broker/connection.hpp"
#include "runtime/log.hpp"
#include "runtime/run_store.hpp"
#include "runtime/wire.hpp"

#include <spdlog/spdlog.h>

#include <filesystem>
#include <mutex>

namespace keel::actors {

result<std::unique_ptr<broker::subscription>> serve_admin(std::shared_ptr<broker::connection> nats,
                                                          const broker::subjects& subjects, const std::string& node_id,
                                                          store::run_store& store, const std::string& data_dir,
                                                          std::shared_ptr<std::mutex> busy) {
  return nats->subscribe(
    subjects.base() + ".admin." + node_id + ".backup", "",
    [nats, node_id, &store, data_dir, busy](broker::message&& m) {
      if (m.reply.empty()) return;
      auto answer = [&](const wire::value& v) { (void)nats->publish(m.reply, wire::pack(v)); };
      auto refuse = [&](errc code, const std::string& text) {
        (void)nats->publish(m.reply, wire::encode_error(make_error(code, text)));
      };
      auto body = wire::unpack(m.data);
      if (!body || !body->is_object() || !body->contains("name") || !(*body)["name"].is_string())
        return refuse(errc::invalid_argument, "a backup request is {\"name\": \"<name>\"}");
      auto name = (*body)["name"].get<std::string>();
      if (!broker::valid_identity(name))
        return refuse(errc::invalid_argument, "a backup's name is 1 to 64 of A-Z a-z 0-9 _ - (it is a folder under " +
                                                data_dir + "/backups)");
      std::unique_lock lock{*busy, std::try_to_lock};
      if (!lock.owns_lock()) return refuse(errc::unavailable, "a backup is being made; ask again once it is done");
      std::error_code ec;
      std::filesystem::create_directories(data_dir + "/backups", ec);
      std::filesystem::permissions(data_dir + "/backups", std::filesystem::perms::owner_all,
                                   std::filesystem::perm_options::replace, ec);
      auto dir = data_dir + "/backups/" + name;
      auto made = store.checkpoint(dir);
      if (!made) return refuse(made.error().code, made.error().message);
      log::get("node")->info("backup {} made at {} ({} bytes)", name, dir, *made);
      answer(wire::value{{"v", 1}, {"type", "backup"}, {"node", node_id}, {"path", dir}, {"bytes", *made}});
    });
}

} // namespace keel::actors
