// Schedules made through the API (docs/WORKFLOWS.md): their definitions in the schedules' bucket,
// under def.<name>, so that every orchestrator drives them. A definition names its generation (when
// it was made): its shared record is <name>.g<generation>, so a schedule removed and made again
// starts afresh from its next tick. A removed one is a tombstone (the bucket keeps keys).
#pragma once

#include "runtime/config.hpp"
#include "runtime/result.hpp"
#include "runtime/wire.hpp"

#include <cstdint>
#include <optional>
#include <string>

namespace keel::actors {

struct schedule_definition {
  config::schedule_config schedule;
  std::int64_t generation = 0;  // when it was made (ms); 0: removed
  std::string by;               // who made or removed it
};

constexpr const char* definition_key_prefix = "def.";
inline std::string definition_key(const std::string& name) { return definition_key_prefix + name; }
inline std::string api_record_key(const std::string& name, std::int64_t generation) {
  return name + ".g" + std::to_string(generation);
}

std::string encode(const schedule_definition& d);
result<schedule_definition> decode_schedule_definition(const std::string& bytes);

// A definition as a client sends it ({name, agent, cron, timezone?, input?, missed?, catch_up_max?,
// late_ms_max?}), with every field's type checked and the defaults of [schedules.<name>].
result<config::schedule_config> schedule_from_request(const wire::value& v);
wire::value schedule_value(const config::schedule_config& s);

} // namespace keel::actors
