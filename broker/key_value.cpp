#include "broker/key_value.hpp"

#include "broker/native.hpp"
#include "runtime/backoff.hpp"
#include "runtime/clock.hpp"

#include <string_view>
#include <thread>

namespace keel::broker {

struct key_value::impl {
  kvStore* kv = nullptr;
  jsCtx* js = nullptr;  // the bucket's own (it lives as long as the bucket is used)
  std::string bucket;
  std::int64_t replicas = 1;
  std::int64_t write_within_ms = 5'000;
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
      state->replicas = options.replicas;
      state->write_within_ms = std::max<std::int64_t>(1, options.write_within_ms);
      return std::unique_ptr<key_value>(new key_value(std::move(state)));
    }
    if (steady_ms() >= deadline) return kv_error(s, "opening the key-value bucket " + options.bucket);
    std::this_thread::sleep_for(std::chrono::milliseconds(pause.next_ms()));
  }
}

result<key_value::created> key_value::create_if_absent(const std::string& key, const std::string& value) {
  auto made = create(key, value);
  if (made) return created{true, value};
  if (made.error().code != errc::conflict) return made.error();
  // Refused: the key has a value already (or had one a moment ago). Read it; if there is none,
  // the refusal was something else.
  auto existing = get(key);
  if (!existing) return existing.error();
  if (!*existing) return make_error(errc::unavailable, "writing the key " + key + ": " + made.error().message);
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
  if (impl_->replicas > 1) return write_at(key, value, 0);
  std::uint64_t revision = 0;
  natsStatus s = kvStore_Create(&revision, impl_->kv, key.c_str(), value.data(), static_cast<int>(value.size()));
  if (s != NATS_OK) return write_error(s, "creating the key " + key);
  return revision;
}

result<std::uint64_t> key_value::update(const std::string& key, const std::string& value, std::uint64_t revision) {
  if (impl_->replicas > 1) return write_at(key, value, revision);
  std::uint64_t now = 0;
  natsStatus s = kvStore_Update(&now, impl_->kv, key.c_str(), value.data(), static_cast<int>(value.size()), revision);
  if (s != NATS_OK) return write_error(s, "updating the key " + key);
  return now;
}

// nats-server 2.9 checks a write's expected last sequence *of its subject* before the replicas
// agree on the write, so two writes sent at once at the same revision of a replicated bucket may
// both be confirmed (tests/nats_server/concurrent_cas.mjs: 260 of 300 pairs on 3 replicas, none on
// 1; nats-server issue 4320, fixed in 2.9.21). Its check of the *stream's* last sequence is made in
// the order the writes are agreed (0 of 300 pairs). So on a replicated bucket a write that must not
// cross another's reads the stream's last sequence L, then the key's last message from the leader
// and checks it, then L again, then is sent expecting L: anything written to the bucket since
// refuses it, and it is tried again while the key is as expected.
result<std::uint64_t> key_value::write_at(const std::string& key, const std::string& value, std::uint64_t revision) {
  auto stream = "KV_" + impl_->bucket;
  auto subject = "$KV." + impl_->bucket + "." + key;
  auto what = (revision == 0 ? "creating the key " : "updating the key ") + key;
  auto deadline = steady_ms() + impl_->write_within_ms;
  backoff pause{1, 50};  // another key's write came between: most often a renewal of another lease
  while (true) {
    // The stream's last sequence and its leader, asked before and after the key is read: a key
    // read from a leader just elected that has not applied all it agreed to could be older than
    // the last sequence read before (the write would then be expected after a write it missed).
    auto stream_state = [&]() -> result<std::pair<std::uint64_t, std::string>> {
      jsErrCode code = static_cast<jsErrCode>(0);
      jsStreamInfo* info = nullptr;
      natsStatus s = js_GetStreamInfo(&info, impl_->js, stream.c_str(), nullptr, &code);
      if (s != NATS_OK) return js_error(s, static_cast<int>(code), what);
      std::pair<std::uint64_t, std::string> out{info->State.LastSeq,
                                                info->Cluster && info->Cluster->Leader ? info->Cluster->Leader : ""};
      jsStreamInfo_Destroy(info);
      return out;
    };
    auto before = stream_state();
    if (!before) return before.error();
    std::uint64_t stream_last = before->first;
    jsErrCode code = static_cast<jsErrCode>(0);
    natsMsg* last = nullptr;
    natsStatus s = js_GetLastMsg(&last, impl_->js, stream.c_str(), subject.c_str(), nullptr, &code);
    std::uint64_t current = 0;
    bool has_value = false;
    if (s == NATS_OK) {
      current = natsMsg_GetSequence(last);
      const char* operation = nullptr;
      has_value = natsMsgHeader_Get(last, "KV-Operation", &operation) != NATS_OK || operation == nullptr ||
                  (std::string_view(operation) != "DEL" && std::string_view(operation) != "PURGE");
      natsMsg_Destroy(last);
    } else if (s != NATS_NOT_FOUND && code != JSNoMessageFoundErr) {
      return js_error(s, static_cast<int>(code), what);
    }
    auto after = stream_state();
    if (!after) return after.error();
    bool steady = *after == *before;
    if (steady && (revision == 0 ? has_value : current != revision))
      return make_error(errc::conflict, what + ": it is at revision " + std::to_string(current) +
                                          (revision == 0 ? " already" : ", not " + std::to_string(revision)));
    if (steady && current <= stream_last) {
      natsMsg* msg = nullptr;
      s = natsMsg_Create(&msg, subject.c_str(), nullptr, value.data(), static_cast<int>(value.size()));
      jsPubOptions options;
      jsPubOptions_Init(&options);
      options.ExpectLastSeq = stream_last;
      // nats.c sends no expectation for 0: an empty bucket is expected empty by the header itself.
      if (s == NATS_OK && stream_last == 0) s = natsMsgHeader_Set(msg, "Nats-Expected-Last-Sequence", "0");
      jsPubAck* ack = nullptr;
      code = static_cast<jsErrCode>(0);
      if (s == NATS_OK) s = js_PublishMsg(&ack, impl_->js, msg, &options, &code);
      natsMsg_Destroy(msg);
      if (s == NATS_OK) {
        auto written = ack->Sequence;
        jsPubAck_Destroy(ack);
        return written;
      }
      if (code != JSStreamWrongLastSequenceErr) return js_error(s, static_cast<int>(code), what);
    }
    // Something was written to the bucket between the reads and the write: read again.
    if (steady_ms() >= deadline)
      return make_error(errc::unavailable, what + ": the bucket was written to without pause for " +
                                             std::to_string(impl_->write_within_ms) + " ms; not written");
    std::this_thread::sleep_for(std::chrono::milliseconds(pause.next_ms()));
  }
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
