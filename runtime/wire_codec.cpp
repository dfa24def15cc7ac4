// The raw codec: any value to MessagePack and back, with the limits every message meets, and the
// repair of what is not UTF-8.
#include "runtime/wire.hpp"
#include "runtime/wire_msgpack.hpp"

#include <msgpack.hpp>

#include <algorithm>

namespace keel::wire {

namespace {

void pack_value(msgpack::packer<msgpack::sbuffer>& out, const value& v) {
  switch (v.type()) {
    case value::value_t::null:
    case value::value_t::discarded: out.pack_nil(); break;
    case value::value_t::boolean: v.get<bool>() ? out.pack_true() : out.pack_false(); break;
    case value::value_t::number_integer: out.pack(v.get<std::int64_t>()); break;
    case value::value_t::number_unsigned: out.pack(v.get<std::uint64_t>()); break;
    case value::value_t::number_float: out.pack(v.get<double>()); break;
    case value::value_t::string: {
      const auto& s = v.get_ref<const std::string&>();
      out.pack_str(static_cast<std::uint32_t>(s.size()));
      out.pack_str_body(s.data(), static_cast<std::uint32_t>(s.size()));
      break;
    }
    case value::value_t::binary: {
      const auto& b = v.get_binary();
      out.pack_bin(static_cast<std::uint32_t>(b.size()));
      out.pack_bin_body(reinterpret_cast<const char*>(b.data()), static_cast<std::uint32_t>(b.size()));
      break;
    }
    case value::value_t::array:
      out.pack_array(static_cast<std::uint32_t>(v.size()));
      for (const auto& element : v) pack_value(out, element);
      break;
    case value::value_t::object:
      // nlohmann keeps object keys sorted, so equal values always give equal bytes.
      out.pack_map(static_cast<std::uint32_t>(v.size()));
      for (const auto& [key, element] : v.items()) {
        out.pack_str(static_cast<std::uint32_t>(key.size()));
        out.pack_str_body(key.data(), static_cast<std::uint32_t>(key.size()));
        pack_value(out, element);
      }
      break;
  }
}

}  // namespace

void repair_utf8(value& v) {
  if (v.is_string()) {
    auto& text = v.get_ref<std::string&>();
    if (!is_valid_utf8(text)) text = repaired_utf8(text);
  } else if (v.is_array()) {
    for (auto& element : v) repair_utf8(element);
  } else if (v.is_object()) {
    std::vector<std::pair<std::string, value>> renamed;
    for (auto it = v.begin(); it != v.end();) {
      repair_utf8(it.value());
      if (!is_valid_utf8(it.key())) {
        renamed.emplace_back(repaired_utf8(it.key()), std::move(it.value()));
        it = v.erase(it);
      } else {
        ++it;
      }
    }
    for (auto& [key, element] : renamed) v[key] = std::move(element);
  }
}

namespace {

// `skip`: a map value left out of the result (with its key), for a part decoded otherwise.
result<value> to_json(const msgpack::object& o, const msgpack::object* skip = nullptr) {
  switch (o.type) {
    case msgpack::type::NIL: return value(nullptr);
    case msgpack::type::BOOLEAN: return value(o.via.boolean);
    case msgpack::type::POSITIVE_INTEGER: return value(o.via.u64);
    case msgpack::type::NEGATIVE_INTEGER: return value(o.via.i64);
    case msgpack::type::FLOAT32:
    case msgpack::type::FLOAT64: return value(o.via.f64);
    case msgpack::type::STR:
      if (!is_valid_utf8(std::string_view(o.via.str.ptr, o.via.str.size)))
        return make_error(errc::malformed, "a string is not valid UTF-8 (every text on the wire must be)");
      return value(std::string(o.via.str.ptr, o.via.str.size));
    case msgpack::type::BIN: {
      const auto* begin = reinterpret_cast<const std::uint8_t*>(o.via.bin.ptr);
      return value::binary(std::vector<std::uint8_t>(begin, begin + o.via.bin.size));
    }
    case msgpack::type::ARRAY: {
      value out = value::array();
      for (std::uint32_t i = 0; i < o.via.array.size; ++i) {
        auto element = to_json(o.via.array.ptr[i], skip);
        if (!element) return element;
        out.push_back(std::move(*element));
      }
      return out;
    }
    case msgpack::type::MAP: {
      value out = value::object();
      for (std::uint32_t i = 0; i < o.via.map.size; ++i) {
        const auto& kv = o.via.map.ptr[i];
        if (kv.key.type != msgpack::type::STR)
          return make_error(errc::malformed, "a map key is not a string");
        if (!is_valid_utf8(std::string_view(kv.key.via.str.ptr, kv.key.via.str.size)))
          return make_error(errc::malformed, "a map key is not valid UTF-8 (every text on the wire must be)");
        if (&kv.val == skip) continue;
        auto element = to_json(kv.val, skip);
        if (!element) return element;
        out[std::string(kv.key.via.str.ptr, kv.key.via.str.size)] = std::move(*element);
      }
      return out;
    }
    case msgpack::type::EXT: return make_error(errc::malformed, "extension types are not used");
  }
  return make_error(errc::malformed, "unknown MessagePack type");
}

} // namespace

std::string pack(const value& v) {
  msgpack::sbuffer buffer;
  msgpack::packer<msgpack::sbuffer> out(buffer);
  pack_value(out, v);
  return std::string(buffer.data(), buffer.size());
}

std::string pack_fields(std::vector<std::pair<std::string_view, const value*>> fields) {
  return pack_fields(std::move(fields), {});
}

std::string pack_fields(std::vector<std::pair<std::string_view, const value*>> fields,
                        const std::vector<std::pair<std::string_view, std::string>>& packed) {
  struct field {
    std::string_view key;
    const value* v;
    const std::string* bytes;
  };
  std::vector<field> all;
  all.reserve(fields.size() + packed.size());
  for (const auto& [key, v] : fields) all.push_back({key, v, nullptr});
  for (const auto& [key, bytes] : packed) all.push_back({key, nullptr, &bytes});
  std::sort(all.begin(), all.end(), [](const field& a, const field& b) { return a.key < b.key; });
  msgpack::sbuffer buffer;
  msgpack::packer<msgpack::sbuffer> out(buffer);
  out.pack_map(static_cast<std::uint32_t>(all.size()));
  for (const auto& f : all) {
    out.pack_str(static_cast<std::uint32_t>(f.key.size()));
    out.pack_str_body(f.key.data(), static_cast<std::uint32_t>(f.key.size()));
    if (f.v) pack_value(out, *f.v);
    else buffer.write(f.bytes->data(), f.bytes->size());
  }
  return std::string(buffer.data(), buffer.size());
}

std::string pack_list(const std::vector<std::string>& packed) {
  msgpack::sbuffer buffer;
  msgpack::packer<msgpack::sbuffer> out(buffer);
  out.pack_array(static_cast<std::uint32_t>(packed.size()));
  for (const auto& bytes : packed) buffer.write(bytes.data(), bytes.size());
  return std::string(buffer.data(), buffer.size());
}

result<msgpack::object_handle> unpack_object(std::string_view bytes, const limits& bounds) {
  if (bytes.size() > bounds.message_bytes_max)
    return make_error(errc::too_large, "message of " + std::to_string(bytes.size()) +
                                         " bytes is over the limit of " +
                                         std::to_string(bounds.message_bytes_max));
  if (bytes.empty()) return make_error(errc::malformed, "empty message");
  try {
    std::size_t offset = 0;
    auto n = bounds.container_elements_max;
    msgpack::unpack_limit limit(n, n, bounds.message_bytes_max, bounds.message_bytes_max, 0,
                                bounds.depth_max);
    // The objects go in a zone sized to the message: msgpack's default first block (8 KB) is a
    // "large" request to malloc, which makes it consolidate its free lists on every message.
    auto zone = std::make_unique<msgpack::zone>(std::clamp<std::size_t>(bytes.size() * 2, 256, 8192));
    msgpack::object root = msgpack::unpack(*zone, bytes.data(), bytes.size(), offset, nullptr, nullptr, limit);
    if (offset != bytes.size())
      return make_error(errc::malformed, std::to_string(bytes.size() - offset) +
                                           " bytes after the end of the message");
    return msgpack::object_handle(root, std::move(zone));
  } catch (const msgpack::insufficient_bytes&) {
    return make_error(errc::malformed, "truncated message");
  } catch (const msgpack::ext_size_overflow&) {
    // Extensions are limited to size 0 so that none is ever built: say what it was.
    return make_error(errc::malformed, "extension types are not used");
  } catch (const msgpack::depth_size_overflow&) {
    return make_error(errc::too_large, "message nests deeper than " +
                                         std::to_string(bounds.depth_max) + " levels");
  } catch (const msgpack::size_overflow& e) {
    return make_error(errc::too_large, std::string("message exceeds a size limit: ") + e.what());
  } catch (const std::exception& e) {
    return make_error(errc::malformed, std::string("not MessagePack: ") + e.what());
  }
}

result<value> to_value(const msgpack::object& o, const msgpack::object* skip) { return to_json(o, skip); }

result<value> unpack(std::string_view bytes, const limits& bounds) {
  auto handle = unpack_object(bytes, bounds);
  if (!handle) return handle.error();
  return to_json(handle->get());
}

} // namespace keel::wire
