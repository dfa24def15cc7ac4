#include "runtime/run_store.hpp"
#include "runtime/run_store_keys.hpp"
#include "runtime/step_trace.hpp"

#include <rocksdb/cache.h>
#include <rocksdb/db.h>
#include <rocksdb/table.h>
#include <rocksdb/options.h>
#include <rocksdb/sst_file_manager.h>
#include <rocksdb/write_batch.h>

#include <sys/statvfs.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <map>
#include <set>

namespace keel::store {

using namespace keys;

// How far below a journal cut its deletion looks (see apply()).
constexpr std::uint64_t journal_cut_window = 64;

namespace {

constexpr std::array<std::string_view, 8> status_names = {
  "pending", "running", "suspended", "completed", "failed", "cancelled", "waiting", "queued"};

error io_error(const rocksdb::Status& s, const char* what) {
  // A full disk passes once space is freed: whoever was refused may try again.
  if (s.IsNoSpace() || s.subcode() == rocksdb::Status::kSpaceLimit)
    return make_error(errc::unavailable, std::string("disk full: ") + what + ": " + s.ToString());
  return make_error(errc::io, std::string(what) + ": " + s.ToString());
}

std::string mib(std::uint64_t bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return text;
}


result<run_record> record_from_value(const wire::value& v) {
  try {
    run_record r;
    r.run_id = v.at("run_id").get<std::string>();
    r.agent = v.at("agent").get<std::string>();
    r.session_id = v.at("session_id").get<std::string>();
    r.idempotency_key = v.at("idempotency_key").get<std::string>();
    if (!from_string(v.at("status").get<std::string>(), r.status))
      return make_error(errc::malformed, "stored run has an unknown status");
    r.created_ms = v.at("created_ms").get<std::int64_t>();
    r.updated_ms = v.at("updated_ms").get<std::int64_t>();
    r.last_event_seq = v.at("last_event_seq").get<std::uint64_t>();
    r.last_journal_seq = v.at("last_journal_seq").get<std::uint64_t>();
    r.state = v.at("state");
    return r;
  } catch (const std::exception& e) {
    return make_error(errc::malformed, std::string("stored run record is damaged: ") + e.what());
  }
}


struct header {
  run_status status;
  std::string agent;
  std::int64_t created_ms;
};

result<header> header_from(std::string_view bytes, const std::string& run_id) {
  auto v = wire::unpack(bytes, disk_limits());
  auto damaged = make_error(errc::malformed, "run " + run_id + ": its stored header is damaged");
  if (!v || !v->is_object()) return damaged;
  const auto& m = *v;
  header h;
  if (!m.contains("status") || !m["status"].is_string() || !from_string(m["status"].get<std::string>(), h.status) ||
      !m.contains("agent") || !m["agent"].is_string() || !m.contains("created_ms") || !m["created_ms"].is_number_integer())
    return damaged;
  h.agent = m["agent"].get<std::string>();
  h.created_ms = m["created_ms"].get<std::int64_t>();
  return h;
}

} // namespace

wire::limits disk_limits() {
  wire::limits l;
  l.message_bytes_max = std::size_t{1} << 31;
  l.container_elements_max = std::size_t{1} << 24;
  return l;
}

std::string encode_transitions(const std::vector<const run_transition*>& transitions) {
  using wire::value;
  auto bin = [](const std::string& bytes) { return value::binary(std::vector<std::uint8_t>(bytes.begin(), bytes.end())); };
  value list = value::array();
  for (const auto* t : transitions) {
    value v{{"run", t->record.run_id}, {"eo", t->entries_only}, {"sy", t->sync}, {"jt", t->journal_truncate_through},
            {"mf", t->messages_from}};
    if (!t->entries_only) {
      v["snap"] = bin(t->snapshot.empty() ? pack_record(t->record) : t->snapshot);
      // Messages the store would take from the record's state: carried as they would be written.
      value messages = value::array();
      if (!t->messages.empty()) {
        for (const auto& m : t->messages) messages.push_back(bin(m));
      } else if (t->snapshot.empty() && t->record.state.is_object() && t->record.state.contains("messages") &&
                 t->record.state["messages"].is_array()) {
        const auto& all = t->record.state["messages"];
        for (std::size_t i = t->messages_from; i < all.size(); ++i) messages.push_back(bin(wire::pack(all[i])));
      }
      v["m"] = std::move(messages);
    }
    value journal = value::array();
    for (const auto& e : t->journal) journal.push_back(value{{"seq", e.seq}, {"kind", e.kind}, {"time_ms", e.time_ms}, {"data", e.data}});
    v["j"] = std::move(journal);
    value events = value::array();
    for (const auto& e : t->events) events.push_back(wire::to_value(e));
    v["e"] = std::move(events);
    value received = value::array();
    for (const auto& r : t->received) received.push_back(value::array({r.order, bin(r.message)}));
    v["rc"] = std::move(received);
    v["rd"] = t->received_done;
    if (t->stored_status) v["ss"] = std::string(to_string(*t->stored_status));
    value lists = value::array();
    for (const auto& [key, item] : t->list_appends) lists.push_back(value::array({key, bin(item)}));
    v["la"] = std::move(lists);
    list.push_back(std::move(v));
  }
  return wire::pack(value{{"transitions", std::move(list)}});
}

result<std::vector<run_transition>> decode_transitions(std::string_view bytes) {
  auto v = wire::unpack(bytes, disk_limits());
  auto damaged = [](const std::string& what) { return make_error(errc::malformed, "a logged transition is damaged: " + what); };
  if (!v || !v->is_object() || !v->contains("transitions") || !(*v)["transitions"].is_array()) return damaged("no transitions");
  auto text = [](const wire::value& b) { const auto& x = b.get_binary(); return std::string(x.begin(), x.end()); };
  std::vector<run_transition> out;
  try {
    for (const auto& t : (*v)["transitions"]) {
      run_transition r;
      r.record.run_id = t.at("run").get<std::string>();
      r.entries_only = t.at("eo").get<bool>();
      r.sync = t.at("sy").get<bool>();
      r.journal_truncate_through = t.at("jt").get<std::uint64_t>();
      r.messages_from = t.at("mf").get<std::uint64_t>();
      if (!r.entries_only) {
        r.snapshot = text(t.at("snap"));
        auto record = wire::unpack(r.snapshot, disk_limits());
        if (!record) return damaged("its snapshot does not decode");
        auto decoded = record_from_value(*record);
        if (!decoded) return decoded.error();
        if (decoded->run_id != r.record.run_id) return damaged("its snapshot names another run");
        r.record = std::move(*decoded);
        r.record.state = wire::value();  // the snapshot is written as it is
        for (const auto& m : t.at("m")) r.messages.push_back(text(m));
      }
      for (const auto& e : t.at("j"))
        r.journal.push_back({e.at("seq").get<std::uint64_t>(), e.at("kind").get<std::string>(),
                             e.at("time_ms").get<std::int64_t>(), e.at("data")});
      for (const auto& e : t.at("e")) {
        auto event = wire::event_from_value(e);
        if (!event) return event.error();
        r.events.push_back(std::move(*event));
      }
      for (const auto& x : t.at("rc")) r.received.push_back({x.at(0).get<std::uint64_t>(), text(x.at(1))});
      for (const auto& x : t.at("rd")) r.received_done.push_back(x.get<std::uint64_t>());
      if (t.contains("ss")) {
        run_status status;
        if (!from_string(t.at("ss").get<std::string>(), status)) return damaged("an unknown status");
        r.stored_status = status;
      }
      for (const auto& x : t.at("la")) r.list_appends.push_back({x.at(0).get<std::string>(), text(x.at(1))});
      out.push_back(std::move(r));
    }
  } catch (const std::exception& e) {
    return damaged(e.what());
  }
  return out;
}

std::string pack_record(const run_record& r) {
  // The state without its conversation: a shallow map of the other fields, by reference.
  std::vector<std::pair<std::string_view, const wire::value*>> state_fields;
  wire::value messages_count = std::size_t{0};
  if (r.state.is_object()) {
    // The count from the conversation when the state holds it, or as the state gives it.
    for (auto it = r.state.begin(); it != r.state.end(); ++it) {
      if (it.key() == "messages") messages_count = it.value().is_array() ? it.value().size() : 0;
      else if (it.key() == "messages_count") {
        if (!r.state.contains("messages")) messages_count = it.value();
      } else {
        state_fields.emplace_back(it.key(), &it.value());
      }
    }
  }
  state_fields.emplace_back("messages_count", &messages_count);
  wire::value fields[] = {r.run_id,     r.agent,      r.session_id,     r.idempotency_key,
                          to_string(r.status), r.created_ms, r.updated_ms, r.last_event_seq,
                          r.last_journal_seq};
  return wire::pack_fields({{"run_id", &fields[0]}, {"agent", &fields[1]},
                            {"session_id", &fields[2]}, {"idempotency_key", &fields[3]},
                            {"status", &fields[4]}, {"created_ms", &fields[5]},
                            {"updated_ms", &fields[6]}, {"last_event_seq", &fields[7]},
                            {"last_journal_seq", &fields[8]}},
                           {{"state", wire::pack_fields(state_fields)}});
}

std::string_view to_string(run_status s) { return status_names[static_cast<std::size_t>(s)]; }

bool from_string(std::string_view name, run_status& s) {
  for (std::size_t i = 0; i < status_names.size(); ++i) {
    if (status_names[i] == name) {
      s = static_cast<run_status>(i);
      return true;
    }
  }
  return false;
}

bool is_terminal(run_status s) {
  return s == run_status::completed || s == run_status::failed || s == run_status::cancelled;
}

bool is_active(run_status s) { return s == run_status::pending || s == run_status::running; }

run_store::run_store(std::unique_ptr<rocksdb::DB> db, const store_options& options)
  : db_(std::move(db)), fsync_(options.fsync), path_(options.path), reserve_bytes_(options.reserve_bytes),
    keep_conversations_(options.keep_conversations) {}

run_store::~run_store() {
  if (db_) {
    db_->FlushWAL(true);
    db_->Close();
  }
}

result<std::unique_ptr<run_store>> run_store::open(const store_options& options) {
  rocksdb::Options db_options;
  db_options.create_if_missing = true;
  db_options.keep_log_file_num = 4;
  db_options.max_manifest_file_size = 64 << 20;
  // Writers that arrive together share one WAL write and one sync (RocksDB's write groups). Writes
  // come here one at a time (actors/store_writer), so the pipelined mode would only add a stage.
  db_options.enable_pipelined_write = false;
  // Memory is bounded: suspended runs are meant to cost disk, not resident memory.
  db_options.write_buffer_size = options.memtable_bytes;
  db_options.max_write_buffer_number = 2;
  rocksdb::BlockBasedTableOptions table_options;
  table_options.block_cache = rocksdb::NewLRUCache(options.block_cache_bytes);
  db_options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table_options));
  // A compaction writes its output before it deletes its inputs: on a disk near full it could
  // take the space keel keeps in reserve and fail mid-write. One that would leave less than half
  // the reserve free is put off until there is room (RocksDB tries it again later).
  if (options.reserve_bytes > 0) {
    std::shared_ptr<rocksdb::SstFileManager> files(rocksdb::NewSstFileManager(rocksdb::Env::Default()));
    files->SetCompactionBufferSize(options.reserve_bytes / 2);
    db_options.sst_file_manager = std::move(files);
  }
  rocksdb::DB* raw = nullptr;
  auto status = rocksdb::DB::Open(db_options, options.path, &raw);
  if (!status.ok()) {
    return make_error(errc::io, "cannot open the run store at " + options.path + ": " +
                                  status.ToString());
  }
  return std::unique_ptr<run_store>(
    new run_store(std::unique_ptr<rocksdb::DB>(raw), options));
}

