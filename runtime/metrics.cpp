#include "runtime/metrics.hpp"
#include "runtime/log.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <map>
#include <mutex>
#include <set>

namespace keel::metrics {

namespace {

struct histogram_cell {
  std::vector<std::uint64_t> counts;  // per bucket (not cumulative), then +Inf
  double sum = 0;
  std::uint64_t count = 0;
};

struct family {
  const family_spec* spec = nullptr;
  std::map<labels, double> values;           // counters and gauges
  std::map<labels, histogram_cell> histograms;
  std::map<labels, double> collected;         // gauges set by collectors at the last scrape
};

struct registry {
  std::mutex mutex;
  std::map<std::string, family, std::less<>> families;
  std::map<std::size_t, std::function<void(const gauge_setter&)>> collectors;
  std::size_t next_collector = 1;
  std::set<std::string, std::less<>> unknown_logged;

  registry() {
    for (const auto& spec : catalog()) families[spec.name].spec = &spec;
  }
};

registry& global() {
  static registry* r = new registry();  // never destroyed: threads may update it at exit
  return *r;
}

family* find_locked(registry& r, std::string_view name, kind expected) {
  auto it = r.families.find(name);
  if (it != r.families.end() && it->second.spec->type == expected) return &it->second;
  if (r.unknown_logged.insert(std::string(name)).second)
    log::get("runtime")->error("metric {} is not declared as that kind in metrics_catalog.cpp: dropped", name);
  return nullptr;
}

std::string number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::floor(v) && std::fabs(v) < 1e15) return std::to_string(static_cast<long long>(v));
  char buffer[64];
  auto written = std::to_chars(buffer, buffer + sizeof buffer, v);  // the shortest text that reads back the same
  return std::string(buffer, written.ptr);
}

void escape_into(std::string& out, std::string_view text, bool help) {
  for (char c : text) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else if (c == '"' && !help) out += "\\\"";
    else out += c;
  }
}

void labels_into(std::string& out, const labels& l, const char* extra_name = nullptr, const std::string& extra_value = {}) {
  if (l.empty() && !extra_name) return;
  out += '{';
  bool first = true;
  for (const auto& [k, v] : l) {
    if (!first) out += ',';
    first = false;
    out += k;
    out += "=\"";
    escape_into(out, v, false);
    out += '"';
  }
  if (extra_name) {
    if (!first) out += ',';
    out += extra_name;
    out += "=\"";
    out += extra_value;
    out += '"';
  }
  out += '}';
}

labels sorted(labels l) {
  std::sort(l.begin(), l.end());
  return l;
}

} // namespace

void count(std::string_view name, const labels& l, double by) {
  if (!(by >= 0)) return;  // a counter only goes up (NaN refused too)
  auto& r = global();
  std::lock_guard lock{r.mutex};
  if (auto* f = find_locked(r, name, kind::counter)) f->values[sorted(l)] += by;
}

void set(std::string_view name, const labels& l, double value) {
  auto& r = global();
  std::lock_guard lock{r.mutex};
  if (auto* f = find_locked(r, name, kind::gauge)) f->values[sorted(l)] = value;
}

void add(std::string_view name, const labels& l, double delta) {
  auto& r = global();
  std::lock_guard lock{r.mutex};
  if (auto* f = find_locked(r, name, kind::gauge)) f->values[sorted(l)] += delta;
}

void observe(std::string_view name, const labels& l, double value) {
  if (std::isnan(value)) return;
  auto& r = global();
  std::lock_guard lock{r.mutex};
  auto* f = find_locked(r, name, kind::histogram);
  if (!f) return;
  auto& cell = f->histograms[sorted(l)];
  const auto& bounds = f->spec->buckets;
  if (cell.counts.empty()) cell.counts.assign(bounds.size() + 1, 0);
  auto at = std::lower_bound(bounds.begin(), bounds.end(), value) - bounds.begin();  // le: value <= bound
  cell.counts[static_cast<std::size_t>(at)] += 1;
  cell.sum += value;
  cell.count += 1;
}

