#include "common/fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace qf {
namespace fs = std::filesystem;

namespace {

absl::Status ErrnoStatus(int err, const char* op, const std::string& path) {
  std::string msg = absl::StrCat(path, ": ", op, " failed: ", std::strerror(err));
  switch (err) {
    case ENOENT: return absl::NotFoundError(msg);
    case EACCES:
    case EPERM:
    case EROFS: return absl::PermissionDeniedError(msg);
    case ENOSPC: return absl::ResourceExhaustedError(msg);
    default: return absl::InternalError(msg);
  }
}

absl::Status FsyncPath(const std::string& path, bool directory) {
  int fd = ::open(path.c_str(), (directory ? O_DIRECTORY : 0) | O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "open for fsync", path);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return ErrnoStatus(err, "fsync", path);
  return absl::OkStatus();
}

std::string ParentOf(const std::string& path) {
  fs::path p = fs::path(path).lexically_normal();
  if (p.has_filename() == false) p = p.parent_path();
  fs::path parent = p.parent_path();
  return parent.empty() ? std::string(".") : parent.string();
}

// The directory (or file) at `path` opened and flock()ed exclusively without
// waiting; -1 (errno kept) when it cannot be opened or locked: EWOULDBLOCK
// when someone holds the lock. The lock lives as long as the descriptor, so it
// goes with its process, however that ends.
int LockPath(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), O_RDONLY | (directory ? O_DIRECTORY : 0) | O_CLOEXEC);
  if (fd < 0) return -1;
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(fd);
    errno = err;
    return -1;
  }
  return fd;
}

// Removes every directory (or regular file) `parent/<name>` whose name
// `matches` and that no live writer holds flock()ed: a StagingDir's directory,
// an AtomicFileWriter's temp file. Best effort: what cannot be removed stays.
void RemoveUnlocked(const std::string& parent, bool directories, const std::function<bool(const std::string&)>& matches) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(parent, ec)) {
    if (!matches(e.path().filename().string())) continue;
    if (directories ? !e.is_directory(ec) : !e.is_regular_file(ec)) continue;
    const int fd = LockPath(e.path().string(), directories);
    if (fd < 0) continue;   // alive, not ours to open, or a file system without flock
    RemoveAll(e.path().string()).IgnoreError();
    ::close(fd);
  }
}

}  // namespace

absl::StatusOr<std::string> ReadFileToString(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return ErrnoStatus(errno, "stat", path);
  if (S_ISDIR(st.st_mode)) return absl::InvalidArgumentError(absl::StrCat(path, ": is a directory, expected a file"));
  std::ifstream in(path, std::ios::binary);
  if (!in) return ErrnoStatus(errno ? errno : EIO, "open", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read failed"));
  return ss.str();
}

absl::StatusOr<AtomicFileWriter> AtomicFileWriter::Create(const std::string& path) {
  // A killed writer's temp file (a multi-GB export) goes when the next one starts.
  const std::string prefix = absl::StrCat(fs::path(path).filename().string(), ".tmp-");
  RemoveUnlocked(ParentOf(path), /*directories=*/false,
                 [&](const std::string& name) { return name.compare(0, prefix.size(), prefix) == 0; });
  std::string tmp = absl::StrCat(path, ".tmp-", ::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    const int err = errno;  // named by the path asked for; the temp file is ours
    return ErrnoStatus(err, absl::StrCat("create temp file ", fs::path(tmp).filename().string()).c_str(), path);
  }
  ::flock(fd, LOCK_EX | LOCK_NB);  // held while we write; where flock is missing, no cleanup above
  return AtomicFileWriter(path, std::move(tmp), fd);
}

AtomicFileWriter::AtomicFileWriter(AtomicFileWriter&& other) noexcept
    : path_(std::move(other.path_)), tmp_(std::move(other.tmp_)), fd_(std::exchange(other.fd_, -1)),
      bytes_(other.bytes_) {}

AtomicFileWriter& AtomicFileWriter::operator=(AtomicFileWriter&& other) noexcept {
  if (this != &other) {
    Abandon();
    path_ = std::move(other.path_);
    tmp_ = std::move(other.tmp_);
    fd_ = std::exchange(other.fd_, -1);
    bytes_ = other.bytes_;
  }
  return *this;
}

AtomicFileWriter::~AtomicFileWriter() { Abandon(); }

void AtomicFileWriter::Abandon() {
  if (fd_ < 0) return;
  ::close(fd_);
  ::unlink(tmp_.c_str());
  fd_ = -1;
}

absl::Status AtomicFileWriter::Append(std::string_view data) {
  if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat(tmp_, ": write after commit or failure"));
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd_, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      Abandon();
      return ErrnoStatus(err, "write", tmp_);
    }
    off += static_cast<size_t>(n);
  }
  bytes_ += data.size();
  return absl::OkStatus();
}

absl::Status AtomicFileWriter::Commit() {
  if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat(tmp_, ": commit after commit or failure"));
  const int fd = std::exchange(fd_, -1);
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp_.c_str());
    return ErrnoStatus(err, "fsync/close", tmp_);
  }
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp_.c_str());
    return ErrnoStatus(err, "rename", path_);
  }
  return FsyncPath(ParentOf(path_), /*directory=*/true);
}

absl::Status WriteFileAtomic(const std::string& path, std::string_view data) {
  auto file = AtomicFileWriter::Create(path);
  if (!file.ok()) return file.status();
  if (absl::Status s = file->Append(data); !s.ok()) return s;
  return file->Commit();
}