result<void> run_store::apply(const run_transition& transition) {
  return apply(std::vector<run_transition>{transition});
}

result<void> run_store::apply(const std::vector<run_transition>& transitions) {
  step_trace::mark(step_trace::batch_building);
  std::unique_lock<std::mutex> lists_lock{lists_mutex_, std::defer_lock};
  if (std::any_of(transitions.begin(), transitions.end(), [](const run_transition& t) { return !t.list_appends.empty(); }))
    lists_lock.lock();
  rocksdb::WriteBatch batch;
  // Journal and conversation keys put by this batch: a deletion of a run's range deletes them
  // too. Ranges are deleted key by key, never with DeleteRange: range deletions pile up in the
  // memtable, and RocksDB 7.8 goes over all of them on every read until it is flushed.
  std::set<std::string> put_here;
  auto put = [&](std::string key, const rocksdb::Slice& value) {
    batch.Put(key, value);
    put_here.insert(std::move(key));
  };
  auto delete_range = [&](const std::string& from, const std::string& to) -> rocksdb::Status {
    rocksdb::Slice upper(to);
    rocksdb::ReadOptions options;
    options.iterate_upper_bound = &upper;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(options));
    for (it->Seek(from); it->Valid(); it->Next()) batch.Delete(it->key());
    for (auto k = put_here.lower_bound(from); k != put_here.end() && *k < to;) {
      batch.Delete(*k);
      k = put_here.erase(k);
    }
    return it->status();
  };
  auto put_journal = [&put](const run_transition& t) {
    for (const auto& entry : t.journal)
      put(journal_key(t.record.run_id, entry.seq),
          wire::pack(wire::value{{"seq", entry.seq}, {"kind", entry.kind}, {"time_ms", entry.time_ms}, {"data", entry.data}}));
  };
  // Within one batch, a later transition of the same run sees the header an earlier one wrote.
  std::map<std::string, header> pending_headers;
  for (const auto& t : transitions) {
    const run_record& r = t.record;
    assert(!r.run_id.empty());
    for (const auto& x : t.received) batch.Put(received_key(r.run_id, x.order), x.message);
    for (auto order : t.received_done) batch.Delete(received_key(r.run_id, order));
    if (t.entries_only) {
      put_journal(t);
      continue;
    }
    std::optional<header> previous;
    if (auto it = pending_headers.find(r.run_id); it != pending_headers.end()) {
      previous = it->second;
    } else if (t.stored_status) {
      previous = header{*t.stored_status, r.agent, r.created_ms};
    } else {
      std::string bytes;
      auto s = db_->Get(rocksdb::ReadOptions(), header_key(r.run_id), &bytes);
      if (s.ok()) {
        auto h = header_from(bytes, r.run_id);
        if (!h) return h.error();
        previous = *h;
      } else if (!s.IsNotFound()) {
        return io_error(s, "reading a run header");
      }
    }
    if (!previous) {
      batch.Put(agent_key(r.agent, r.created_ms, r.run_id), "");
      batch.Put(time_key(r.created_ms, r.run_id), "");
      if (!r.idempotency_key.empty())
        batch.Put(idempotency_key(r.agent, r.idempotency_key), r.run_id);
      batch.Put(status_key(r.status, r.run_id), "");
    } else if (previous->status != r.status) {
      batch.Delete(status_key(previous->status, r.run_id));
      batch.Put(status_key(r.status, r.run_id), "");
    }
    header now{r.status, r.agent, r.created_ms};
    pending_headers[r.run_id] = now;
    if (!previous || previous->status != r.status)  // agent and creation time never change
      batch.Put(header_key(r.run_id),
                wire::pack(wire::value{{"status", to_string(r.status)},
                                       {"agent", r.agent},
                                       {"created_ms", r.created_ms}}));
    batch.Put(snapshot_key(r.run_id), t.snapshot.empty() ? pack_record(r) : t.snapshot);
    if (!t.messages.empty()) {
      for (std::size_t i = 0; i < t.messages.size(); ++i)
        put(message_key(r.run_id, t.messages_from + i), t.messages[i]);
    } else if (t.snapshot.empty() && r.state.is_object() && r.state.contains("messages") &&
               r.state["messages"].is_array()) {
      const auto& messages = r.state["messages"];
      for (std::size_t i = t.messages_from; i < messages.size(); ++i)
        put(message_key(r.run_id, i), wire::pack(messages[i]));
    }
    // The snapshot written here holds what this transition's journal entries say: they are not
    // kept (the journal holds only what no snapshot reflects yet). Older entries go with it.
    // From a little before the cut only: what earlier cuts deleted is not walked again (a long run
    // would walk all of it at every step). Entries are read only past last_journal_seq, so one
    // left below the window (more than 64 since the last cut) is never read; the run's end
    // removes it with the rest.
    if (auto through = t.journal_truncate_through; through > 0)
      if (auto s = delete_range(journal_key(r.run_id, through > journal_cut_window ? through - journal_cut_window : 0),
                                journal_key(r.run_id, through + 1));
          !s.ok())
        return io_error(s, "reading a run's journal");
    // A run that completed or was cancelled keeps its header, snapshot, events (its history) and,
    // unless told otherwise, its conversation (forks and reruns read it); its journal, needed only
    // to go on, is dropped. A failed run keeps both for a retry.
    bool finished_now = (r.status == run_status::completed || r.status == run_status::cancelled) &&
                        (!previous || previous->status != r.status);
    if (finished_now) {
      if (auto s = delete_range(journal_key(r.run_id, 0), journal_key(r.run_id, UINT64_MAX)); !s.ok())
        return io_error(s, "reading a run's journal");
      if (!keep_conversations_)
        if (auto s = delete_range(message_key(r.run_id, 0), message_key(r.run_id, UINT64_MAX)); !s.ok())
          return io_error(s, "reading a run's conversation");
    }
    for (const auto& e : t.events) batch.Put(event_key(r.run_id, e.seq), wire::encode(e));
  }
  std::map<std::string, wire::value> lists;
  for (const auto& t : transitions)
    for (const auto& [key, item_bytes] : t.list_appends) {
      auto it = lists.find(key);
      if (it == lists.end()) {
        auto stored = get_list(key);
        if (!stored) return stored.error();
        it = lists.emplace(key, std::move(*stored)).first;
      }
      auto item = wire::unpack(item_bytes, disk_limits());
      if (!item) return item.error();
      if (std::find(it->second.begin(), it->second.end(), *item) == it->second.end()) it->second.push_back(*item);
      batch.Put("m/" + key, wire::pack(it->second));
    }
  if (auto room = room_for(batch.GetDataSize()); !room) return room.error();
  bytes_written_ += batch.GetDataSize();
  rocksdb::WriteOptions write_options;
  write_options.sync = fsync_ && std::any_of(transitions.begin(), transitions.end(),
                                             [](const run_transition& t) { return t.sync; });
  // A write of received results alone (the first of a step's two) is told apart in a trace.
  bool first = std::all_of(transitions.begin(), transitions.end(),
                           [](const run_transition& t) { return t.entries_only && !t.received.empty(); });
  step_trace::mark(first ? step_trace::received_write_started : step_trace::write_started);
  auto s = db_->Write(write_options, &batch);
  step_trace::mark(first ? step_trace::received_write_done : step_trace::write_done);
  if (!s.ok()) return io_error(s, "writing a run transition");
  if (write_options.sync) synced_writes_ += 1;
  return success();
}

