// File: storage/state_store.h
//
// The coordinator's durable state: a RocksDB database with one column family
// per kind of record (jobs, tasks, leases, results, events, plus the default
// family for counters and workers). This file and state_store.cc are the only
// places RocksDB appears; callers see keys and serialized values.
//
// Every state change is one StateBatch applied atomically with a synced WAL.
// Commits are grouped: batches queued by concurrent callers are written as one
// RocksDB WriteBatch with one fsync, in the order they were queued. A caller
// that mutates in-memory state under its own lock queues the batch under that
// lock (Enqueue, cheap) and waits for durability outside it (WaitDurable), so
// disk order always equals the order of the in-memory changes.
//
//   QF_ASSIGN_OR_RETURN(auto store, qf::storage::StateStore::Open("/var/lib/qforge"));
//   qf::storage::StateBatch b;
//   b.Put(qf::storage::StateFamily::kJobs, "job-000001", record.SerializeAsString());
//   b.Put(qf::storage::StateFamily::kEvents, EventKey("job-000001", 1), event_bytes);
//   QF_RETURN_IF_ERROR(store->Commit(std::move(b)));     // on disk when this returns
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace rocksdb {
class Env;
}  // namespace rocksdb

namespace qf::storage {

enum class StateFamily : int { kMeta = 0, kJobs, kTasks, kLeases, kResults, kEvents };
inline constexpr int kNumStateFamilies = 6;
// RocksDB column family names, indexed by StateFamily.
std::string_view StateFamilyName(StateFamily family);

// Ordered puts and deletes, applied all or nothing.
class StateBatch {
 public:
  struct Op {
    StateFamily family;
    bool is_delete;
    std::string key;
    std::string value;
  };
  void Put(StateFamily family, std::string key, std::string value) {
    ops_.push_back(Op{family, false, std::move(key), std::move(value)});
  }
  void Delete(StateFamily family, std::string key) {
    ops_.push_back(Op{family, true, std::move(key), {}});
  }
  void Append(StateBatch&& other) {
    for (Op& op : other.ops_) ops_.push_back(std::move(op));
    other.ops_.clear();
  }
  bool empty() const { return ops_.empty(); }
  size_t size() const { return ops_.size(); }
  const std::vector<Op>& ops() const { return ops_; }

 private:
  std::vector<Op> ops_;
};

struct StateStoreOptions {
  // fsync the WAL before a commit returns. Only tests of non-durable paths turn it off.
  bool sync = true;
  // Values of the results family at least this large live in blob files, so
  // compactions do not rewrite the layer payloads.
  uint64_t min_blob_size = 4096;
  // Tests: an Env over a fault-injecting file system (rocksdb::NewCompositeEnv).
  // Null: the default Env. Not owned; must outlive the store.
  rocksdb::Env* env = nullptr;
};

struct StateStoreStats {
  uint64_t batches = 0;   // batches committed
  uint64_t groups = 0;    // RocksDB writes (fsyncs) they took
};

class StateStore {
 public:
  // Opens (creating if needed) the database in `dir`. Errors: InvalidArgument
  // if `dir` exists and is not a directory, Unavailable if another process
  // holds the database lock, DataLoss on corruption, with the path.
  static absl::StatusOr<std::unique_ptr<StateStore>> Open(const std::string& dir,
                                                         const StateStoreOptions& options = {});
  ~StateStore();
  StateStore(const StateStore&) = delete;
  StateStore& operator=(const StateStore&) = delete;

  // Queues `batch` and returns its ticket; tickets increase by one per call.
  // NOTE: thread-safe and non-blocking (no I/O).
  uint64_t Enqueue(StateBatch batch);
  // Returns once every batch up to `ticket` is durable. The first failed write
  // (IOError -> Internal/ResourceExhausted with the path) is sticky: it and all
  // later calls return it, since memory and disk no longer agree; the owner
  // must restart from disk.
  absl::Status WaitDurable(uint64_t ticket);
  // Enqueue + WaitDurable.
  absl::Status Commit(StateBatch batch) { return WaitDurable(Enqueue(std::move(batch))); }

  // The committed value, or nullopt if the key is absent.
  absl::StatusOr<std::optional<std::string>> Get(StateFamily family, std::string_view key) const;
  // Calls fn(key, value) for every key starting with `prefix`, in key order,
  // until fn returns false. A non-empty `from` starts the walk at the first
  // key >= from instead of at the prefix.
  absl::Status Scan(StateFamily family, std::string_view prefix,
                    const std::function<bool(std::string_view key, std::string_view value)>& fn,
                    std::string_view from = {}) const;

  // OK, or the sticky write failure above: a store that returns it takes no
  // more writes, so whoever serves from it can make no more progress.
  absl::Status health() const;

  StateStoreStats stats() const;
  const std::string& dir() const { return dir_; }

 private:
  struct Db;
  StateStore(std::string dir, StateStoreOptions options, std::unique_ptr<Db> db);
  absl::Status WriteGroup(const std::vector<StateBatch>& group);

  std::string dir_;
  StateStoreOptions options_;
  std::unique_ptr<Db> db_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<StateBatch> pending_;   // queued, not yet handed to a writer
  uint64_t enqueued_ = 0;             // ticket of the newest queued batch
  uint64_t durable_ = 0;              // every ticket <= this is on disk
  bool writing_ = false;              // a caller is writing a group now
  absl::Status sticky_;               // first write failure
  StateStoreStats stats_;
};

}  // namespace qf::storage
