#include "broker/key_value.hpp"

#include "broker/native.hpp"
#include "runtime/backoff.hpp"
#include "runtime/clock.hpp"

#include <thread>

namespace keel::broker {

struct key_value::impl {
  kvStore* kv = nullptr;
  jsCtx* js = nullptr;  // the bucket's own (it lives as long as the bucket is used)
  std::string bucket;
  ~impl() {
    if (kv) kvStore_Destroy(kv);
  }
};

key_value::key_value(std::unique_ptr<impl> state) : impl_(std::move(state)) {}
key_value::~key_value() = default;

namespace {
error kv_error(natsStatus s, const std::string& what) {
  std::string text = what + ": " + natsStatus_GetText(s);
  if (const char* last = nats_GetLastError(nullptr); last && *last) text += ": " + std::string(last);
  return make_error(s == NATS_TIMEOUT ? errc::timeout : errc::unavailable, text);
}
} // namespace

result<std::unique_ptr<key_value>> key_value::open(jetstream& js, const key_value_options& options) {
  auto state = std::make_unique<impl>();
  auto deadline = steady_ms() + 30'000;
  backoff pause{100, 1000};  // the broker may be starting, or electing a leader
  while (true) {
    natsStatus s = js_KeyValue(&state->kv, native_jetstream(js), options.bucket.c_str());
    if (s != NATS_OK) {
      kvConfig config;
      kvConfig_Init(&config);
      config.Bucket = options.bucket.c_str();
      config.History = 1;
      config.Replicas = static_cast<int>(options.replicas);
      config.StorageType = js_FileStorage;
      config.TTL = options.ttl_ms * 1'000'000;  // nanoseconds
      s = js_CreateKeyValue(&state->kv, native_jetstream(js), &config);
    }
    if (s == NATS_OK) {
      state->js = native_jetstream(js);
      state->bucket = options.bucket;
      return std::unique_ptr<key_value>(new key_value(std::move(state)));
    }
    if (steady_ms() >= deadline) return kv_error(s, "opening the key-value bucket " + options.bucket);
    std::this_thread::sleep_for(std::chrono::milliseconds(pause.next_ms()));
  }
}

result<key_value::created> key_value::create_if_absent(const std::string& key, const std::string& value) {
  natsStatus s = kvStore_Create(nullptr, impl_->kv, key.c_str(), value.data(), static_cast<int>(value.size()));
  if (s == NATS_OK) return created{true, value};
  // Refused: most likely the key has a value already. Read it; if there is none, the refusal
  // was something else.
  auto existing = get(key);
  if (!existing) return existing.error();
  if (!*existing) return kv_error(s, "writing the key " + key);
  return created{false, **existing};
}

result<std::optional<std::string>> key_value::get(const std::string& key) {
  kvEntry* entry = nullptr;
  natsStatus s = kvStore_Get(&entry, impl_->kv, key.c_str());
  if (s == NATS_NOT_FOUND) return std::optional<std::string>{};
  if (s != NATS_OK) return kv_error(s, "reading the key " + key);
  std::string out(static_cast<const char*>(kvEntry_Value(entry)), static_cast<std::size_t>(kvEntry_ValueLen(entry)));
  bool deleted = kvEntry_Operation(entry) != kvOp_Put;
  kvEntry_Destroy(entry);
  if (deleted) return std::optional<std::string>{};
  return std::optional<std::string>(std::move(out));
}

result<std::optional<key_value::entry>> key_value::get_entry(const std::string& key) {
  kvEntry* e = nullptr;
  natsStatus s = kvStore_Get(&e, impl_->kv, key.c_str());
  if (s == NATS_NOT_FOUND) return std::optional<entry>{};
  if (s != NATS_OK) return kv_error(s, "reading the key " + key);
  entry out{std::string(static_cast<const char*>(kvEntry_Value(e)), static_cast<std::size_t>(kvEntry_ValueLen(e))),
            kvEntry_Revision(e)};
  bool deleted = kvEntry_Operation(e) != kvOp_Put;
  kvEntry_Destroy(e);
  if (deleted) return std::optional<entry>{};
  return std::optional<entry>(std::move(out));
}

namespace {
// A write refused because the key moved on (or has a value) is a conflict: JetStream says
// "wrong last sequence" (10071).
error write_error(natsStatus s, const std::string& what) {
  auto e = kv_error(s, what);
  std::string last = nats_GetLastError(nullptr) ? nats_GetLastError(nullptr) : "";
  if (last.find("10071") != std::string::npos || last.find("wrong last sequence") != std::string::npos) e.code = errc::conflict;
  return e;
}
} // namespace

result<std::uint64_t> key_value::create(const std::string& key, const std::string& value) {
  std::uint64_t revision = 0;
  natsStatus s = kvStore_Create(&revision, impl_->kv, key.c_str(), value.data(), static_cast<int>(value.size()));
  if (s != NATS_OK) return write_error(s, "creating the key " + key);
  return revision;
}

result<std::uint64_t> key_value::update(const std::string& key, const std::string& value, std::uint64_t revision) {
  std::uint64_t now = 0;
  natsStatus s = kvStore_Update(&now, impl_->kv, key.c_str(), value.data(), static_cast<int>(value.size()), revision);
  if (s != NATS_OK) return write_error(s, "updating the key " + key);
  return now;
}

result<std::uint64_t> key_value::put(const std::string& key, const std::string& value) {
  std::uint64_t revision = 0;
  natsStatus s = kvStore_Put(&revision, impl_->kv, key.c_str(), value.data(), static_cast<int>(value.size()));
  if (s != NATS_OK) return write_error(s, "writing the key " + key);
  return revision;
}

result<std::vector<std::string>> key_value::keys() {
  // The subjects the bucket's stream holds, from its leader: one request, where listing the keys
  // as nats.c does makes a consumer each time (a change of the cluster's meta state in a
  // replicated stream, which fails while the meta leader is being elected).
  auto prefix = "$KV." + impl_->bucket + ".";
  auto filter = prefix + ">";
  auto stream = "KV_" + impl_->bucket;
  jsOptions options;
  jsOptions_Init(&options);
  options.Stream.Info.SubjectsFilter = filter.c_str();
  jsStreamInfo* info = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  natsStatus s = js_GetStreamInfo(&info, impl_->js, stream.c_str(), &options, &code);
  if (s != NATS_OK) return kv_error(s, "listing the keys of " + impl_->bucket);
  std::vector<std::string> out;
  if (info->State.Subjects)
    for (int i = 0; i < info->State.Subjects->Count; ++i) {
      std::string subject = info->State.Subjects->List[i].Subject;
      if (subject.rfind(prefix, 0) == 0) out.push_back(subject.substr(prefix.size()));
    }
  jsStreamInfo_Destroy(info);
  return out;
}

std::string key_of(const std::string& prefix, const std::string& bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out = prefix + ".";
  out.reserve(prefix.size() + 1 + bytes.size() * 2);
  for (unsigned char c : bytes) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

} // namespace keel::broker