result<std::optional<run_record>> run_store::get(const std::string& run_id, bool with_conversation) const {
  std::string bytes;
  auto s = db_->Get(rocksdb::ReadOptions(), snapshot_key(run_id), &bytes);
  if (s.IsNotFound()) return std::optional<run_record>{};
  if (!s.ok()) return io_error(s, "reading a run");
  auto v = wire::unpack(bytes, disk_limits());
  if (!v) return v.error();
  auto r = record_from_value(*v);
  if (!r) return r.error();
  wire::value& state = r->state;
  // A snapshot written before the conversation was stored apart holds it whole: then nothing
  // of it is on disk on its own, and the next transition writes it all.
  if (!state.is_object() || !state.contains("messages_count")) return std::optional<run_record>(std::move(*r));
  if (!state["messages_count"].is_number_unsigned())
    return make_error(errc::malformed, "run " + run_id + ": stored messages_count is not a count");
  auto count = state["messages_count"].get<std::uint64_t>();
  r->messages_on_disk = count;
  // Without the conversation, the state says how long it is (run_state reads messages_count). A
  // run that completed or was cancelled no longer has its conversation (its events are its history).
  bool compacted = r->status == run_status::completed || r->status == run_status::cancelled;
  if (!with_conversation || compacted) return std::optional<run_record>(std::move(*r));
  state.erase("messages_count");
  wire::value messages = wire::value::array();
  std::string prefix = "c/" + run_id + "/";
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek(message_key(run_id, 0)); it->Valid() && it->key().starts_with(prefix) && messages.size() < count;
       it->Next()) {
    auto m = wire::unpack(it->value().ToStringView(), disk_limits());
    if (!m) return make_error(m.error().code, "run " + run_id + ": a stored message is damaged: " + m.error().message);
    messages.push_back(std::move(*m));
  }
  if (!it->status().ok()) return io_error(it->status(), "reading a run's conversation");
  if (messages.size() != count)
    return make_error(errc::malformed, "run " + run_id + ": the conversation has " + std::to_string(messages.size()) +
                                         " of its " + std::to_string(count) + " messages on disk");
  state["messages"] = std::move(messages);
  r->messages_on_disk = count;
  return std::optional<run_record>(std::move(*r));
}

