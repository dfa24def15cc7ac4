// Listing and searching an orchestrator's runs (list_runs in docs/PROTOCOL.md): filters, newest
// first, a page that stops where the next one starts, within one NATS message.
#pragma once

#include "runtime/result.hpp"
#include "runtime/run_store.hpp"
#include "runtime/wire.hpp"

#include <functional>
#include <optional>
#include <string>

namespace keel::actors {

struct list_query {
  std::size_t limit = 50;
  std::optional<store::run_status> status;
  std::string agent;
  std::string session_id;
  std::int64_t since_ms = -1;   // created at or after; -1: no bound
  std::int64_t until_ms = -1;   // created before; -1: no bound
  std::string text;             // lower-cased; found in the input, output or error
  std::int64_t before_ms = -1;  // the page starts below (before_ms, before_run); -1: at the newest
  std::string before_run;
  std::size_t scan_max = 20'000;  // runs one request reads at most (not from the wire: tests lower it)
};

constexpr std::size_t list_limit_default = 50;
constexpr std::size_t list_limit_max = 1000;
constexpr std::size_t list_text_bytes_max = 256;

// The query a list_runs body asks for; a field of the wrong type or out of bounds is an error
// that names it.
result<list_query> parse_list_query(const wire::value& body);

// {runs: [summary...], cut, next?: {created_ms, run_id}}: `next` is where this orchestrator stopped
// when it may hold more matching runs; the page holds at most `bytes_max` of summaries.
wire::value list_runs(const store::run_store& store, const list_query& query, std::size_t bytes_max,
                      const std::function<wire::value(const store::run_record&)>& summary);

} // namespace keel::actors
