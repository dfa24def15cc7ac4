// libFuzzer target: the entries of the replicated run log, as a node taking runs over reads them
// (store::decode_transitions). Any bytes give transitions or an error; what decodes encodes and
// decodes to the same bytes.
#include "runtime/run_store.hpp"

#include <cstdint>
#include <string_view>

using namespace keel;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto decoded = store::decode_transitions(bytes);
  if (!decoded) return 0;
  std::vector<const store::run_transition*> pointers;
  for (const auto& t : *decoded) pointers.push_back(&t);
  auto encoded = store::encode_transitions(pointers);
  auto again = store::decode_transitions(encoded);
  if (!again) __builtin_trap();
  std::vector<const store::run_transition*> again_pointers;
  for (const auto& t : *again) again_pointers.push_back(&t);
  if (store::encode_transitions(again_pointers) != encoded) __builtin_trap();
  return 0;
}
