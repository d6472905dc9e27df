// File: common/fs.h
//
// File-system helpers with Status contracts. Every error message names the
// path and the operation that failed.
//
//   QF_ASSIGN_OR_RETURN(std::string text, qf::ReadFileToString("data/calib.txt"));
//   QF_ASSIGN_OR_RETURN(qf::StagingDir dir, qf::StagingDir::Create("out/model-gptq"));
//   ... write files under dir.path() ...
//   QF_RETURN_IF_ERROR(dir.Commit());   // atomic rename onto out/model-gptq
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace qf {

// Whole file into memory. NotFound if missing; InvalidArgument if a directory.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

// Writes `data` to `path` via a temp file + fsync + rename, so readers see the
// old content or the new, never a torn file.
absl::Status WriteFileAtomic(const std::string& path, std::string_view data);

// The same for a file written piece by piece (a multi-GB export): appends go
// to `path`.tmp-<pid>; Commit() fsyncs it, renames it onto `path` and fsyncs
// the directory. Destroyed (or failed) before Commit, it removes the temp file
// and leaves `path` as it was; a killed writer's temp file (flock()ed while it
// lived) is removed by the next Create for the same path. Errors name the path
// and the operation.
//
//   QF_ASSIGN_OR_RETURN(qf::AtomicFileWriter f, qf::AtomicFileWriter::Create("out/model.gguf"));
//   QF_RETURN_IF_ERROR(f.Append(header));  ...  QF_RETURN_IF_ERROR(f.Commit());
class AtomicFileWriter {
 public:
  static absl::StatusOr<AtomicFileWriter> Create(const std::string& path);
  AtomicFileWriter(AtomicFileWriter&& other) noexcept;
  AtomicFileWriter& operator=(AtomicFileWriter&& other) noexcept;
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;
  ~AtomicFileWriter();

  absl::Status Append(std::string_view data);
  absl::Status Commit();
  uint64_t bytes() const { return bytes_; }  // appended so far

 private:
  AtomicFileWriter(std::string path, std::string tmp, int fd) : path_(std::move(path)), tmp_(std::move(tmp)), fd_(fd) {}
  void Abandon();  // closes and removes the temp file unless committed
  std::string path_, tmp_;
  int fd_ = -1;
  uint64_t bytes_ = 0;
};

bool PathExists(const std::string& path);
// A name inside one directory, as manifests and shard indexes list them: not
// empty, "." or "..", no '/', no NUL or other control character (a file name
// may hold a newline, but then no message naming it is one line).
bool IsPlainFileName(std::string_view name);
bool IsDirectory(const std::string& path);

// Copies a regular file byte for byte (tokenizer files into artifacts).
absl::Status CopyFile(const std::string& from, const std::string& to);

// Removes a file or a directory tree; OK when nothing is there.
absl::Status RemoveAll(const std::string& path);

// OK if an artifact may be written at final_path: nothing there, an empty
// directory, or a qforge artifact (it holds qforge-manifest.json).
// FailedPrecondition naming the path otherwise: we never clobber user data.
// Checked when a job is submitted (so a wrong --out costs no quantization)
// and again by StagingDir::Create.
absl::Status CheckReplaceable(const std::string& final_path);

// A sibling temp directory of `final_path` (same file system, so the rename is
// atomic). The destructor removes it unless Commit() succeeded: an error half
// way leaves no partial artifact behind. A process killed half way cannot run
// its destructor, so each staging directory is flock()ed while it lives, and
// Create() removes the unlocked ones it finds for the same final_path: a
// killed assembly's partial shards (tens of GB for 70B) do not pile up over
// retries.
class StagingDir {
 public:
  // CheckReplaceable's FailedPrecondition for what is at final_path;
  // PermissionDenied / InvalidArgument if the parent is not writable.
  static absl::StatusOr<StagingDir> Create(const std::string& final_path);

  StagingDir(StagingDir&& other) noexcept;
  StagingDir& operator=(StagingDir&& other) noexcept;
  StagingDir(const StagingDir&) = delete;
  StagingDir& operator=(const StagingDir&) = delete;
  ~StagingDir();

  const std::string& path() const { return tmp_path_; }
  const std::string& final_path() const { return final_path_; }

  // fsyncs the files, renames the temp directory onto final_path (replacing an
  // earlier qforge artifact there) and fsyncs the parent.
  absl::Status Commit();

 private:
  StagingDir(std::string tmp, std::string final_path, int lock_fd)
      : tmp_path_(std::move(tmp)), final_path_(std::move(final_path)), lock_fd_(lock_fd) {}
  void Release();   // removes the directory unless committed, drops the lock
  std::string tmp_path_;
  std::string final_path_;
  int lock_fd_ = -1;   // the directory itself, flock()ed while this lives
  bool committed_ = false;
};

}  // namespace qf
