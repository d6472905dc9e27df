// File: coordinator/clock.h
//
// Time as the scheduler sees it: milliseconds since the Unix epoch. Leases,
// deadlines and event timestamps all come from one injectable Clock, so tests
// move time by hand (FakeClock) instead of sleeping.
//
//   qf::coordinator::FakeClock clock(1'000'000);
//   ... lease a task (deadline = now + ttl) ...
//   clock.AdvanceMs(ttl + 1);
//   scheduler->ExpireLeases();   // the lease is gone, the task re-queued
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace qf::coordinator {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual int64_t NowMs() const = 0;
};

// Wall-clock milliseconds read once, at construction, then advanced by the
// steady clock. A lease's deadline is "now + ttl" on this clock, so an NTP
// step of the system clock (forward: every lease expires at once, every worker
// loses its layer; backward: a dead worker's lease outlives it by the step)
// cannot move it. Event timestamps stay within the drift since start of the
// wall clock. Across a restart the new process anchors again; the scheduler
// caps the deadlines it loads at now + ttl (Scheduler::Create).
class RealClock final : public Clock {
 public:
  using SourceMs = int64_t (*)();
  static int64_t SystemMs() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
  static int64_t SteadyMs() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  explicit RealClock(SourceMs wall = SystemMs, SourceMs steady = SteadyMs)
      : steady_(steady), wall_at_start_(wall()), steady_at_start_(steady()) {}
  int64_t NowMs() const override { return wall_at_start_ + (steady_() - steady_at_start_); }

 private:
  const SourceMs steady_;
  const int64_t wall_at_start_;
  const int64_t steady_at_start_;
};

// NOTE: thread-safe; time only moves when a test says so.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(int64_t start_ms = 1'700'000'000'000) : now_ms_(start_ms) {}
  int64_t NowMs() const override { return now_ms_.load(); }
  void AdvanceMs(int64_t ms) { now_ms_ += ms; }
  void SetMs(int64_t ms) { now_ms_ = ms; }

 private:
  std::atomic<int64_t> now_ms_;
};

}  // namespace qf::coordinator
