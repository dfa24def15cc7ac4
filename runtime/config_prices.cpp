// [prices."<provider>/<model>"]: what a model's tokens cost, for the cost of steps, runs and agents
// and for budgets (docs/OPERATIONS.md).
#include "runtime/config.hpp"
#include "runtime/config_tools.hpp"

namespace keel::config {

const price* node_config::find_price(const std::string& provider, const std::string& model) const {
  auto it = prices.find(provider + "/" + model);
  return it == prices.end() ? nullptr : &it->second;
}

namespace detail {

std::optional<table_problem> read_prices(const toml::table& prices, node_config& config) {
  for (const auto& [raw, node] : prices) {
    std::string name(raw.str());
    std::string where = "prices.\"" + name + "\"";
    auto slash = name.find('/');
    if (slash == std::string::npos || slash == 0 || slash + 1 == name.size() || name.size() > 256)
      return table_problem{&node, where, "a price is named \"<provider>/<model>\" (as the agent's provider and model say them)"};
    const auto* table = node.as_table();
    if (!table) return table_problem{&node, where, "expected a table (input, output, cache_read, cache_write)"};
    reader r{*table, where, {}};
    r.only({"input", "output", "cache_read", "cache_write"}, "docs/OPERATIONS.md");
    price p;
    auto number = [&](const char* key, double& to) {
      const auto* n = r.get(key);
      if (!n) return;
      double v = n->is_integer() ? static_cast<double>(*n->value<std::int64_t>()) : n->is_floating_point() ? *n->value<double>() : -1;
      if (!(v >= 0 && v <= 1e6)) return r.fail(n, key, "expected US dollars per million tokens, a number from 0 to 1000000");
      to = v;
    };
    number("input", p.input);
    number("output", p.output);
    number("cache_read", p.cache_read);
    number("cache_write", p.cache_write);
    if (r.problem) return r.problem;
    config.prices[name] = p;
  }
  return std::nullopt;
}

} // namespace detail
} // namespace keel::config
