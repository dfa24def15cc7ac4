// A deterministic world for simulation tests, in the manner of FoundationDB's and TigerBeetle's:
// simulated time, and processes (the code under test, on threads of their own) that run one at a
// time, each until it waits (a sleep, or a simulated I/O call that takes time). Which process runs
// next is decided by simulated time, ties broken by the seed, so that a seed replays exactly.
// Nodes are groups of processes that can be paused (SIGSTOP), suspended (the machine sleeps: a
// clock that stops while suspended falls behind) and crashed.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

namespace keel::simulation {

// Thrown at a process's waiting point when the world ends: it unwinds the process.
struct halted {};

class world {
public:
  explicit world(std::uint64_t seed);
  ~world();  // halts every process
  world(const world&) = delete;
  world& operator=(const world&) = delete;

  std::uint64_t seed() const { return seed_; }
  std::int64_t now_ms() const { return now_ms_; }
  // A number in [low, high], from the seed (by the scheduler or the one process that runs).
  std::int64_t uniform(std::int64_t low, std::int64_t high);
  bool chance(double p);

  // Starts a process of `node` that runs `body` from now on (after the one running).
  int spawn(int node, std::string name, std::function<void()> body);
  // In a process: lets `ms` of simulated time pass (others run meanwhile). Throws halted.
  void sleep(std::int64_t ms);
  // In a process: waits until process `id` has ended.
  void join(int id);
  bool in_process() const;
  int current_node() const;

  // Runs events until simulated time `until_ms` (or none are left), calling `after_each` on the
  // scheduler after each (where invariants are checked).
  void run_until(std::int64_t until_ms, const std::function<void()>& after_each = {});
  // Ends every process (unwinding each with `halted`) and joins their threads.
  void halt();

  void pause(int node, std::int64_t ms);    // SIGSTOP for ms: nothing of it runs meanwhile
  void suspend(int node, std::int64_t ms);  // the machine sleeps: a pause its stopping clocks miss
  void crash(int node);                     // nothing of it runs again
  bool crashed(int node) const;
  bool paused(int node) const;
  std::int64_t suspended_ms(int node) const;  // how long the node's machine has slept so far

  // An error raised by a process (anything it threw but `halted`): the test fails with it.
  std::vector<std::string> errors() const;
  // One line per fault and notable event, for a failing seed's report.
  void note(const std::string& line);
  std::string trace() const;

private:
  struct process {
    int id = 0;
    int node = 0;
    std::string name;
    bool finished = false;
    std::condition_variable turn;  // notified when it is this process's turn
    std::thread thread;
  };
  void enqueue(int id, std::int64_t at_ms);  // mutex_ held
  void wait_for_turn(std::unique_lock<std::mutex>& lock, int id);
  // After a process's step (it waits now, or ended): the checks, then the turn to the next event's
  // process (perhaps the same one, which then goes on without a switch), or to run_until's caller
  // once no event is due. Called by the process whose step it was: one hand-over per event.
  void next_turn(std::unique_lock<std::mutex>& lock, bool check);

  std::uint64_t seed_;
  std::mt19937_64 random_;
  std::int64_t now_ms_ = 0;
  mutable std::mutex mutex_;
  std::condition_variable scheduler_turn_;  // notified when a process hands the turn back
  void give_turn(int id);                   // mutex_ held
  int running_ = -1;  // the process whose turn it is; -1: run_until's caller; -2: the checks
  std::int64_t until_ms_ = 0;
  std::function<void()> after_each_;
  bool halting_ = false;
  std::vector<std::unique_ptr<process>> processes_;
  // (time, tie-break from the seed, order of enqueueing, process)
  std::set<std::tuple<std::int64_t, std::uint64_t, std::uint64_t, int>> events_;
  std::uint64_t enqueued_ = 0;
  std::map<int, std::int64_t> paused_until_;
  std::map<int, std::vector<std::pair<std::int64_t, std::int64_t>>> suspensions_;  // node -> [from, to)
  std::set<int> crashed_;
  std::vector<std::string> errors_;
  std::vector<std::string> trace_;
};

} // namespace keel::simulation