bool IsPlainFileName(std::string_view name) {
  if (name.empty() || name == "." || name == "..") return false;
  for (const unsigned char c : name) {
    if (c == '/' || c < 0x20 || c == 0x7f) return false;
  }
  return true;
}

bool PathExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

bool IsDirectory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

absl::Status CopyFile(const std::string& from, const std::string& to) {
  std::error_code ec;
  fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
  if (ec) return absl::InternalError(absl::StrCat(from, " -> ", to, ": copy failed: ", ec.message()));
  return absl::OkStatus();
}

absl::Status RemoveAll(const std::string& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
  if (ec) return absl::InternalError(absl::StrCat(path, ": remove failed: ", ec.message()));
  return absl::OkStatus();
}

absl::Status CheckReplaceable(const std::string& final_path) {
  std::error_code ec;
  if (IsDirectory(final_path) && !fs::is_empty(final_path, ec) &&
      !PathExists(absl::StrCat(final_path, "/qforge-manifest.json"))) {
    return absl::FailedPreconditionError(absl::StrCat(
        final_path, ": exists, is not empty and is not a qforge artifact; refusing to overwrite"));
  }
  if (PathExists(final_path) && !IsDirectory(final_path)) {
    return absl::FailedPreconditionError(absl::StrCat(final_path, ": exists and is not a directory"));
  }
  return absl::OkStatus();
}

absl::StatusOr<StagingDir> StagingDir::Create(const std::string& final_path) {
  if (final_path.empty()) return absl::InvalidArgumentError("output path is empty");
  std::string parent = ParentOf(final_path);
  std::error_code ec;
  fs::create_directories(parent, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat(parent, ": cannot create output parent directory: ", ec.message()));
  QF_RETURN_IF_ERROR(CheckReplaceable(final_path));
  std::string base = fs::path(final_path).lexically_normal().filename().string();
  if (base.empty()) base = fs::path(final_path).lexically_normal().parent_path().filename().string();
  const std::string prefix = absl::StrCat(".", base, ".staging-");
  RemoveUnlocked(parent, /*directories=*/true, [&](const std::string& name) {
    return name.size() == prefix.size() + 6 && name.compare(0, prefix.size(), prefix) == 0;  // mkdtemp's XXXXXX
  });
  // A sweep in another process can remove a directory between our mkdtemp and
  // our flock; then the inode at the path is no longer ours: make another.
  for (int attempt = 0; attempt < 8; ++attempt) {
    std::string tmpl = absl::StrCat(parent, "/", prefix, "XXXXXX");
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (::mkdtemp(buf.data()) == nullptr) return ErrnoStatus(errno, "create staging directory in", parent);
    std::string path(buf.data());
    const int fd = LockPath(path, /*directory=*/true);
    if (fd < 0 && errno != EWOULDBLOCK && errno != ENOENT) {
      // No flock on this file system: unlocked, so never swept either (a sweep
      // there cannot lock anything).
      return StagingDir(std::move(path), final_path, -1);
    }
    struct stat by_fd {}, by_path {};
    if (fd >= 0 && ::fstat(fd, &by_fd) == 0 && ::stat(path.c_str(), &by_path) == 0 && by_fd.st_ino == by_path.st_ino &&
        by_fd.st_dev == by_path.st_dev) {
      return StagingDir(std::move(path), final_path, fd);
    }
    if (fd >= 0) ::close(fd);
  }
  return absl::UnavailableError(absl::StrCat(parent, ": staging directories for ", base,
                                             " keep disappearing (another process sweeping them?)"));
}

StagingDir::StagingDir(StagingDir&& other) noexcept
    : tmp_path_(std::move(other.tmp_path_)), final_path_(std::move(other.final_path_)),
      lock_fd_(std::exchange(other.lock_fd_, -1)), committed_(other.committed_) {
  other.committed_ = true;  // the moved-from object owns nothing
}

StagingDir& StagingDir::operator=(StagingDir&& other) noexcept {
  if (this != &other) {
    Release();
    tmp_path_ = std::move(other.tmp_path_);
    final_path_ = std::move(other.final_path_);
    lock_fd_ = std::exchange(other.lock_fd_, -1);
    committed_ = other.committed_;
    other.committed_ = true;
  }
  return *this;
}

void StagingDir::Release() {
  if (!committed_ && !tmp_path_.empty()) RemoveAll(tmp_path_).IgnoreError();
  if (lock_fd_ >= 0) ::close(std::exchange(lock_fd_, -1));
}

StagingDir::~StagingDir() { Release(); }

absl::Status StagingDir::Commit() {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(tmp_path_, ec)) {
    if (entry.is_regular_file()) {
      absl::Status s = FsyncPath(entry.path().string(), false);
      if (!s.ok()) return s;
    }
  }
  if (ec) return absl::InternalError(absl::StrCat(tmp_path_, ": list failed: ", ec.message()));
  // Permissions: mkdtemp makes 0700; artifacts are meant to be shared.
  ::chmod(tmp_path_.c_str(), 0755);
  std::string old;
  if (IsDirectory(final_path_)) {
    old = absl::StrCat(tmp_path_, ".old");
    if (::rename(final_path_.c_str(), old.c_str()) != 0) return ErrnoStatus(errno, "move aside", final_path_);
  }
  if (::rename(tmp_path_.c_str(), final_path_.c_str()) != 0) {
    int err = errno;
    if (!old.empty()) ::rename(old.c_str(), final_path_.c_str());
    return ErrnoStatus(err, "rename staging directory onto", final_path_);
  }
  committed_ = true;
  Release();   // committed: only the lock goes
  if (!old.empty()) RemoveAll(old).IgnoreError();
  return FsyncPath(ParentOf(final_path_), true);
}

}  // namespace qf
