#include "runtime/bulk_actions.hpp"

namespace keel {

bool is_bulk_action(std::string_view action) {
  return action == "cancel" || action == "retry" || action == "approve" || action == "reject";
}

bool bulk_applies(std::string_view action, std::string_view status) {
  if (action == "cancel")
    return status == "pending" || status == "queued" || status == "running" || status == "suspended" || status == "waiting";
  if (action == "retry") return status == "failed";
  if (action == "approve" || action == "reject") return status == "suspended";
  return false;
}

} // namespace keel
