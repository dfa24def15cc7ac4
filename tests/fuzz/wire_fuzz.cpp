// libFuzzer target: every decoder of the wire protocol, on any bytes. What a client, a worker or
// an orchestrator sends reaches these first: any input must give a value or an error, never a
// crash, a hang or unbounded memory. Round trip: what decodes encodes to stable bytes.
#include "runtime/wire.hpp"

#include <cstdint>
#include <string_view>

using namespace keel;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  wire::limits bounds;
  bounds.message_bytes_max = 1 << 20;
  if (auto v = wire::unpack(bytes, bounds)) {
    // What decodes encodes, and that decodes and encodes to the same bytes (bytes, not values:
    // a NaN is not equal to itself).
    auto once = wire::pack(*v);
    auto again = wire::unpack(once, bounds);
    if (!again || wire::pack(*again) != once) __builtin_trap();
  }
  (void)wire::decode<wire::invoke_request>(bytes, bounds);
  (void)wire::decode<wire::invoke_reply>(bytes, bounds);
  (void)wire::decode<wire::resume_request>(bytes, bounds);
  (void)wire::decode<wire::resume_reply>(bytes, bounds);
  (void)wire::decode<wire::event>(bytes, bounds);
  (void)wire::decode<wire::task>(bytes, bounds);
  (void)wire::decode_task_keeping_conversation(bytes, bounds);
  (void)wire::decode<wire::task_result>(bytes, bounds);
  (void)wire::decode<wire::heartbeat>(bytes, bounds);
  (void)wire::open_request(bytes, "cancel", bounds);
  (void)wire::peek_task_ref(bytes, bounds);
  return 0;
}
