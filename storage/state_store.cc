#include "storage/state_store.h"

#include <sys/stat.h>

#include <array>
#include <utility>

#include "absl/strings/str_cat.h"
#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "rocksdb/write_batch.h"
#include "storage/state_log.h"

namespace qf::storage {
namespace {

// "default" is rocksdb::kDefaultColumnFamilyName (not constexpr).
constexpr std::array<const char*, kNumStateFamilies> kFamilyNames = {
    "default", "jobs", "tasks", "leases", "results", "events"};

// rocksdb::Status -> absl::Status, naming the database and the operation.
// This is the only place RocksDB codes are translated.
absl::Status FromRocks(const rocksdb::Status& s, const std::string& op, const std::string& dir) {
  if (s.ok()) return absl::OkStatus();
  std::string msg = absl::StrCat(dir, ": state store ", op, " failed: ", s.ToString());
  if (s.IsNotFound() || s.IsPathNotFound()) return absl::NotFoundError(msg);
  if (s.IsCorruption()) return absl::DataLossError(msg);
  if (s.IsNoSpace()) return absl::ResourceExhaustedError(msg);
  if (s.IsBusy() || s.IsTryAgain()) return absl::UnavailableError(msg);
  if (s.IsInvalidArgument()) return absl::InvalidArgumentError(msg);
  // The LOCK file held by another process (EAGAIN) or by this one: IOError.
  // Other IOErrors on LOCK (a read-only disk) are not a second coordinator.
  for (const char* held : {"Resource temporarily unavailable", "lock hold by current process"}) {
    if (s.IsIOError() && s.ToString().find(held) != std::string::npos)
      return absl::UnavailableError(absl::StrCat(msg, " (is another coordinator using this --state dir?)"));
  }
  return absl::InternalError(msg);
}

}  // namespace

std::string_view StateFamilyName(StateFamily family) {
  return kFamilyNames[static_cast<int>(family)];
}

struct StateStore::Db {
  std::unique_ptr<rocksdb::DB> db;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;  // indexed by StateFamily
  ~Db() {
    for (auto* h : handles) {
      if (h != nullptr) db->DestroyColumnFamilyHandle(h).PermitUncheckedError();
    }
    handles.clear();
    if (db) db->Close().PermitUncheckedError();
  }
  rocksdb::ColumnFamilyHandle* cf(StateFamily f) const { return handles[static_cast<int>(f)]; }
};

absl::StatusOr<std::unique_ptr<StateStore>> StateStore::Open(const std::string& dir,
                                                             const StateStoreOptions& options) {
  struct stat st;
  if (::stat(dir.c_str(), &st) == 0 && !S_ISDIR(st.st_mode))
    return absl::InvalidArgumentError(absl::StrCat(dir, ": --state must be a directory"));

  rocksdb::DBOptions db_options;
  db_options.create_if_missing = true;
  db_options.create_missing_column_families = true;
  // Group commits already batch the syncs; keep the WAL from growing without bound.
  db_options.max_total_wal_size = 256ull << 20;
  db_options.info_log = OpenStateLog(dir);
  if (options.env != nullptr) db_options.env = options.env;  // not RocksDB's: it aborts on a full disk (state_log.h)

  std::vector<rocksdb::ColumnFamilyDescriptor> families;
  for (int i = 0; i < kNumStateFamilies; ++i) {
    rocksdb::ColumnFamilyOptions cf_options;
    if (static_cast<StateFamily>(i) == StateFamily::kResults) {
      cf_options.enable_blob_files = true;
      cf_options.min_blob_size = options.min_blob_size;
      cf_options.enable_blob_garbage_collection = true;
    }
    families.emplace_back(std::string(kFamilyNames[i]), cf_options);
  }
  auto db = std::make_unique<Db>();
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(db_options, dir, families, &db->handles, &raw);
  if (!s.ok()) return FromRocks(s, "open", dir);
  db->db.reset(raw);
  return std::unique_ptr<StateStore>(new StateStore(dir, options, std::move(db)));
}

StateStore::StateStore(std::string dir, StateStoreOptions options, std::unique_ptr<Db> db)
    : dir_(std::move(dir)), options_(options), db_(std::move(db)) {}

StateStore::~StateStore() {
  // Wait for an in-flight group so the DB is not closed under a writer.
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return !writing_; });
}

uint64_t StateStore::Enqueue(StateBatch batch) {
  std::lock_guard<std::mutex> lock(mu_);
  pending_.push_back(std::move(batch));
  return ++enqueued_;
}

absl::Status StateStore::WaitDurable(uint64_t ticket) {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    if (!sticky_.ok()) return sticky_;
    if (durable_ >= ticket) return absl::OkStatus();
    if (writing_) {
      cv_.wait(lock);
      continue;
    }
    // Become the writer for everything queued so far (leader/follower group commit).
    writing_ = true;
    std::vector<StateBatch> group = std::move(pending_);
    pending_.clear();
    const uint64_t last = enqueued_;
    lock.unlock();
    absl::Status s = WriteGroup(group);
    lock.lock();
    writing_ = false;
    if (s.ok()) {
      durable_ = last;
      stats_.batches += group.size();
      stats_.groups += 1;
    } else {
      sticky_ = s;
    }
    cv_.notify_all();
  }
}

absl::Status StateStore::health() const {
  std::lock_guard<std::mutex> lock(mu_);
  return sticky_;
}

absl::Status StateStore::WriteGroup(const std::vector<StateBatch>& group) {
  rocksdb::WriteBatch wb;
  for (const StateBatch& batch : group) {
    for (const StateBatch::Op& op : batch.ops()) {
      rocksdb::Status s = op.is_delete ? wb.Delete(db_->cf(op.family), op.key)
                                       : wb.Put(db_->cf(op.family), op.key, op.value);
      if (!s.ok()) return FromRocks(s, "batch", dir_);
    }
  }
  if (wb.Count() == 0) return absl::OkStatus();
  rocksdb::WriteOptions wo;
  wo.sync = options_.sync;
  return FromRocks(db_->db->Write(wo, &wb), "write", dir_);
}

absl::StatusOr<std::optional<std::string>> StateStore::Get(StateFamily family,
                                                           std::string_view key) const {
  std::string value;
  rocksdb::Status s = db_->db->Get(rocksdb::ReadOptions(), db_->cf(family),
                                   rocksdb::Slice(key.data(), key.size()), &value);
  if (s.IsNotFound()) return std::optional<std::string>();
  if (!s.ok()) return FromRocks(s, absl::StrCat("get in ", kFamilyNames[static_cast<int>(family)]), dir_);
  return std::optional<std::string>(std::move(value));
}

absl::Status StateStore::Scan(
    StateFamily family, std::string_view prefix,
    const std::function<bool(std::string_view key, std::string_view value)>& fn,
    std::string_view from) const {
  std::unique_ptr<rocksdb::Iterator> it(db_->db->NewIterator(rocksdb::ReadOptions(), db_->cf(family)));
  std::string_view start = from.empty() ? prefix : from;
  for (it->Seek(rocksdb::Slice(start.data(), start.size())); it->Valid(); it->Next()) {
    rocksdb::Slice k = it->key();
    if (!k.starts_with(rocksdb::Slice(prefix.data(), prefix.size()))) break;
    rocksdb::Slice v = it->value();
    if (!fn(std::string_view(k.data(), k.size()), std::string_view(v.data(), v.size()))) break;
  }
  return FromRocks(it->status(), absl::StrCat("scan of ", kFamilyNames[static_cast<int>(family)]), dir_);
}

StateStoreStats StateStore::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

}  // namespace qf::storage
