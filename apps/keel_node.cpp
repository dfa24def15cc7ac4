// keel-node: loads and validates its config, starts a node, and stops it cleanly on SIGTERM or
// SIGINT within limits.shutdown_timeout_ms. Exit codes: 0 stopped cleanly, 1 failed to start or
// stop, 2 bad command line or config.
#include "apps/node.hpp"
#include "runtime/thread_pool.hpp"
#include "runtime/config.hpp"
#include "runtime/spawner.hpp"
#include "runtime/log.hpp"
#include "runtime/step_trace.hpp"

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <csignal>
#include <iostream>
#include <thread>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

// Ends the process at once, running nothing: no static destructor, no atexit handler (nor a
// sanitizer's, which would report the threads a stop that overran its bound never joined: the
// point of exiting here).
[[noreturn]] static void hard_exit(int status) {
  ::syscall(SYS_exit_group, status);
  __builtin_unreachable();
}

int main(int argc, char** argv) {
  // Nothing this process inherited, and nothing a library opens without the flag, reaches a
  // child; no other process of its uid may read its memory or trace it.
  keel::mark_inherited_descriptors_cloexec();
  ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  CLI::App app{"keel-node: one node of a keel cluster"};
  std::string config_path;
  std::vector<std::string> overrides;
  bool check_only = false;
  app.add_option("-c,--config", config_path, "The node's TOML config file")->required();
  app.add_option("--set", overrides, "Override one key: --set 'nats.servers=[\"nats://h:4222\"]'");
  app.add_flag("--check", check_only, "Validate the config and exit");
  CLI11_PARSE(app, argc, argv);

  auto config = keel::config::load_file(config_path, overrides);
  if (!config) {
    std::cerr << "keel-node: " << config.error().message << "\n";
    return 2;
  }
  if (check_only) {
    std::cout << config_path << ": ok\n";
    return 0;
  }
  keel::log::configure(config->log_level, config->log_file, config->log_format);
  auto logger = keel::log::get("node");
  // Every stream a gateway serves, every connection and every store file is a descriptor: take
  // what the system allows (the soft limit is often 1,024, the hard one far more).
  if (rlimit files{}; ::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &files) != 0) logger->warn("could not raise the open files limit");
  }

  // Block the stop signals in every thread (threads inherit the mask), then wait for them here.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  auto node = keel::actors::node::start(*config);
  if (!node) {
    std::cerr << "keel-node: " << node.error().message << "\n";
    return 1;
  }
  int received = 0;
  sigwait(&stop_signals, &received);
  keel::step_trace::write_file();
  logger->info("received {}, stopping", received == SIGTERM ? "SIGTERM" : "SIGINT");

  // A stop that overruns its bound must not leave the node half-alive.
  auto bound_ms = config->shutdown_timeout_ms;
  std::thread([bound_ms, logger] {
    std::this_thread::sleep_for(std::chrono::milliseconds(bound_ms));
    logger->error("stop took longer than {} ms; exiting anyway", bound_ms);
    logger->flush();
    hard_exit(1);
  }).detach();
  (*node)->stop();
  // A command that overran the stop still holds a thread (its task goes to another worker once
  // this node is silent): exit without freeing the node or running static destructors under it.
  if (auto left = keel::thread_pool::threads_left_running(); left > 0) {
    logger->info("exiting with {} task threads still running; their tasks are handed to another worker", left);
    logger->flush();
    hard_exit(0);
  }
  node->reset();
  logger->flush();
  return 0;
}
