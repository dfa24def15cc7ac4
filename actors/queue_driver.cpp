#include "actors/queue_driver.hpp"

#include "runtime/wire.hpp"

#include <algorithm>
#include <set>

namespace keel::actors {

using wire::value;

namespace {

constexpr std::int64_t look_soon_ms = 500;
constexpr std::int64_t look_later_ms = 5000;
constexpr int write_tries = 4;
// A record stays well within a NATS message (1 MB by default): runs past this wait outside the line.
constexpr std::size_t record_bytes_max = 512 << 10;

value entry_value(const queue_entry& e) {
  value v{{"r", e.run}, {"t", e.since_ms}};
  if (!e.key.empty()) v["k"] = e.key;
  if (e.admitted_ms) v["a"] = e.admitted_ms;
  return v;
}

result<std::vector<queue_entry>> entries_of(const value& v, const char* field) {
  std::vector<queue_entry> out;
  if (!v.contains(field)) return out;
  const auto& list = v[field];
  if (!list.is_array()) return make_error(errc::invalid_argument, std::string("queue record: ") + field + " is not a list");
  for (const auto& item : list) {
    if (!item.is_object() || !item.contains("r") || !item["r"].is_string())
      return make_error(errc::invalid_argument, std::string("queue record: an entry of ") + field + " has no run");
    queue_entry e;
    e.run = item["r"].get<std::string>();
    e.key = item.contains("k") && item["k"].is_string() ? item["k"].get<std::string>() : std::string();
    e.since_ms = item.contains("t") && item["t"].is_number_integer() ? item["t"].get<std::int64_t>() : 0;
    e.admitted_ms = item.contains("a") && item["a"].is_number_integer() ? item["a"].get<std::int64_t>() : 0;
    out.push_back(std::move(e));
  }
  return out;
}

// The entry of `run` in the record (running or waiting), if any.
queue_entry* find(queue_record& r, const std::string& run, bool* running = nullptr) {
  for (auto& e : r.running)
    if (e.run == run) {
      if (running) *running = true;
      return &e;
    }
  for (auto& e : r.waiting)
    if (e.run == run) {
      if (running) *running = false;
      return &e;
    }
  return nullptr;
}

// Removes the entries of `run` that got in line at or before `since_ms`.
bool remove(queue_record& r, const std::string& run, std::int64_t since_ms) {
  auto gone = [&](const queue_entry& e) { return e.run == run && e.since_ms <= since_ms; };
  auto before = r.running.size() + r.waiting.size();
  std::erase_if(r.running, gone);
  std::erase_if(r.waiting, gone);
  return r.running.size() + r.waiting.size() != before;
}

} // namespace

std::string encode(const queue_record& r) {
  value running = value::array();
  for (const auto& e : r.running) running.push_back(entry_value(e));
  value waiting = value::array();
  for (const auto& e : r.waiting) waiting.push_back(entry_value(e));
  return wire::pack(value{{"running", running}, {"waiting", waiting}, {"admitted", r.admitted}});
}

result<queue_record> decode_queue_record(const std::string& bytes) {
  auto v = wire::unpack(bytes);
  if (!v) return v.error();
  if (!v->is_object()) return make_error(errc::invalid_argument, "queue record: not a map");
  queue_record r;
  auto running = entries_of(*v, "running");
  if (!running) return running.error();
  auto waiting = entries_of(*v, "waiting");
  if (!waiting) return waiting.error();
  r.running = std::move(*running);
  r.waiting = std::move(*waiting);
  r.admitted = v->contains("admitted") && (*v)["admitted"].is_number_integer() ? (*v)["admitted"].get<std::int64_t>() : 0;
  return r;
}

std::vector<std::string> admit(queue_record& record, const config::queue_config& limits, std::int64_t now_ms) {
  std::vector<std::string> admitted;
  std::map<std::string, std::int64_t> by_key;
  for (const auto& e : record.running)
    if (!e.key.empty()) by_key[e.key] += 1;
  for (auto it = record.waiting.begin();
       it != record.waiting.end() && static_cast<std::int64_t>(record.running.size()) < limits.concurrency;) {
    if (limits.key_concurrency > 0 && !it->key.empty() && by_key[it->key] >= limits.key_concurrency) {
      ++it;  // its key is full: the runs behind it may go
      continue;
    }
    if (!it->key.empty()) by_key[it->key] += 1;
    queue_entry e = std::move(*it);
    e.admitted_ms = now_ms;
    admitted.push_back(e.run);
    record.running.push_back(std::move(e));
    record.admitted += 1;
    it = record.waiting.erase(it);
  }
  return admitted;
}

queue_driver::queue_driver(config::queue_config limits, queue_io io) : limits_(std::move(limits)), io_(std::move(io)) {}

void queue_driver::enter(const std::string& run, const std::string& key, std::int64_t since_ms) {
  releasing_.erase(run);
  auto& e = entering_[run];
  if (e.since_ms > since_ms) return;  // a later place asked already
  e = queue_entry{run, key, since_ms, 0};
}

void queue_driver::release(const std::string& run, std::int64_t since_ms) {
  if (auto it = entering_.find(run); it != entering_.end() && it->second.since_ms <= since_ms) entering_.erase(it);
  if (auto it = mine_.find(run); it != mine_.end() && it->second <= since_ms) mine_.erase(it);
  auto& r = releasing_[run];
  r = std::max(r, since_ms);
}

std::size_t queue_driver::outside() const { return entering_.size(); }

std::int64_t queue_driver::step(bool reconcile) {
  const auto& name = limits_.name;
  wrote_ = false;
  for (int attempt = 0; attempt < write_tries; ++attempt) {
    auto now = io_.now();
    auto got = io_.read(name);
    if (!got) {
      problem_ = "cannot read the queue's record: " + got.error().message;
      return now + look_soon_ms * 2;
    }
    queue_record record = *got ? (*got)->first : queue_record{};
    bool changed = false;
    auto entering = entering_;
    auto mine = mine_;
    std::vector<std::pair<std::string, std::int64_t>> start;  // run, the place admitted
    std::set<std::string> released;
    for (const auto& [run, since] : releasing_) {
      changed = remove(record, run, since) || changed;
      released.insert(run);
    }
    if (reconcile) {
      std::vector<std::pair<std::string, std::int64_t>> stale;
      auto look = [&](const queue_entry& e, bool running) {
        auto l = io_.look_up(e.run);
        if (!l) return;  // another node's run
        const bool same_place = l->place && l->place->since_ms == e.since_ms;
        if (store::is_terminal(l->status) || !l->readable || (l->place && l->place->since_ms > e.since_ms)) {
          // Ended (its release was lost), or in line again since: this entry is over.
          if (!l->place || l->place->since_ms >= e.since_ms || !l->readable) stale.emplace_back(e.run, e.since_ms);
          return;
        }
        if (l->status != store::run_status::queued || !same_place) return;
        if (running) start.emplace_back(e.run, e.since_ms);
        else mine[e.run] = e.since_ms;
      };
      for (const auto& e : record.running) look(e, true);
      for (const auto& e : record.waiting) look(e, false);
      for (const auto& [run, since] : stale) changed = remove(record, run, since) || changed;
    }
    // Runs asking for a place, in the order they got in line (a run retried keeps its id, not its place).
    std::vector<queue_entry> asking;
    for (const auto& [run, want] : entering) asking.push_back(want);
    std::sort(asking.begin(), asking.end(), [](const queue_entry& a, const queue_entry& b) { return a.since_ms < b.since_ms; });
    // The record's size, near enough (each entry's fields and their names), without packing it.
    auto entry_bytes = [](const queue_entry& e) { return std::size_t{48} + e.run.size() + e.key.size(); };
    std::size_t record_bytes = 64;
    if (!asking.empty()) {
      for (const auto& e : record.running) record_bytes += entry_bytes(e);
      for (const auto& e : record.waiting) record_bytes += entry_bytes(e);
    }
    for (const auto& want : asking) {
      bool running = false;
      if (auto* e = find(record, want.run, &running); e && e->since_ms < want.since_ms) {
        remove(record, want.run, e->since_ms);  // an earlier place of the same run: over
        changed = true;
      }
      if (auto* e = find(record, want.run, &running)) {
        if (running) start.emplace_back(want.run, e->since_ms);
        else mine[want.run] = e->since_ms;
        entering.erase(want.run);
        continue;
      }
      // The line is full (or its record as large as a message may safely be): it gets in when
      // there is room, in its order.
      const std::size_t bytes = entry_bytes(want);
      if (static_cast<std::int64_t>(record.waiting.size()) >= limits_.waiting_max || record_bytes + bytes > record_bytes_max) break;
      record_bytes += bytes;
      record.waiting.push_back(want);
      mine[want.run] = want.since_ms;
      changed = true;
      entering.erase(want.run);
    }
    if (!admit(record, limits_, now).empty()) changed = true;
    if (changed) {
      auto written = *got ? io_.update(name, record, (*got)->second) : io_.create(name, record);
      if (!written) {
        if (written.error().code == errc::conflict) continue;  // another wrote first: read again
        problem_ = "cannot write the queue's record: " + written.error().message;
        return now + look_soon_ms;
      }
      wrote_ = true;
    }
    // Written (or nothing to write): what was asked is in the record now.
    for (const auto& run : released) releasing_.erase(run);
    entering_ = std::move(entering);
    mine_ = std::move(mine);
    shown_ = record;
    problem_ = entering_.empty() ? std::string()
                                 : std::to_string(entering_.size()) + " runs wait to get in line (the line holds " +
                                     std::to_string(limits_.waiting_max) + ")";
    for (const auto& e : record.running)
      if (auto it = mine_.find(e.run); it != mine_.end() && it->second == e.since_ms) {
        start.emplace_back(e.run, e.since_ms);
        mine_.erase(it);
      }
    // Runs of this node told to start: each checks that it still waits in that place (a repeat
    // changes nothing).
    std::sort(start.begin(), start.end());
    start.erase(std::unique(start.begin(), start.end()), start.end());
    for (const auto& [run, since] : start) io_.start(run, since);
    return now + (mine_.empty() && entering_.empty() && releasing_.empty() ? look_later_ms : look_soon_ms);
  }
  problem_ = "the queue's record kept changing under this node; it tries again";
  return io_.now() + look_soon_ms / 5;
}

} // namespace keel::actors
