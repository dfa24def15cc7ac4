// The replication folder's logger (one logger per folder: runtime/log.hpp).
#pragma once

#include "runtime/log.hpp"

#include <spdlog/spdlog.h>

namespace keel::replication {

inline const std::shared_ptr<spdlog::logger>& logger() {
  static const auto l = log::get("replication");
  return l;
}

} // namespace keel::replication
