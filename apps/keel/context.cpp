#include "apps/keel/context.hpp"

#include "runtime/secrets.hpp"

#include <toml++/toml.h>

#include <cstdlib>

#include <filesystem>
#include <fstream>

namespace keel::cli {

std::string keel_home() {
  if (const char* home = std::getenv("KEEL_HOME"); home && *home) return home;
  if (const char* home = std::getenv("HOME"); home && *home) return std::string(home) + "/.keel";
  return ".keel";
}

std::string context_path() { return keel_home() + "/context.toml"; }

result<context> read_context() {
  context c;
  if (!std::filesystem::exists(context_path())) return c;
  try {
    auto table = toml::parse_file(context_path());
    c.nats_url = table["nats_url"].value_or(c.nats_url);
    c.prefix = table["prefix"].value_or(c.prefix);
    c.ns = table["namespace"].value_or(c.ns);
    c.dashboard_url = table["dashboard_url"].value_or(std::string{});
    c.credentials_file = table["credentials_file"].value_or(std::string{});
    c.tokens_file = table["tokens_file"].value_or(std::string{});
    c.pid = table["pid"].value_or(0L);
  } catch (const toml::parse_error& e) {
    return make_error(errc::config, context_path() + ": " + std::string(e.description()));
  }
  return c;
}

result<void> write_context(const context& c) {
  std::error_code ec;
  std::filesystem::create_directories(keel_home(), ec);
  auto temporary = context_path() + ".tmp";
  {
    std::ofstream out(temporary, std::ios::trunc);
    toml::table table{{"nats_url", c.nats_url}, {"prefix", c.prefix}, {"namespace", c.ns},
                      {"dashboard_url", c.dashboard_url}, {"credentials_file", c.credentials_file}, {"tokens_file", c.tokens_file},
                      {"pid", static_cast<int64_t>(c.pid)}};
    out << "# Written by `keel dev`; other keel commands read it.\n" << table << "\n";
    if (!out) return make_error(errc::io, "cannot write " + temporary);
  }
  std::filesystem::rename(temporary, context_path(), ec);
  if (ec) return make_error(errc::io, "cannot write " + context_path() + ": " + ec.message());
  return success();
}

std::string context::who() const { return user.empty() ? account_name() : user; }

void remove_context_if_owned(long pid) {
  auto current = read_context();
  if (current && current->pid == pid) std::filesystem::remove(context_path());
}

} // namespace keel::cli
