// The lease bucket on a replicated JetStream key-value bucket.
#include "replication/lease_bucket.hpp"

#include "broker/key_value.hpp"

namespace keel::replication {

namespace {

class jetstream_bucket final : public lease_bucket {
public:
  explicit jetstream_bucket(broker::key_value& kv) : kv_(kv) {}
  result<std::optional<entry>> get_entry(const std::string& key) override {
    auto got = kv_.get_entry(key);
    if (!got) return got.error();
    if (!*got) return std::optional<entry>{};
    return std::optional<entry>(entry{std::move((*got)->value), (*got)->revision});
  }
  result<std::uint64_t> create(const std::string& key, const std::string& value) override { return kv_.create(key, value); }
  result<std::uint64_t> update(const std::string& key, const std::string& value, std::uint64_t revision) override {
    return kv_.update(key, value, revision);
  }
  result<std::vector<std::string>> keys() override { return kv_.keys(); }

private:
  broker::key_value& kv_;
};

} // namespace

std::unique_ptr<lease_bucket> jetstream_lease_bucket(broker::key_value& kv) { return std::make_unique<jetstream_bucket>(kv); }

} // namespace keel::replication
