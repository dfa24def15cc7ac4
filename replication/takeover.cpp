#include "replication/takeover.hpp"
#include "replication/admission.hpp"
#include "runtime/backoff.hpp"
#include "replication/replication_log.hpp"

#include "runtime/log.hpp"
#include "runtime/wire.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>
#include <set>

namespace keel::replication {

std::string encode_fence(const std::string& node, std::uint64_t epoch) {
  return wire::pack(wire::value{{"transitions", wire::value::array()}, {"takeover", wire::value{{"by", node}, {"epoch", epoch}}}});
}

std::optional<fence> decode_fence(const std::string& data) {
  auto v = wire::unpack(data);
  if (!v || !v->is_object() || !v->contains("takeover")) return std::nullopt;
  const auto& by = (*v)["takeover"];
  if (!by.is_object() || !by.contains("by") || !by["by"].is_string() || !by.contains("epoch") ||
      !by["epoch"].is_number_unsigned())
    return std::nullopt;
  return fence{by["by"].get<std::string>(), by["epoch"].get<std::uint64_t>()};
}

takeover_outcome take_over(takeover_context& c, const std::string& domain, std::uint64_t epoch) {
  takeover_outcome out;
  auto& leases = *c.owner.leases();
  const auto& me = c.owner.node_id();
  auto prefix = c.log_prefix + "." + domain;
  std::map<std::string, std::uint64_t> last;  // run -> sequence of its last entry applied
  std::map<std::string, std::uint64_t> gates;  // admission gate -> sequence of its last entry read
  std::set<std::string> admitted;              // runs a gate admitted (written or not)
  std::string superseded;  // a later takeover's fence was found: by whom
  // A fence of the same epoch by another node: two claims of one revision both taken (nats-server
  // 2.9 can confirm two concurrent writes expecting the same revision of a replicated key). The
  // bucket's value decides: the node it names goes on, the other gives up.
  std::string tied;
  // A fence, read in a run or a gate. One of a later claim than this one means the runs are
  // another's now: fencing after it would refuse the new owner's writes. One that cannot be read
  // is skipped (as an unreadable write is).
  auto note_fence = [&](const std::string& where, const std::string& data) {
    auto f = decode_fence(data);
    if (!f) {
      ++out.unreadable;
      logger()->error("{}: a takeover's fence in the log could not be read; skipped", where);
      return;
    }
    if (f->epoch > epoch) superseded = f->by + " (epoch " + std::to_string(f->epoch) + ")";
    else if (f->epoch == epoch && f->by != me) tied = f->by;
  };
  auto apply = [&](const std::string& subject, std::uint64_t seq, std::string data) {
    auto run = subject.substr(subject.rfind('.') + 1);
    if (is_gate_token(run)) {
      if (auto it = gates.find(subject); it != gates.end() && it->second >= seq) return;
      gates[subject] = seq;
      if (auto a = decode_admission(data)) admitted.insert(a->runs.begin(), a->runs.end());
      else note_fence(subject, data);
      return;
    }
    if (auto it = last.find(run); it != last.end() && it->second >= seq) return;
    last[run] = seq;
    ++out.entries;
    auto transitions = store::decode_transitions(data);
    if (!transitions) {
      ++out.unreadable;
      logger()->error("run {}: a logged write could not be read ({}); skipped", run, transitions.error().message);
      return;
    }
    for (const auto& t : *transitions)
      for (const auto& r : t.received) out.max_received_order = std::max(out.max_received_order, r.order);
    if (transitions->empty()) {
      note_fence("run " + run, data);
      return;
    }
    if (auto w = c.store.apply(*transitions); !w)
      logger()->error("run {}: a logged write could not be stored: {}", run, w.error().message);
  };
  auto still_ours = [&] { return superseded.empty() && leases.holds(domain) && !leases.stopping(); };
  auto give_up_if_superseded = [&] {
    if (superseded.empty() && !tied.empty()) {
      // Decided only by a value read: a read that fails leaves the tie for the next look (given
      // up on both sides, the domain would be nobody's).
      auto current = c.bucket.get_entry(domain);
      if (current) {
        auto lease = *current ? lease_keeper::decode((*current)->value)
                              : result<std::pair<std::string, std::uint64_t>>(make_error(errc::not_found, "no value"));
        if (!lease || lease->first != me || lease->second != epoch)
          superseded = tied + " (epoch " + std::to_string(epoch) + ", the lease names " +
                       (lease ? lease->first : std::string("no one readable")) + ")";
        tied.clear();
      }
    }
    if (superseded.empty()) return false;
    logger()->warn("taking over {}: a later takeover by {} fenced its runs: they are not this node's", domain, superseded);
    out.why_not = "a later takeover by " + superseded;
    return true;
  };
  backoff pause{250, 5000};
  const std::atomic<bool> never{false};
  auto wait_a_little = [&] {
    for (auto until = c.env.now_ms() + pause.next_ms(); c.env.now_ms() < until && still_ours();) c.env.sleep_ms(50, never);
  };
  for (int tries = 0;; ++tries) {
    auto r = c.log.read(prefix + ".>", apply);
    if (give_up_if_superseded()) return out;
    if (r) break;
    if (tries < 5 || tries % 20 == 0) logger()->warn("taking over {}: reading its runs: {}", domain, r.error().message);
    if (!still_ours()) {
      out.why_not = "the lease went, or the node stops";
      return out;
    }
    wait_a_little();
  }
  auto marker = encode_fence(me, epoch);
  // The gates first: once each is fenced, no new run of the domain can be admitted by anyone
  // else, and every run admitted before is known (a gate's fence lands only after the last entry
  // read there). Then each admitted run is fenced too, written or not.
  pause.reset();
  std::set<std::string> gates_fenced;
  // Every gate, and any other the log holds (of a build with more gates).
  auto every_gate = gate_subjects(prefix);
  for (const auto& [g, seq] : gates)
    if (std::find(every_gate.begin(), every_gate.end(), g) == every_gate.end()) every_gate.push_back(g);
  for (int round = 0; gates_fenced.size() < every_gate.size(); ++round) {
    if (round > 0) {
      if (!still_ours()) {
        out.why_not = "the lease went, or the node stops";
        return out;
      }
      wait_a_little();
    }
    std::vector<log_entry> fences;
    std::vector<std::string> subjects;
    for (const auto& g : every_gate)
      if (!gates_fenced.count(g)) {
        fences.push_back({g, marker, static_cast<std::int64_t>(gates.count(g) ? gates[g] : 0), me});
        subjects.push_back(g);
      }
    auto appended = c.log.append(fences);
    bool admitted_meanwhile = false;
    for (std::size_t i = 0; i < subjects.size(); ++i) {
      if (appended[i]) {
        gates_fenced.insert(subjects[i]);
        gates[subjects[i]] = *appended[i];
      } else if (appended[i].error().code == errc::conflict) {
        admitted_meanwhile = true;
      }
    }
    // Admitted meanwhile: the domain is read again, once, not only the gates (the admission of a
    // run written since may be purged from its gate already; the run's entries are not).
    if (admitted_meanwhile) (void)c.log.read(prefix + ".>", apply);
    if (give_up_if_superseded()) return out;
  }
  for (const auto& run : admitted)
    if (!last.count(run)) last[run] = 0;  // admitted, not written (yet): fenced at its start
  // Runs that ended (completed or cancelled) never change again: taken as they are, unfenced.
  std::set<std::string> fenced;
  for (const auto& [run, seq] : last) {
    auto record = c.store.get(run, false);
    if (record && *record && ((*record)->status == store::run_status::completed ||
                              (*record)->status == store::run_status::cancelled)) {
      fenced.insert(run);
      out.ended.emplace_back(run, seq);
    }
  }
  pause.reset();
  for (int round = 0; fenced.size() < last.size(); ++round) {
    if (round > 0) {
      if (!still_ours()) break;
      wait_a_little();
    }
    std::vector<log_entry> fences;
    std::vector<std::string> runs;
    for (const auto& [run, seq] : last)
      if (!fenced.count(run)) {
        fences.push_back({prefix + "." + run, marker, static_cast<std::int64_t>(seq), me});
        runs.push_back(run);
      }
    auto appended = c.log.append(fences);
    for (std::size_t i = 0; i < runs.size(); ++i) {
      if (appended[i]) {
        fenced.insert(runs[i]);
        last[runs[i]] = *appended[i];
        c.writer.known(runs[i], *appended[i]);
      } else if (appended[i].error().code == errc::conflict) {
        (void)c.log.read(prefix + "." + runs[i], apply);  // it wrote meanwhile: read that too
      }
    }
    if (give_up_if_superseded()) return out;
  }
  if (fenced.size() < last.size()) {
    logger()->warn("taking over {}: stopped before {} runs were fenced (the lease went, or the node stops)", domain,
                   last.size() - fenced.size());
    out.why_not = "the lease went, or the node stops";
    return out;
  }
  // A tie not decided yet (the bucket could not be read): not served before it is.
  pause.reset();
  while (!tied.empty()) {
    if (give_up_if_superseded()) return out;
    if (tied.empty()) break;
    if (!still_ours()) {
      out.why_not = "the lease went, or the node stops";
      return out;
    }
    wait_a_little();
  }
  for (const auto& run : fenced) {
    auto record = c.store.get(run, false);
    if (!record || !*record) {
      c.writer.forget(run);  // admitted, never written: nothing to serve
      continue;
    }
    out.runs.push_back(run);
    if (store::is_active((*record)->status)) out.active.push_back(run);
    if ((*record)->status == store::run_status::suspended) ++out.suspended;
  }
  out.done = true;
  return out;
}

} // namespace keel::replication