result<void> run_store::fail_unreadable(const std::string& run_id, const std::string& reason) {
  std::string bytes;
  auto s = db_->Get(rocksdb::ReadOptions(), header_key(run_id), &bytes);
  if (!s.ok()) return s.IsNotFound() ? make_error(errc::not_found, "no run " + run_id) : io_error(s, "reading a run header");
  auto h = header_from(bytes, run_id);
  if (!h) return h.error();
  // What was stored stays, apart, for a person to look at.
  std::string snapshot;
  if (db_->Get(rocksdb::ReadOptions(), snapshot_key(run_id), &snapshot).ok())
    if (auto put = db_->Put(rocksdb::WriteOptions(), "z/" + run_id, snapshot); !put.ok()) return io_error(put, "keeping a damaged run");
  run_transition t;
  t.record.run_id = run_id;
  t.record.agent = h->agent;
  t.record.created_ms = h->created_ms;
  t.record.updated_ms = h->created_ms;
  t.record.status = run_status::failed;
  t.record.state = wire::value{{"error", reason}, {"damaged_state", true}, {"messages_count", 0}};
  t.stored_status = h->status;
  return apply(t);
}

result<std::vector<std::string>> run_store::messages(const std::string& run_id, std::uint64_t from, std::uint64_t to,
                                                     std::size_t bytes_max) const {
  std::vector<std::string> out;
  std::size_t bytes = 0;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  auto expected = from;
  for (it->Seek(message_key(run_id, from)); it->Valid() && expected < to && (out.empty() || bytes < bytes_max); it->Next()) {
    if (it->key().ToStringView() != message_key(run_id, expected)) break;  // past the run, or a gap
    out.emplace_back(it->value().ToStringView());
    bytes += out.back().size();
    ++expected;
  }
  if (!it->status().ok()) return io_error(it->status(), "reading a run's conversation");
  return out;
}

