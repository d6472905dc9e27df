// File: storage/state/keys.h
//
// Key schema of the coordinator's state store (storage/state_store.h). Numbers
// inside keys are big-endian so that RocksDB's byte order is numeric order:
// a prefix scan of "job-000001/" walks a job's tasks by stage, its results by
// layer and its events by sequence number.
//
//   family   key
//   jobs     <job_id>
//   tasks    <job_id> '/' BE32(stage)
//   leases   BE64(attempt_id)
//   results  <job_id> '/' BE32(layer)
//   events   <job_id> '/' BE64(seq)
//   meta     "meta/next_job", "meta/next_attempt", "worker/<name>"
//
//   std::string k = qf::storage::TaskKey("job-000001", 2);
//   store->Scan(StateFamily::kTasks, qf::storage::JobPrefix("job-000001"), ...);
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace qf::storage {

inline void AppendBigEndian(std::string* out, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

// Decodes `bytes` big-endian bytes at the end of `key`; 0 if the key is shorter.
inline uint64_t ReadBigEndianSuffix(std::string_view key, int bytes) {
  if (key.size() < static_cast<size_t>(bytes)) return 0;
  uint64_t v = 0;
  for (size_t i = key.size() - bytes; i < key.size(); ++i) v = (v << 8) | static_cast<uint8_t>(key[i]);
  return v;
}

inline std::string JobPrefix(std::string_view job_id) { return std::string(job_id) + "/"; }

inline std::string TaskKey(std::string_view job_id, int stage) {
  std::string k = JobPrefix(job_id);
  AppendBigEndian(&k, static_cast<uint32_t>(stage), 4);
  return k;
}

inline std::string ResultKey(std::string_view job_id, int layer) {
  std::string k = JobPrefix(job_id);
  AppendBigEndian(&k, static_cast<uint32_t>(layer), 4);
  return k;
}

inline std::string EventKey(std::string_view job_id, uint64_t seq) {
  std::string k = JobPrefix(job_id);
  AppendBigEndian(&k, seq, 8);
  return k;
}

inline std::string LeaseKey(uint64_t attempt_id) {
  std::string k;
  AppendBigEndian(&k, attempt_id, 8);
  return k;
}

inline constexpr std::string_view kMetaNextJob = "meta/next_job";
inline constexpr std::string_view kMetaNextAttempt = "meta/next_attempt";
inline constexpr std::string_view kWorkerPrefix = "worker/";
inline std::string WorkerKey(std::string_view name) { return std::string(kWorkerPrefix) + std::string(name); }

}  // namespace qf::storage
