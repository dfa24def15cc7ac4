// libFuzzer target: the node's configuration loader on any text (a file an operator wrote, a
// --set line). Any text gives a configuration or an error naming what is wrong, never a crash.
#include "runtime/config.hpp"

#include <cstdint>
#include <string>

using namespace keel;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  (void)config::load_string(text, "fuzz.toml");
  // The same text as one --set line over an empty file.
  if (text.find('\n') == std::string::npos) (void)config::load_string("", "fuzz.toml", {text});
  return 0;
}
