// File: coordinator/scheduler_internal.h
//
// Private to scheduler*.cc: the in-memory job and the transaction that
// collects one state change's records before they are queued to the store.
#pragma once

#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "coordinator/scheduler.h"
#include "storage/state/keys.h"
#include "storage/state_store.h"

namespace qf::coordinator {

struct Scheduler::Job {
  proto::JobRecord rec;
  std::vector<proto::TaskRecord> tasks;                 // tasks[i].stage == i
  std::shared_ptr<const storage::ModelConfig> config;   // null when the model could not be read
  bool assembling = false;                              // an assembler has taken it
};

// One state change: records are marked dirty while memory is mutated and
// serialized once in Finish(), so a record touched twice is written once,
// in its final form.
struct Scheduler::Txn {
  storage::StateBatch batch;                    // puts/deletes other than job/task records
  std::set<std::string> dirty_jobs;
  std::set<std::pair<std::string, int>> dirty_tasks;
  std::set<std::string> evented;                // jobs that got events (watchers to wake)
  bool assembly = false;                        // a job entered ASSEMBLING
  int64_t now = 0;
  bool empty() const { return batch.empty() && dirty_jobs.empty() && dirty_tasks.empty(); }
};

// NotFound for a client's job id that names no job (escaped: one line).
// Every scheduler*.cc refusal of an unknown job says it the same way.
absl::Status NoSuchJob(const std::string& job_id);

}  // namespace qf::coordinator
