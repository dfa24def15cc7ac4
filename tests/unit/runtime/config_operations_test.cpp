// The operations keys (docs/OPERATIONS.md): prices, budgets, log format, metrics and traces. Each
// bad value is refused at load with the key and what is wrong.
#include "runtime/config.hpp"

#include <catch2/catch.hpp>

using namespace keel;

namespace {
std::string error_of(const std::string& text) {
  auto c = config::load_string(text, "ops.toml");
  return c.ok() ? std::string("(loaded)") : c.error().message;
}
} // namespace

TEST_CASE("config: prices by provider and model, budgets, log format, metrics and telemetry keys load", "[runtime][config]") {
  auto c = config::load_string(R"(
[log]
format = "json"
[metrics]
listen = "127.0.0.1:9464"
[telemetry]
otlp_endpoint = "http://127.0.0.1:4318/v1/traces"
spans_queued_max = 100
[prices."anthropic/claude-sonnet-4-5"]
input = 3
output = 15.0
cache_read = 0.3
cache_write = 3.75
[agents.coder]
provider = "anthropic"
model = "claude-sonnet-4-5"
budget_usd = 0.5
)", "ops.toml");
  REQUIRE(c.ok());
  CHECK(c->log_format == "json");
  CHECK(c->metrics_listen == "127.0.0.1:9464");
  CHECK(c->spans_queued_max == 100);
  const auto* p = c->find_price("anthropic", "claude-sonnet-4-5");
  REQUIRE(p);
  CHECK(p->input == 3.0);
  CHECK(p->output == 15.0);
  CHECK(p->cache_read == 0.3);
  CHECK(p->cache_write == 3.75);
  CHECK(c->find_price("anthropic", "other") == nullptr);
  CHECK(c->agents.at(0).budget_usd == 0.5);
}

TEST_CASE("config: a bad price, budget, log format or metrics address is refused naming the key", "[runtime][config]") {
  CHECK(error_of("[prices.\"nomodel\"]\ninput = 1\n").find("prices.\"nomodel\"") != std::string::npos);
  CHECK(error_of("[prices.\"a/\"]\ninput = 1\n").find("<provider>/<model>") != std::string::npos);
  CHECK(error_of("[prices.\"a/b\"]\ninput = -1\n").find("prices.\"a/b\".input") != std::string::npos);
  CHECK(error_of("[prices.\"a/b\"]\ninput = \"3\"\n").find("prices.\"a/b\".input") != std::string::npos);
  CHECK(error_of("[prices.\"a/b\"]\ninput = nan\n").find("prices.\"a/b\".input") != std::string::npos);
  CHECK(error_of("[prices.\"a/b\"]\ninputs = 1\n").find("prices.\"a/b\".inputs") != std::string::npos);
  CHECK(error_of("[prices.\"a/b\"]\ninput = 1e7\n").find("prices.\"a/b\".input") != std::string::npos);
  CHECK(error_of("prices = 3\n").find("prices") != std::string::npos);
  CHECK(error_of("[agents.a]\nbudget_usd = -0.1\n").find("agents.a.budget_usd") != std::string::npos);
  CHECK(error_of("[agents.a]\nbudget_usd = \"1\"\n").find("agents.a.budget_usd") != std::string::npos);
  CHECK(error_of("[log]\nformat = \"xml\"\n").find("log.format") != std::string::npos);
  CHECK(error_of("[metrics]\nlisten = \"nowhere\"\n").find("metrics.listen") != std::string::npos);
  // Metrics served beyond this machine need a token.
  CHECK(error_of("[metrics]\nlisten = \"0.0.0.0:9464\"\n").find("metrics.token_file") != std::string::npos);
  CHECK(error_of("[metrics]\nlisten = \"0.0.0.0:9464\"\ntoken_file = \"/etc/keel/metrics-token\"\n") == "(loaded)");
  CHECK(error_of("[telemetry]\nspans_queued_max = -1\n").find("telemetry.spans_queued_max") != std::string::npos);
  // Export headers carry credentials: never on a command line.
  auto on_line = config::load_file("/dev/null", {"telemetry.otlp_headers = \"authorization=Bearer x\""});
  REQUIRE(!on_line);
  CHECK(on_line.error().message.find("a secret is not given on the command line") != std::string::npos);
}
