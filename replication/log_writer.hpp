// Writes runs to the replicated log, each entry where the run's last entry is (so that a write of
// a node that lost the run is refused), and keeps where each run's log ends. A new run is admitted
// on one of its domain's gates first (replication/admission.hpp). A batch of several
// runs is sent per run: a run refused or failing alone fails alone, the others go on, and no
// entry is left sent but unaccounted for (its ticket waited for, or kept to confirm before the
// run's next write).
#pragma once

#include "replication/ownership.hpp"
#include "replication/run_log.hpp"
#include "runtime/run_store.hpp"

#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

namespace keel::replication {

// Where an admission gate ends (admission.hpp), read whole: errc::conflict when its last entry is
// another node's than `me` (then the runs are that node's).
result<std::uint64_t> gate_end(run_log& log, const std::string& subject, const std::string& me);

class log_writer {
public:
  // `subject_of(run)`: the run's subject in the log.
  // `purge_every`: a gate's older admissions are purged once per so many admissions on it.
  log_writer(ownership& owner, std::function<std::string(const std::string&)> subject_of, int purge_every = 64)
    : owner_(owner), subject_of_(std::move(subject_of)), purge_every_(purge_every) {}

  // What replicate() started: runs refused before anything of theirs was sent (not to be
  // written anywhere), and what waits for the others' confirmations (per run: what failed).
  using failures = std::map<std::string, error>;
  struct started {
    failures refused;
    std::function<failures()> wait;
  };
  // Sends the batch, one entry per run. A confirmation that does not come (a timeout) leaves the
  // write unknown: errc::unknown (the entry is sent again before the run's next write). A refused
  // one (errc::conflict) means another node has the run now. A write confirmed while the lease
  // was not certain does not count (errc::unknown too: the taker may or may not have read it).
  // `gate`: which of the domain's admission gates admits the batch's new runs (the lane's).
  started replicate(run_log& log, const std::vector<store::run_transition>& batch, int gate = 0);

  // Appends `whole` (a run's final record with its whole history) after the run's last entry as
  // this node wrote it: its sequence (errc::conflict when another wrote since).
  result<std::uint64_t> append_after_last(run_log& log, const std::string& run, const store::run_transition& whole);
  // Confirms the run's entry sent without waiting (sent again if need be).
  result<void> settle(const std::string& run);
  // The run's log ends at `seq` (a new run: 0, admitted before its first entry; or a run this
  // node fenced, taking it over).
  void known(const std::string& run, std::uint64_t seq);
  // Where the run's log ends is no longer known here (refused, or the run left).
  void forget(const std::string& run);
  // Forgets the run's position unless an entry of it is being confirmed.
  void forget_if_settled(const std::string& run);

private:
  struct unconfirmed {
    run_log* log = nullptr;
    std::uint64_t ticket = 0;  // 0: send again
    log_entry entry;
  };
  std::optional<std::uint64_t> position(const std::string& run);
  // A write of `run` the log refused (its subject moved on). Another node's fence there means
  // the run is lost to it (errc::conflict). Without one, while this node certainly holds the
  // run's lease, nobody else wrote it: the log lost or moved what this node wrote (nats-server 2.9
  // can lose a write it confirmed when a stream's leader is paused), and the entry goes again
  // after whatever the log holds now. Any other error: the log could not be read or written.
  result<std::uint64_t> write_again_after_refusal(run_log& log, const std::string& run, log_entry e);

  // Admits `runs` (new, of one domain) on the gate `subject`, where its last entry is. Refused
  // there behind another node's fence: errc::conflict (the domain is that node's now).
  result<void> admit(run_log& log, const std::string& subject, const std::vector<std::string>& runs);
  struct gate {
    std::mutex admitting;                  // one admission at a time per gate
    std::optional<std::uint64_t> last;     // sequence of its last entry, when known
    int since_purge = 0;                   // admissions since its older entries were purged
  };
  gate& gate_of(const std::string& subject);

  ownership& owner_;
  std::function<std::string(const std::string&)> subject_of_;
  int purge_every_;
  std::mutex mutex_;
  std::unordered_map<std::string, std::unique_ptr<gate>> gates_;  // gate subject -> its state
  std::set<std::string> unadmitted_;  // new runs whose admission is not in the log yet
  // Admitted runs whose first entry is not confirmed: run -> (gate subject, the admission's
  // sequence). A gate's entries before the oldest of these may be purged.
  std::unordered_map<std::string, std::pair<std::string, std::uint64_t>> awaiting_first_;
  std::unordered_map<std::string, std::uint64_t> positions_;      // run -> sequence of its last entry
  std::unordered_map<std::string, unconfirmed> unconfirmed_;      // entries sent without waiting
  // A run being settled by one thread: another that needs its position waits for it (else it
  // could ask the log before the unconfirmed entry is stored, and write from a stale position).
  std::set<std::string> settling_;
  std::condition_variable settled_;
  // Runs whose write the log refused: another node wrote after this one (a takeover's fence).
  // Never written again from here (asking the log where such a run ends now would write after
  // the fence), whatever the clock says; until this node fences it itself (known()).
  std::set<std::string> lost_;
  void lost(const std::string& run);
};

} // namespace keel::replication
