// Who may act on a run now: the node serves the runs of a domain (the node id in a run id) that
// is its own, or that it took over and has read and fenced; and, with the replicated log, only
// while its lease certainly holds. Without the log a node serves only its own runs, always.
#pragma once

#include "replication/lease_keeper.hpp"

#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>

namespace keel::replication {

class ownership {
public:
  explicit ownership(std::string node_id) : node_id_(std::move(node_id)) {}
  const std::string& node_id() const { return node_id_; }

  // With the replicated log: the leases, once started (before any request is taken).
  void use(std::unique_ptr<lease_keeper> leases) { leases_ = std::move(leases); }
  lease_keeper* leases() const { return leases_.get(); }
  bool replicated() const { return leases_ != nullptr; }

  // Whether this node serves the runs of `domain`: its own, and those it took over.
  bool serves(std::string_view domain) const;
  // Whether it may answer for them now: it serves them and its lease certainly holds. A node
  // paused past its lease has stale runs in memory and on disk (another took them over and went
  // on): asked whether a task is still wanted, or handed a result, it must say nothing rather
  // than "no longer wanted" or "not needed".
  bool answers_for(std::string_view domain) const;
  // A domain taken over: served once its takeover has read and fenced every run.
  void serve(const std::string& domain);

private:
  std::string node_id_;
  std::unique_ptr<lease_keeper> leases_;
  mutable std::mutex mutex_;
  std::set<std::string, std::less<>> served_;
};

} // namespace keel::replication