result<std::vector<journal_entry>> run_store::journal(const std::string& run_id,
                                                      std::uint64_t from_seq) const {
  std::vector<journal_entry> out;
  std::string prefix = "j/" + run_id + "/";
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek(journal_key(run_id, from_seq)); it->Valid() && it->key().starts_with(prefix);
       it->Next()) {
    auto v = wire::unpack(it->value().ToStringView(), disk_limits());
    if (!v) return make_error(v.error().code, "run " + run_id + ": a journal entry is damaged: " + v.error().message);
    const auto& m = *v;
    if (!m.is_object() || !m.contains("seq") || !m["seq"].is_number_unsigned() || !m.contains("kind") ||
        !m["kind"].is_string() || !m.contains("time_ms") || !m["time_ms"].is_number_integer())
      return make_error(errc::malformed, "run " + run_id + ": a journal entry is damaged");
    journal_entry e;
    e.seq = m["seq"].get<std::uint64_t>();
    e.kind = m["kind"].get<std::string>();
    e.time_ms = m["time_ms"].get<std::int64_t>();
    e.data = m.contains("data") ? m["data"] : wire::value();
    out.push_back(std::move(e));
  }
  if (!it->status().ok()) return io_error(it->status(), "reading a journal");
  return out;
}

result<std::vector<received_result>> run_store::received(const std::string& run_id) const {
  std::vector<received_result> out;
  std::string prefix = "x/" + run_id + "/";
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
    auto key = it->key().ToStringView();
    if (key.size() != prefix.size() + 8)
      return make_error(errc::malformed, "run " + run_id + ": a received result has a damaged key");
    std::uint64_t order = 0;
    for (auto c : key.substr(prefix.size())) order = order << 8 | static_cast<unsigned char>(c);
    out.push_back({order, it->value().ToString()});
  }
  if (!it->status().ok()) return io_error(it->status(), "reading received results");
  return out;
}

