// MessagePack's own objects, for the few readers that walk a message without building JSON
// (an LLM task's conversation on a worker). Heavy header: include it only where needed.
#pragma once

#include "runtime/wire.hpp"

#include <msgpack.hpp>

namespace keel::wire {

// With the same limits and errors as unpack().
result<msgpack::object_handle> unpack_object(std::string_view bytes, const limits& bounds = {});
// `skip`: a map value left out of the result (with its key), for a part decoded otherwise.
result<value> to_value(const msgpack::object& o, const msgpack::object* skip = nullptr);

} // namespace keel::wire
