#include "actors/cost_report.hpp"

#include "runtime/run_state.hpp"

#include <map>

namespace keel::actors {

using wire::value;

result<wire::value> cost_report(const store::run_store& store, std::int64_t since_ms, std::int64_t until_ms,
                                std::size_t scan_max) {
  struct totals {
    std::int64_t runs = 0;
    double cost = 0;
    store::token_usage used;
  };
  std::map<std::string, totals> by_agent;
  std::size_t read = 0;
  bool cut = false;
  // From the first run created at since_ms: '~' sorts after every id character.
  std::int64_t after_ms = since_ms - 1;
  std::string after_run = "~";
  while (true) {
    auto page = store.list_oldest(after_ms, after_run, 1000);
    if (!page) return page.error();
    if (page->empty()) break;
    bool past = false;
    for (const auto& entry : *page) {
      if (entry.created_ms >= until_ms) {
        past = true;
        break;
      }
      if (read >= scan_max) {
        cut = true;
        past = true;
        break;
      }
      ++read;
      auto record = store.get(entry.run_id, false);
      if (!record || !*record) continue;
      auto state = store::run_state_from_value((*record)->state);
      auto& t = by_agent[(*record)->agent];
      t.runs += 1;
      if (!state) continue;  // damaged: counted, its cost unknown
      t.cost += state->cost_usd;
      t.used.input_tokens += state->usage.input_tokens;
      t.used.output_tokens += state->usage.output_tokens;
      t.used.cache_read_tokens += state->usage.cache_read_tokens;
      t.used.cache_write_tokens += state->usage.cache_write_tokens;
    }
    if (past) break;
    after_ms = page->back().created_ms;
    after_run = page->back().run_id;
  }
  value agents = value::array();
  for (const auto& [agent, t] : by_agent)
    agents.push_back(value{{"agent", agent}, {"runs", t.runs}, {"cost_usd", t.cost},
                           {"input_tokens", t.used.input_tokens}, {"output_tokens", t.used.output_tokens},
                           {"cache_read_tokens", t.used.cache_read_tokens}, {"cache_write_tokens", t.used.cache_write_tokens}});
  return value{{"agents", agents}, {"runs_read", read}, {"cut", cut}};
}

result<std::pair<std::int64_t, std::int64_t>> cost_window(const wire::value& body, std::int64_t now_ms) {
  std::int64_t since = now_ms - 24 * 3'600'000, until = now_ms + 1;
  for (auto [key, to] : {std::pair{"since_ms", &since}, std::pair{"until_ms", &until}}) {
    if (!body.contains(key)) continue;
    if (!body[key].is_number_integer() || body[key].get<std::int64_t>() < 0)
      return make_error(errc::invalid_argument, std::string(key) + " must be a whole number of milliseconds since 1970, at least 0");
    *to = body[key].get<std::int64_t>();
  }
  if (since >= until) return make_error(errc::invalid_argument, "since_ms must be before until_ms");
  return std::pair{since, until};
}

} // namespace keel::actors