result<std::vector<std::string>> run_store::runs_with_received() const {
  std::vector<std::string> out;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek("x/"); it->Valid() && it->key().starts_with("x/"); it->Next()) {
    auto key = it->key().ToStringView().substr(2);
    auto run = key.substr(0, key.find('/'));
    if (out.empty() || out.back() != run) out.emplace_back(run);
  }
  if (!it->status().ok()) return io_error(it->status(), "scanning received results");
  return out;
}

result<std::vector<wire::event>> run_store::events(const std::string& run_id,
                                                   std::uint64_t from_seq,
                                                   std::size_t limit) const {
  std::vector<wire::event> out;
  std::string prefix = "e/" + run_id + "/";
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek(event_key(run_id, from_seq));
       it->Valid() && it->key().starts_with(prefix) && out.size() < limit; it->Next()) {
    auto e = wire::decode<wire::event>(it->value().ToStringView(), disk_limits());
    if (!e) return e.error();
    out.push_back(std::move(*e));
  }
  if (!it->status().ok()) return io_error(it->status(), "reading events");
  return out;
}

result<std::vector<std::string>> run_store::scan_ids(const std::string& prefix,
                                                     std::size_t limit, bool reverse) const {
  std::vector<std::string> out;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  auto take = [&] {
    auto key = it->key().ToStringView();
    out.emplace_back(key.substr(key.rfind('/') + 1));
  };
  if (!reverse) {
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix) && out.size() < limit;
         it->Next())
      take();
  } else {
    std::string end = prefix;
    end.back() = static_cast<char>(end.back() + 1);  // prefixes end in '/', so this is '0'
    for (it->SeekForPrev(end); it->Valid() && out.size() < limit; it->Prev()) {
      if (!it->key().starts_with(prefix)) {
        if (it->key().compare(prefix) < 0) break;
        continue;
      }
      take();
    }
  }
  if (!it->status().ok()) return io_error(it->status(), "scanning an index");
  return out;
}

