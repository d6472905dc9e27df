// A RocksDB Env whose files fail to grow once a byte budget is spent, as a
// full disk does (IOStatus::NoSpace, ENOSPC's message): for the state store's
// and the coordinator's full-disk tests, without root or a small filesystem.
#ifndef QF_TESTS_COORDINATOR_FULL_DISK_ENV_H_
#define QF_TESTS_COORDINATOR_FULL_DISK_ENV_H_

#include <atomic>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>

#include "rocksdb/env.h"
#include "rocksdb/file_system.h"

namespace qf::testing {

class FullDiskFs final : public rocksdb::FileSystemWrapper {
 public:
  FullDiskFs() : rocksdb::FileSystemWrapper(rocksdb::FileSystem::Default()) {}
  const char* Name() const override { return "FullDiskFs"; }

  // Bytes that may still be appended, over every file.
  void set_budget(int64_t bytes) { budget_ = bytes; }
  void unlimited() { budget_ = std::numeric_limits<int64_t>::max(); }
  bool refused() const { return refused_ > 0; }

  rocksdb::IOStatus NewWritableFile(const std::string& f, const rocksdb::FileOptions& o,
                                    std::unique_ptr<rocksdb::FSWritableFile>* r, rocksdb::IODebugContext* d) override {
    rocksdb::IOStatus s = target()->NewWritableFile(f, o, r, d);
    if (s.ok()) *r = std::make_unique<File>(std::move(*r), this);
    return s;
  }
  rocksdb::IOStatus ReopenWritableFile(const std::string& f, const rocksdb::FileOptions& o,
                                       std::unique_ptr<rocksdb::FSWritableFile>* r,
                                       rocksdb::IODebugContext* d) override {
    rocksdb::IOStatus s = target()->ReopenWritableFile(f, o, r, d);
    if (s.ok()) *r = std::make_unique<File>(std::move(*r), this);
    return s;
  }

 private:
  class File final : public rocksdb::FSWritableFileOwnerWrapper {
   public:
    File(std::unique_ptr<rocksdb::FSWritableFile> f, FullDiskFs* fs)
        : rocksdb::FSWritableFileOwnerWrapper(std::move(f)), fs_(fs) {}
    rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& o,
                             rocksdb::IODebugContext* d) override {
      if (!fs_->Take(data.size())) return NoSpace();
      return target()->Append(data, o, d);
    }
    rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& o,
                             const rocksdb::DataVerificationInfo& v, rocksdb::IODebugContext* d) override {
      if (!fs_->Take(data.size())) return NoSpace();
      return target()->Append(data, o, v, d);
    }
    rocksdb::IOStatus PositionedAppend(const rocksdb::Slice& data, uint64_t off, const rocksdb::IOOptions& o,
                                       rocksdb::IODebugContext* d) override {
      if (!fs_->Take(data.size())) return NoSpace();
      return target()->PositionedAppend(data, off, o, d);
    }
    rocksdb::IOStatus PositionedAppend(const rocksdb::Slice& data, uint64_t off, const rocksdb::IOOptions& o,
                                       const rocksdb::DataVerificationInfo& v, rocksdb::IODebugContext* d) override {
      if (!fs_->Take(data.size())) return NoSpace();
      return target()->PositionedAppend(data, off, o, v, d);
    }

   private:
    static rocksdb::IOStatus NoSpace() { return rocksdb::IOStatus::NoSpace("No space left on device"); }
    FullDiskFs* fs_;
  };

  bool Take(size_t n) {
    if (budget_.fetch_sub(static_cast<int64_t>(n)) >= static_cast<int64_t>(n)) return true;
    budget_.fetch_add(static_cast<int64_t>(n));
    ++refused_;
    return false;
  }

  std::atomic<int64_t> budget_{std::numeric_limits<int64_t>::max()};
  std::atomic<int> refused_{0};
};

// The Env a StateStoreOptions::env / CoordinatorOptions::store_env takes.
struct FullDiskEnv {
  std::shared_ptr<FullDiskFs> fs = std::make_shared<FullDiskFs>();
  std::unique_ptr<rocksdb::Env> env = rocksdb::NewCompositeEnv(fs);
};

}  // namespace qf::testing

#endif  // QF_TESTS_COORDINATOR_FULL_DISK_ENV_H_
