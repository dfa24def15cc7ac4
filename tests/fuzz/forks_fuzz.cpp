// libFuzzer target: a fork (actors/run_fork.hpp) of any recorded run with any request. The bytes
// are a MessagePack map {request, state, messages, events}: a client's fork request, and what a
// store (possibly damaged) holds of the run. Any of it gives a plan or an error, never a crash; a
// plan's record reads back as a run state, and the fork holds no more messages than the run.
#include "actors/run_fork.hpp"

#include <cstdint>
#include <string_view>

using namespace keel;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto input = wire::unpack(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!input || !input->is_object()) return 0;
  auto field = [&](const char* key) { return input->contains(key) ? (*input)[key] : wire::value(); };
  auto request = actors::fork_request_from_value(field("request"));
  if (!request) return 0;
  actors::recorded_run run;
  run.record.run_id = "01m00000000000000-n1";
  run.record.agent = "coder";
  run.record.state = field("state");
  if (field("messages").is_array())
    for (const auto& m : field("messages")) run.messages.push_back(m);
  if (field("events").is_array()) {
    std::uint64_t seq = 0;
    for (const auto& e : field("events")) {
      if (!e.is_object() || !e.contains("event_type") || !e["event_type"].is_string()) continue;
      run.events.push_back(wire::event{run.record.run_id, ++seq, e["event_type"].get<std::string>(), 0,
                                       e.contains("data") ? e["data"] : wire::value()});
    }
  }
  auto plan = actors::plan_fork("01m00000000000001-n1", run, *request, 1);
  if (!plan) return 0;
  auto state = store::run_state_from_value(plan->record.state);
  if (!state) __builtin_trap();
  if (!plan->record.state.contains("messages") || plan->record.state["messages"].size() > run.messages.size()) __builtin_trap();
  if (state->steps < 0 || static_cast<std::uint64_t>(state->steps) > request->at_step) __builtin_trap();
  return 0;
}