result<std::vector<std::string>> run_store::list_by_status(run_status s,
                                                           std::size_t limit) const {
  return scan_ids("s/" + std::string(to_string(s)) + "/", limit, false);
}

result<std::vector<std::string>> run_store::list_by_agent(const std::string& agent,
                                                          std::size_t limit) const {
  return scan_ids("a/" + agent + "/", limit, false);
}

result<std::vector<std::string>> run_store::list_recent(std::size_t limit) const {
  return scan_ids("t/", limit, true);
}

result<std::vector<run_store::time_entry>> run_store::list_by_time(std::int64_t before_ms,
                                                                  const std::string& before_run,
                                                                  std::size_t limit) const {
  std::vector<time_entry> out;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  // Keys sort as (created, run): start at the position and step back past it.
  std::string start = before_ms < 0 ? std::string("t0") : time_key(before_ms, before_run);
  it->SeekForPrev(start);
  if (it->Valid() && before_ms >= 0 && it->key().ToStringView() == start) it->Prev();
  for (; it->Valid() && out.size() < limit; it->Prev()) {
    auto key = it->key().ToStringView();
    if (!key.starts_with("t/")) break;
    if (auto entry = time_entry_of(key)) out.push_back(std::move(*entry));
  }
  if (!it->status().ok()) return io_error(it->status(), "scanning the time index");
  return out;
}

