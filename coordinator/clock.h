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

class RealClock final : public Clock {
 public:
  int64_t NowMs() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
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