collector_handle::~collector_handle() {
  if (!id_) return;
  auto& r = global();
  std::lock_guard lock{r.mutex};
  r.collectors.erase(id_);
}

collector_handle& collector_handle::operator=(collector_handle&& o) noexcept {
  if (this != &o) {
    collector_handle gone{std::exchange(id_, std::exchange(o.id_, 0))};
  }
  return *this;
}

collector_handle add_collector(std::function<void(const gauge_setter&)> collect) {
  auto& r = global();
  std::lock_guard lock{r.mutex};
  auto id = r.next_collector++;
  r.collectors.emplace(id, std::move(collect));
  return collector_handle{id};
}

std::string render() {
  auto& r = global();
  // Collectors run without the lock (they read stores and brokers); what they set is gathered
  // first, then put in place at once.
  std::vector<std::function<void(const gauge_setter&)>> collectors;
  {
    std::lock_guard lock{r.mutex};
    for (const auto& [id, c] : r.collectors) collectors.push_back(c);
  }
  std::map<std::string, std::map<labels, double>, std::less<>> gathered;
  gauge_setter setter = [&](std::string_view name, const labels& l, double value) {
    gathered[std::string(name)][sorted(l)] = value;
  };
  collect_process(setter);
  for (const auto& c : collectors) {
    try {
      c(setter);
    } catch (const std::exception& e) {
      log::get("runtime")->warn("a metrics collector failed: {}", e.what());
    }
  }
  std::string out;
  std::lock_guard lock{r.mutex};
  for (auto& [name, f] : r.families) {
    if (f.spec->type != kind::histogram) {
      f.collected.clear();
      if (auto it = gathered.find(name); it != gathered.end()) f.collected = std::move(it->second);
    }
  }
  for (const auto& [name, f] : gathered)
    if (auto it = r.families.find(name); it == r.families.end() || it->second.spec->type == kind::histogram)
      if (r.unknown_logged.insert(name).second)
        log::get("runtime")->error("metric {} is not declared as a gauge or counter in metrics_catalog.cpp: dropped", name);
  for (const auto& [name, f] : r.families) {
    const auto& spec = *f.spec;
    bool empty = f.values.empty() && f.histograms.empty() && f.collected.empty();
    out += "# HELP " + name + " ";
    escape_into(out, spec.help, true);
    out += "\n# TYPE " + name + " ";
    out += spec.type == kind::counter ? "counter" : spec.type == kind::gauge ? "gauge" : "histogram";
    out += '\n';
    if (empty) continue;
    if (spec.type == kind::histogram) {
      for (const auto& [l, cell] : f.histograms) {
        std::uint64_t running = 0;
        for (std::size_t i = 0; i < spec.buckets.size(); ++i) {
          running += cell.counts[i];
          out += name + "_bucket";
          labels_into(out, l, "le", number(spec.buckets[i]));
          out += " " + std::to_string(running) + "\n";
        }
        running += cell.counts.back();
        out += name + "_bucket";
        labels_into(out, l, "le", "+Inf");
        out += " " + std::to_string(running) + "\n";
        out += name + "_sum";
        labels_into(out, l);
        out += " " + number(cell.sum) + "\n";
        out += name + "_count";
        labels_into(out, l);
        out += " " + std::to_string(cell.count) + "\n";
      }
      continue;
    }
    std::map<labels, double> all = f.values;
    for (const auto& [l, v] : f.collected) all[l] = v;
    for (const auto& [l, v] : all) {
      out += name;
      labels_into(out, l);
      out += " " + number(v) + "\n";
    }
  }
  return out;
}

void reset_for_tests() {
  auto& r = global();
  std::lock_guard lock{r.mutex};
  for (auto& [name, f] : r.families) {
    f.values.clear();
    f.histograms.clear();
    f.collected.clear();
  }
}

} // namespace keel::metrics
