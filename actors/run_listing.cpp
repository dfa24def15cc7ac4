#include "actors/run_listing.hpp"

#include "runtime/ids.hpp"

#include <algorithm>
#include <cctype>

namespace keel::actors {

using wire::value;

namespace {

std::string lower(std::string text) {
  for (auto& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

result<std::int64_t> time_field(const value& body, const char* key) {
  if (!body.contains(key)) return std::int64_t{-1};
  const auto& v = body[key];
  if (!v.is_number_integer() || v.get<std::int64_t>() < 0)
    return make_error(errc::invalid_argument, std::string(key) + " must be a time in Unix milliseconds, got " + v.dump());
  return v.get<std::int64_t>();
}

bool contains_text(const value& summary, const std::string& needle) {
  for (const char* key : {"input", "output", "error"}) {
    if (!summary.contains(key)) continue;
    const auto& v = summary[key];
    auto text = v.is_string() ? v.get<std::string>() : v.dump(-1, ' ', false, value::error_handler_t::replace);
    if (lower(std::move(text)).find(needle) != std::string::npos) return true;
  }
  return false;
}

} // namespace

result<list_query> parse_list_query(const value& body) {
  list_query q;
  if (body.contains("limit")) {
    const auto& v = body["limit"];
    if (!v.is_number_integer() || (!v.is_number_unsigned() && v.get<std::int64_t>() < 0))
      return make_error(errc::invalid_argument, "limit must be an unsigned integer, got " + v.dump());
    q.limit = v.is_number_unsigned() ? std::clamp<std::uint64_t>(v.get<std::uint64_t>(), 1, list_limit_max)
                                     : std::clamp<std::int64_t>(v.get<std::int64_t>(), 1, list_limit_max);
  }
  if (body.contains("status")) {
    store::run_status s;
    if (!body["status"].is_string() || !store::from_string(body["status"].get<std::string>(), s))
      return make_error(errc::invalid_argument, "unknown status " + body["status"].dump() +
                                                  "; one of pending, running, suspended, waiting, completed, failed, cancelled");
    q.status = s;
  }
  auto name_field = [&](const char* key, std::string& out, const char* what) -> result<void> {
    if (!body.contains(key)) return success();
    if (!body[key].is_string() || !is_valid_name(body[key].get<std::string>()))
      return make_error(errc::invalid_argument, std::string(key) + " must be " + what);
    out = body[key].get<std::string>();
    return success();
  };
  if (auto r = name_field("agent", q.agent, "an agent id ([A-Za-z0-9_-], 1 to 64)"); !r) return r.error();
  if (body.contains("session_id")) {
    const auto& v = body["session_id"];
    if (!v.is_string() || v.get<std::string>().empty() || v.get<std::string>().size() > 128)
      return make_error(errc::invalid_argument, "session_id must be a string of 1 to 128 bytes");
    q.session_id = v.get<std::string>();
  }
  auto since = time_field(body, "since_ms");
  if (!since) return since.error();
  auto until = time_field(body, "until_ms");
  if (!until) return until.error();
  q.since_ms = *since;
  q.until_ms = *until;
  if (body.contains("text")) {
    if (!body["text"].is_string() || body["text"].get<std::string>().size() > list_text_bytes_max)
      return make_error(errc::invalid_argument, "text must be a string of at most " + std::to_string(list_text_bytes_max) + " bytes");
    q.text = lower(body["text"].get<std::string>());
  }
  if (body.contains("before")) {
    const auto& b = body["before"];
    if (!b.is_object() || !b.contains("created_ms") || !b["created_ms"].is_number_integer() ||
        b["created_ms"].get<std::int64_t>() < 0 || !b.contains("run_id") || !b["run_id"].is_string() ||
        b["run_id"].get<std::string>().size() > 200)
      return make_error(errc::invalid_argument, "before must be {created_ms, run_id}: the next of an earlier page");
    q.before_ms = b["created_ms"].get<std::int64_t>();
    q.before_run = b["run_id"].get<std::string>();
  }
  return q;
}

value list_runs(const store::run_store& store, const list_query& q, std::size_t bytes_max,
                const std::function<value(const store::run_record&)>& summary) {
  value runs = value::array();
  std::size_t bytes = 0, scanned = 0;
  bool cut = false;
  std::optional<store::run_store::time_entry> stopped;  // where the page ends, when more may follow
  auto matches = [&](const store::run_record& r, const value& s) {
    if (q.status && r.status != *q.status) return false;
    if (!q.agent.empty() && r.agent != q.agent) return false;
    if (!q.session_id.empty() && r.session_id != q.session_id) return false;
    if (q.since_ms >= 0 && r.created_ms < q.since_ms) return false;
    if (q.until_ms >= 0 && r.created_ms >= q.until_ms) return false;
    if (!q.text.empty() && !contains_text(s, q.text)) return false;
    return true;
  };
  // Takes one run; false when the page is full.
  auto take = [&](const store::run_store::time_entry& at) {
    ++scanned;
    auto record = store.get(at.run_id, false);
    if (!record || !*record) return true;
    const auto& r = **record;
    auto s = summary(r);
    if (!matches(r, s)) return true;
    auto size = wire::pack(s).size();
    if (!runs.empty() && bytes + size > bytes_max) {
      cut = true;
      return false;
    }
    bytes += size;
    runs.push_back(std::move(s));
    stopped = at;
    return runs.size() < q.limit;
  };
  auto before = [&](const store::run_store::time_entry& e) {
    return q.before_ms < 0 || e.created_ms < q.before_ms || (e.created_ms == q.before_ms && e.run_id < q.before_run);
  };
  bool more = false;
  if (q.status && (*q.status == store::run_status::pending || *q.status == store::run_status::running ||
                   *q.status == store::run_status::suspended || *q.status == store::run_status::waiting)) {
    // Runs in flight are few next to finished ones: their status index is read whole.
    auto ids = store.list_by_status(*q.status, q.scan_max);
    std::vector<store::run_store::time_entry> entries;
    if (ids)
      for (auto& id : *ids)
        if (auto r = store.get(id, false); r && *r) entries.push_back({(*r)->created_ms, id});
    std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
      return a.created_ms != b.created_ms ? a.created_ms > b.created_ms : a.run_id > b.run_id;
    });
    for (std::size_t i = 0; i < entries.size(); ++i) {
      if (!before(entries[i])) continue;
      if (!take(entries[i])) {
        more = cut || i + 1 < entries.size();
        break;
      }
    }
    if (ids && ids->size() >= q.scan_max) more = true;
  } else {
    // Newest first through the time index, from the cursor, until the page is full or the scan
    // budget is spent.
    std::int64_t from_ms = q.before_ms;
    std::string from_run = q.before_run;
    if (q.until_ms >= 0 && (from_ms < 0 || q.until_ms <= from_ms)) {
      from_ms = q.until_ms;
      from_run.clear();  // below every run created at until_ms
    }
    bool done = false;
    while (!done) {
      auto page = store.list_by_time(from_ms, from_run, 512);
      if (!page || page->empty()) break;
      for (auto& e : *page) {
        if (q.since_ms >= 0 && e.created_ms < q.since_ms) {
          done = true;
          break;
        }
        if (!take(e)) {
          more = true;
          done = true;
          break;
        }
        if (scanned >= q.scan_max) {
          stopped = e;  // went this far without filling the page
          more = true;
          done = true;
          break;
        }
      }
      if (!done) {
        from_ms = page->back().created_ms;
        from_run = page->back().run_id;
      }
    }
  }
  value out{{"runs", std::move(runs)}, {"cut", cut}};
  if (more && stopped) out["next"] = value{{"created_ms", stopped->created_ms}, {"run_id", stopped->run_id}};
  return out;
}

} // namespace keel::actors
