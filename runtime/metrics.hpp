// A node's metrics, in Prometheus's text format (docs/OPERATIONS.md lists them). One registry per
// process: counters, gauges and histograms by name and labels, updated from any thread, and
// gauges worked out when scraped (collectors). Every family is declared in metrics_catalog.cpp
// with its type, help and buckets; updating a name not declared there is a programming error and
// is dropped (with one log line), never a crash.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace keel::metrics {

using labels = std::vector<std::pair<std::string, std::string>>;

enum class kind { counter, gauge, histogram };

struct family_spec {
  std::string name;
  kind type = kind::counter;
  std::string help;
  std::vector<double> buckets;  // histograms: upper bounds, increasing (+Inf is added)
};

void count(std::string_view name, const labels& l = {}, double by = 1);
void set(std::string_view name, const labels& l, double value);
void add(std::string_view name, const labels& l, double delta);
void observe(std::string_view name, const labels& l, double value);

// A collector sets gauges (or counters it reads elsewhere) when the registry is rendered (on the scraping thread): counts read
// from a store or a broker. It must be quick and must not throw; it is kept until its handle
// goes. Gauges a collector set at an earlier scrape and does not set now are dropped (a run
// status with no runs left, a queue no longer consumed).
class collector_handle {
public:
  collector_handle() = default;
  explicit collector_handle(std::size_t id) : id_(id) {}
  ~collector_handle();
  collector_handle(collector_handle&& o) noexcept : id_(std::exchange(o.id_, 0)) {}
  collector_handle& operator=(collector_handle&& o) noexcept;
  collector_handle(const collector_handle&) = delete;
  collector_handle& operator=(const collector_handle&) = delete;

private:
  std::size_t id_ = 0;
};

using gauge_setter = std::function<void(std::string_view name, const labels& l, double value)>;
[[nodiscard]] collector_handle add_collector(std::function<void(const gauge_setter&)> collect);

// The text exposition format 0.0.4 (`# HELP`, `# TYPE`, samples), families in name order.
std::string render();

// The families declared (metrics_catalog.cpp), for docs and tests.
const std::vector<family_spec>& catalog();

// The process's own (process_resident_memory_bytes, process_cpu_seconds_total, ...), read
// from /proc at each scrape.
void collect_process(const gauge_setter& set);

// Clears every value (tests).
void reset_for_tests();

} // namespace keel::metrics