result<std::optional<std::string>> run_store::find_by_idempotency_key(
  const std::string& agent, const std::string& key) const {
  std::string value;
  auto s = db_->Get(rocksdb::ReadOptions(), idempotency_key(agent, key), &value);
  if (s.IsNotFound()) return std::optional<std::string>{};
  if (!s.ok()) return io_error(s, "reading an idempotency key");
  return std::optional<std::string>(value);
}

result<std::optional<std::string>> run_store::get_meta(const std::string& key) const {
  std::string value;
  auto s = db_->Get(rocksdb::ReadOptions(), "m/" + key, &value);
  if (s.IsNotFound()) return std::optional<std::string>{};
  if (!s.ok()) return io_error(s, "reading node metadata");
  return std::optional<std::string>(value);
}

result<void> run_store::put_meta(const std::string& key, const std::string& value) {
  rocksdb::WriteOptions write_options;
  write_options.sync = true;
  auto s = db_->Put(write_options, "m/" + key, value);
  if (!s.ok()) return io_error(s, "writing node metadata");
  return success();
}

result<wire::value> run_store::get_list(const std::string& key) const {
  auto bytes = get_meta(key);
  if (!bytes) return bytes.error();
  if (!*bytes) return wire::value::array();
  auto list = wire::unpack(**bytes, disk_limits());
  if (!list) return list.error();
  if (!list->is_array()) return make_error(errc::io, "the stored list " + key + " is not a list");
  return std::move(*list);
}

result<void> run_store::compact() {
  rocksdb::CompactRangeOptions options;
  auto s = db_->CompactRange(options, nullptr, nullptr);
  if (!s.ok()) return io_error(s, "compacting");
  return success();
}

std::uint64_t run_store::free_bytes() const {
  struct statvfs fs{};
  if (::statvfs(path_.c_str(), &fs) != 0) return UINT64_MAX;
  return static_cast<std::uint64_t>(fs.f_bavail) * fs.f_frsize;
}

result<void> run_store::admits_new_run() const {
  if (reserve_bytes_ == 0) return success();
  auto free = free_bytes();
  if (free >= reserve_bytes_) return success();
  return make_error(errc::unavailable, "disk full: the run store at " + path_ + " has " + mib(free) +
                                         " free, under the " + mib(reserve_bytes_) +
                                         " it keeps in reserve (durability.disk_reserve_bytes); no new run is "
                                         "taken until space is freed, and the runs it has go on then");
}

result<void> run_store::room_for(std::size_t bytes) const {
  if (reserve_bytes_ == 0) return success();
  auto free = free_bytes();
  if (free >= bytes && free - bytes >= reserve_bytes_ / 2) return success();
  return make_error(errc::unavailable, "disk full: the run store at " + path_ + " has " + mib(free) +
                                         " free; a write of " + mib(bytes) + " would leave less than half of the " +
                                         mib(reserve_bytes_) + " reserve (durability.disk_reserve_bytes); it is "
                                         "written once space is freed");
}

result<void> run_store::recover() {
  if (auto admitted = admits_new_run(); !admitted) return admitted.error();
  // Clears a background error (a flush or a write that met a full disk); nothing to do if none.
  auto s = db_->Resume();
  if (!s.ok()) return io_error(s, "resuming the run store after a failed write");
  return success();
}

result<void> run_store::flush() {
  auto s = db_->FlushWAL(true);
  if (!s.ok()) return io_error(s, "syncing the write-ahead log");
  return success();
}

} // namespace keel::store
