// Every metric a keel node exposes: name, type, help and buckets. docs/OPERATIONS.md lists them;
// a test checks that both agree.
#include "runtime/metrics.hpp"

#include <dirent.h>
#include <fstream>
#include <sstream>
#include <sys/resource.h>
#include <unistd.h>

namespace keel::metrics {

namespace {

// The OpenTelemetry GenAI conventions' advised buckets (gen_ai.client.token.usage and
// gen_ai.client.operation.duration).
const std::vector<double> token_buckets{1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864};
const std::vector<double> genai_seconds{0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92};
const std::vector<double> step_seconds{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300};
const std::vector<double> io_seconds{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};
const std::vector<double> wait_seconds{1, 10, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, 7 * 24 * 3600};

} // namespace

const std::vector<family_spec>& catalog() {
  static const std::vector<family_spec> all{
    // The GenAI conventions' client metrics, recorded by the worker that calls the model.
    {"gen_ai_client_token_usage", kind::histogram,
     "Tokens used per model call (gen_ai.client.token.usage), by gen_ai_token_type (input, output)", token_buckets},
    {"gen_ai_client_operation_duration_seconds", kind::histogram,
     "Duration of a model call as its worker made it (gen_ai.client.operation.duration), seconds", genai_seconds},
    // Orchestrators: runs and their steps.
    {"keel_runs_started_total", kind::counter, "Runs started on this orchestrator, by agent", {}},
    {"keel_runs_ended_total", kind::counter, "Runs that ended on this orchestrator, by agent and status (completed, failed, cancelled)", {}},
    {"keel_runs", kind::gauge, "Runs held by this orchestrator's store that have not ended, by status", {}},
    {"keel_runs_in_memory", kind::gauge, "Run actors alive on this orchestrator", {}},
    {"keel_step_duration_seconds", kind::histogram,
     "From a step's task sent to its result applied (queueing, worker and retries included), by agent and kind (model, tool)", step_seconds},
    {"keel_step_retries_total", kind::counter, "Steps sent again as a new attempt (a worker lost, a model error, a model call past its time limit), by agent", {}},
    {"keel_tokens_total", kind::counter, "Tokens used by runs' model steps, by agent and type (input, output, cache_read, cache_write)", {}},
    {"keel_cost_usd_total", kind::counter, "Cost of runs' model steps by the configured prices, US dollars, by agent", {}},
    {"keel_approvals_waiting", kind::gauge, "Runs waiting for a person's answer on this orchestrator", {}},
    {"keel_approval_oldest_age_seconds", kind::gauge, "How long the run that has waited longest for a person has waited, seconds", {}},
    {"keel_approval_wait_seconds", kind::histogram, "How long approvals waited until answered, seconds", wait_seconds},
    {"keel_takeovers_total", kind::counter, "Orchestrators whose runs this node took over", {}},
    {"keel_store_write_duration_seconds", kind::histogram, "A batch of run transitions written to the local store (synced when any of it must be), seconds", io_seconds},
    {"keel_run_log_append_duration_seconds", kind::histogram, "A batch appended to the replicated run log until confirmed, seconds", io_seconds},
    {"keel_runs_removed_total", kind::counter, "Ended runs removed by retention", {}},
    // Workers.
    {"keel_worker_slots", kind::gauge, "Tasks this worker runs at once", {}},
    {"keel_worker_slots_busy", kind::gauge, "Tasks this worker holds now", {}},
    {"keel_worker_tasks_total", kind::counter, "Tasks this worker finished, by kind (model, tool) and outcome (ok, error)", {}},
    {"keel_tool_call_duration_seconds", kind::histogram, "A tool call as its worker ran it, by tool, seconds", step_seconds},
    {"keel_tasks_waiting", kind::gauge, "Tasks stored by the broker for a queue and not yet handed to a worker, by queue", {}},
    // Gateways.
    {"keel_http_requests_total", kind::counter, "HTTP requests answered by the gateway, by method and code", {}},
    // Traces (docs/OPERATIONS.md).
    {"keel_trace_spans_exported_total", kind::counter, "Spans the OTLP exporter delivered", {}},
    {"keel_trace_spans_dropped_total", kind::counter, "Spans dropped, by reason (queue_full, export_failed, stopped)", {}},
    // Every process.
    {"keel_build_info", kind::gauge, "Always 1, labelled with the build's version and the node's roles", {}},
    {"process_cpu_seconds_total", kind::counter, "User and system CPU time the process used, seconds", {}},
    {"process_resident_memory_bytes", kind::gauge, "Resident memory, bytes", {}},
    {"process_virtual_memory_bytes", kind::gauge, "Virtual memory, bytes", {}},
    {"process_open_fds", kind::gauge, "Open file descriptors", {}},
    {"process_max_fds", kind::gauge, "The limit on open file descriptors", {}},
    {"process_start_time_seconds", kind::gauge, "When the process started, seconds since the Unix epoch", {}},
  };
  return all;
}

void collect_process(const gauge_setter& set) {
  struct rusage usage {};
  if (::getrusage(RUSAGE_SELF, &usage) == 0) {
    double cpu = static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
                 static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
    set("process_cpu_seconds_total", {}, cpu);
  }
  const double page = static_cast<double>(::sysconf(_SC_PAGESIZE));
  if (std::ifstream statm{"/proc/self/statm"}) {
    double size = 0, resident = 0;
    if (statm >> size >> resident) {
      set("process_virtual_memory_bytes", {}, size * page);
      set("process_resident_memory_bytes", {}, resident * page);
    }
  }
  if (DIR* d = ::opendir("/proc/self/fd")) {
    double n = 0;
    while (auto* entry = ::readdir(d))
      if (entry->d_name[0] != '.') n += 1;
    ::closedir(d);
    set("process_open_fds", {}, n - 1);  // the directory's own descriptor
  }
  struct rlimit limit {};
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY)
    set("process_max_fds", {}, static_cast<double>(limit.rlim_cur));
  // Field 22 of /proc/self/stat: start time in clock ticks after boot.
  static const double started = [] {
    std::ifstream stat{"/proc/self/stat"};
    std::string text((std::istreambuf_iterator<char>(stat)), {});
    auto close = text.rfind(')');
    if (close == std::string::npos) return 0.0;
    std::istringstream rest(text.substr(close + 2));
    std::string field;
    for (int i = 3; i <= 22 && rest >> field; ++i)
      if (i == 22) {
        std::ifstream uptime{"/proc/uptime"};
        double up = 0;
        uptime >> up;
        double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
        double boot = static_cast<double>(::time(nullptr)) - up;
        return boot + std::stod(field) / ticks;
      }
    return 0.0;
  }();
  if (started > 0) set("process_start_time_seconds", {}, started);
}

} // namespace keel::metrics
