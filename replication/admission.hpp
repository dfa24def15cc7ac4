// A new run is admitted in the run log before its first entry is written: an entry on one of its
// domain's gates (`<log_prefix>.<domain>._admit-<gate>`, appended where the gate's last entry is)
// naming the runs. A node that takes the domain over fences every gate before it fences the runs,
// then fences each run a gate admitted, written or not (at sequence 0 when not). So a node that
// lost the domain, even one whose clock says its lease still holds, can neither admit a run nor
// write the first entry of one it admitted: the log refuses both (docs/ARCHITECTURE.md).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace keel::replication {

// How many gates a domain has: the lanes of a node share them (lane % gates), so that new runs
// of different lanes do not wait for each other's admission.
constexpr int admission_gates = 8;

// The gate subject for `gate`, from the subject of any run of the domain.
std::string gate_subject(std::string_view run_subject, int gate);
// Every gate of the domain whose runs' subjects start with `domain_prefix` ("<log_prefix>.<domain>").
std::vector<std::string> gate_subjects(const std::string& domain_prefix);
// Whether the last token of a subject under a domain names a gate, not a run (run ids never
// start with '_').
bool is_gate_token(std::string_view token);

std::string encode_admission(const std::string& by, const std::vector<std::string>& runs);
struct admission {
  std::string by;
  std::vector<std::string> runs;
};
// An admission read back; nullopt for anything else (a fence, a malformed entry): never an
// exception.
std::optional<admission> decode_admission(const std::string& data);

} // namespace keel::replication
