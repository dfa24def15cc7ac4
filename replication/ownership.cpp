#include "replication/ownership.hpp"

namespace keel::replication {

bool ownership::serves(std::string_view domain) const {
  if (domain == node_id_) return !leases_ || leases_->holds(node_id_);
  if (!leases_ || !leases_->holds(std::string(domain))) return false;
  std::lock_guard lock{mutex_};
  return served_.count(domain) > 0;
}

bool ownership::answers_for(std::string_view domain) const {
  if (!serves(domain)) return false;
  return !leases_ || leases_->valid(std::string(domain));
}

void ownership::serve(const std::string& domain) {
  std::lock_guard lock{mutex_};
  served_.insert(domain);
}

} // namespace keel::replication
