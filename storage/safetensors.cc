#include "storage/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/fs.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace qf::storage {
namespace {

using json = nlohmann::json;

constexpr char kMetadataKey[] = "__metadata__";
constexpr char kSingleFile[] = "model.safetensors";
constexpr char kIndexFile[] = "model.safetensors.index.json";

struct DTypeInfo {
  DType dtype;
  std::string_view name;
  size_t size;
};

// One row per dtype; ParseDType, DTypeName and DTypeSize all read this table.
constexpr std::array<DTypeInfo, 15> kDTypes = {{
    {DType::kF64, "F64", 8},     {DType::kF32, "F32", 4},   {DType::kF16, "F16", 2},
    {DType::kBF16, "BF16", 2},   {DType::kI64, "I64", 8},   {DType::kI32, "I32", 4},
    {DType::kI16, "I16", 2},     {DType::kI8, "I8", 1},     {DType::kU8, "U8", 1},
    {DType::kBool, "BOOL", 1},   {DType::kU64, "U64", 8},   {DType::kU32, "U32", 4},
    {DType::kU16, "U16", 2},     {DType::kF8E4M3, "F8_E4M3", 1},
    {DType::kF8E5M2, "F8_E5M2", 1},
}};

const DTypeInfo* FindDType(DType d) {
  for (const DTypeInfo& info : kDTypes)
    if (info.dtype == d) return &info;
  return nullptr;
}

// NOTE: Debian's Abseil is built with its own string_view class, so
// std::string_view never goes into StrCat/StrJoin directly.
std::string DTypeStr(DType d) { return std::string(DTypeName(d)); }

std::string KnownDTypeList() {
  std::string out;
  for (const DTypeInfo& info : kDTypes) absl::StrAppend(&out, out.empty() ? "" : ", ", std::string(info.name));
  return out;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// numel * element size with overflow detection; false on a negative dim or overflow.
bool ByteSize(const std::vector<int64_t>& shape, size_t elem, uint64_t* out) {
  uint64_t n = elem;
  for (int64_t d : shape) {
    if (d < 0) return false;
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) return false;
  }
  *out = n;
  return true;
}

absl::Status ErrnoError(int err, const std::string& path, const char* op) {
  std::string msg = absl::StrCat(path, ": ", op, " failed: ", std::strerror(err));
  if (err == ENOENT) return absl::NotFoundError(msg);
  if (err == EACCES || err == EPERM) return absl::PermissionDeniedError(msg);
  if (err == ENOSPC) return absl::ResourceExhaustedError(msg);
  return absl::InternalError(msg);
}

std::string JoinPath(const std::string& dir, const std::string& name) {
  return (std::filesystem::path(dir) / name).string();
}

}  // namespace

// ---------------------------------------------------------------- dtypes ---

absl::StatusOr<DType> ParseDType(std::string_view s) {
  for (const DTypeInfo& info : kDTypes)
    if (info.name == s) return info.dtype;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown dtype '", std::string(s), "' (expected one of ", KnownDTypeList(), ")"));
}

std::string_view DTypeName(DType d) {
  const DTypeInfo* info = FindDType(d);
  return info ? info->name : std::string_view("?");
}

size_t DTypeSize(DType d) {
  const DTypeInfo* info = FindDType(d);
  return info ? info->size : 0;
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;   // validated at Open: no overflow, no negatives
  return n;
}

// ---------------------------------------------------------------- reader ---

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(map_, map_size_);
}

absl::StatusOr<uint64_t> SafetensorsDataOffset(const char first8[8], uint64_t file_size, const std::string& path) {
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<uint8_t>(first8[i]);
  if (header_len > kMaxHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": header length ", header_len,
                                                   " exceeds the limit of ", kMaxHeaderBytes,
                                                   " bytes (corrupt file?)"));
  }
  if (header_len > file_size - 8) {
    return absl::DataLossError(absl::StrCat(path, ": header length ", header_len, " runs past the end of the ",
                                            file_size, "-byte file (expected <= ", file_size - 8,
                                            "; truncated?)"));
  }
  return 8 + header_len;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(errno, path, "open");
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return ErrnoError(err, path, "stat");
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file (expected a safetensors file)"));
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) {
    ::close(fd);
    return absl::DataLossError(absl::StrCat(path, ": file is ", file_size,
                                            " bytes, shorter than the 8-byte header length (truncated?)"));
  }
  void* map = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  int map_err = errno;
  ::close(fd);   // the mapping keeps the file alive
  if (map == MAP_FAILED) return ErrnoError(map_err, path, "mmap");
  f->map_ = map;
  f->map_size_ = file_size;

  const char* bytes = static_cast<const char*>(map);
  QF_ASSIGN_OR_RETURN(const uint64_t data_offset, SafetensorsDataOffset(bytes, file_size, path));
  const uint64_t header_len = data_offset - 8;
  std::string_view header(bytes + 8, header_len);
  std::string_view data_area(bytes + 8 + header_len, file_size - 8 - header_len);
  QF_RETURN_IF_ERROR(f->ParseHeader(header, data_area));
  return f;
}

absl::Status SafetensorsFile::ParseHeader(std::string_view header, std::string_view data_area) {
  // Duplicate top-level keys would silently shadow each other in nlohmann's
  // object; record the first one and refuse the file.
  std::set<std::string> seen;
  std::string duplicate;
  auto on_event = [&](int depth, json::parse_event_t ev, json& parsed) {
    if (ev == json::parse_event_t::key && depth == 1) {
      const std::string& key = parsed.get_ref<const std::string&>();
      if (!seen.insert(key).second && duplicate.empty()) duplicate = key;
    }
    return true;
  };
  json doc;
  try {
    doc = json::parse(header.begin(), header.end(), on_event);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": header is not valid JSON (", e.what(), ")"));
  }
  if (!doc.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": header is a JSON ", doc.type_name(), ", expected an object"));
  }
  if (!duplicate.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": header lists key '", absl::CEscape(duplicate),
                     "' twice (expected unique tensor names)"));
  }

  struct Range { uint64_t begin, end; const std::string* name; };
  std::vector<Range> ranges;
  for (auto it = doc.begin(); it != doc.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == kMetadataKey) {
      if (!v.is_object())
        return absl::InvalidArgumentError(absl::StrCat(path_, ": __metadata__ is a JSON ", v.type_name(),
                                                       ", expected an object of strings"));
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          return absl::InvalidArgumentError(absl::StrCat(path_, ": __metadata__['", absl::CEscape(m.key()),
                                                         "'] is a JSON ", m.value().type_name(),
                                                         ", expected a string"));
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = absl::StrCat(path_, ": tensor '", absl::CEscape(name), "': ");
    if (!v.is_object())
      return absl::InvalidArgumentError(absl::StrCat(where, "entry is a JSON ", v.type_name(),
                                                     ", expected an object with dtype, shape, data_offsets"));
    auto dt = v.find("dtype"), sh = v.find("shape"), off = v.find("data_offsets");
    if (dt == v.end() || !dt->is_string())
      return absl::InvalidArgumentError(absl::StrCat(where, "'dtype' missing or not a string"));
    absl::StatusOr<DType> dtype = ParseDType(dt->get_ref<const std::string&>());
    if (!dtype.ok()) return absl::InvalidArgumentError(absl::StrCat(where, dtype.status().message()));
    if (sh == v.end() || !sh->is_array())
      return absl::InvalidArgumentError(absl::StrCat(where, "'shape' missing or not an array"));
    std::vector<int64_t> shape;
    for (const json& d : *sh) {
      if (!d.is_number_integer())
        return absl::InvalidArgumentError(absl::StrCat(where, "shape ", sh->dump(), " holds ", d.dump(),
                                                       ", expected non-negative integers"));
      shape.push_back(d.get<int64_t>());
      if (shape.back() < 0)
        return absl::InvalidArgumentError(absl::StrCat(where, "shape ", sh->dump(),
                                                       " has a negative dimension, expected non-negative"));
    }
    if (off == v.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
        !(*off)[1].is_number_unsigned())
      return absl::InvalidArgumentError(absl::StrCat(
          where, "data_offsets ", off == v.end() ? std::string("missing") : off->dump(),
          ", expected [begin, end] of two non-negative integers"));
    uint64_t begin = (*off)[0].get<uint64_t>(), end = (*off)[1].get<uint64_t>();
    if (begin > end)
      return absl::InvalidArgumentError(
          absl::StrFormat("%sdata_offsets [%d, %d] have begin > end", where, begin, end));
    uint64_t nbytes = 0;
    if (!ByteSize(shape, DTypeSize(*dtype), &nbytes))
      return absl::InvalidArgumentError(absl::StrCat(where, "shape ", ShapeString(shape), " overflows 64 bits"));
    if (nbytes != end - begin)
      return absl::InvalidArgumentError(absl::StrFormat(
          "%sshape %s of %s needs %d bytes, but data_offsets [%d, %d] span %d", where, ShapeString(shape),
          DTypeStr(*dtype), nbytes, begin, end, end - begin));
    if (end > data_area.size())
      return absl::DataLossError(absl::StrFormat("%sdata_offsets [%d, %d] end past data area size %d (truncated?)",
                                                 where, begin, end, data_area.size()));
    TensorView& t = tensors_[name];
    t.name = name;
    t.dtype = *dtype;
    t.shape = std::move(shape);
    t.data = data_area.substr(begin, end - begin);
    ranges.push_back({begin, end, &t.name});
  }

  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) {
    return std::tie(a.begin, a.end, *a.name) < std::tie(b.begin, b.end, *b.name);
  });
  for (size_t i = 1; i < ranges.size(); ++i) {
    const Range& prev = ranges[i - 1];
    const Range& cur = ranges[i];
    if (cur.begin < prev.end)
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: tensor '%s': data_offsets [%d, %d] overlap tensor '%s' at [%d, %d] (expected disjoint ranges)",
          path_, absl::CEscape(*cur.name), cur.begin, cur.end, absl::CEscape(*prev.name), prev.begin, prev.end));
  }
  names_.reserve(ranges.size());
  for (const Range& r : ranges) names_.push_back(*r.name);
  return absl::OkStatus();
}

bool SafetensorsFile::Has(std::string_view name) const { return tensors_.find(name) != tensors_.end(); }

absl::StatusOr<const TensorView*> SafetensorsFile::Get(std::string_view name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end())
    return absl::NotFoundError(
        absl::StrCat(path_, ": tensor '", std::string(name), "' not found (file holds ", tensors_.size(), " tensors)"));
  return &it->second;
}

// ------------------------------------------------------------ checkpoint ---

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& dir) {
  std::unique_ptr<Checkpoint> ck(new Checkpoint());
  ck->dir_ = dir;
  const std::string single = JoinPath(dir, kSingleFile);
  const std::string index = JoinPath(dir, kIndexFile);
  if (PathExists(single)) {
    ck->source_ = kSingleFile;
    QF_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> f, SafetensorsFile::Open(single));
    for (const std::string& name : f->names()) ck->where_[name] = f.get();
    ck->files_.push_back(std::move(f));
    return ck;
  }
  if (!PathExists(index)) {
    return absl::NotFoundError(absl::StrCat(dir, ": no ", kSingleFile, " or ", kIndexFile,
                                            " (expected an HF safetensors checkpoint directory)"));
  }
  ck->source_ = kIndexFile;
  QF_ASSIGN_OR_RETURN(std::string text, ReadFileToString(index));
  json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded())
    return absl::InvalidArgumentError(absl::StrCat(index, ": not valid JSON (expected {\"weight_map\": ...})"));
  if (!doc.is_object())
    return absl::InvalidArgumentError(
        absl::StrCat(index, ": is a JSON ", doc.type_name(), ", expected an object with 'weight_map'"));
  auto wm = doc.find("weight_map");
  if (wm == doc.end() || !wm->is_object())
    return absl::InvalidArgumentError(absl::StrCat(index, ": 'weight_map' missing or not an object"));

  std::map<std::string, const SafetensorsFile*> opened;
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    const std::string& tensor = it.key();
    // Shard names come from an untrusted index: plain file names only, so the
    // index cannot point outside its directory.
    if (!it.value().is_string() || !IsPlainFileName(it.value().get<std::string>()))
      return absl::InvalidArgumentError(absl::StrCat(index, ": weight_map['", absl::CEscape(tensor), "'] is ",
                                                     it.value().dump(),
                                                     ", expected a shard file name in the same directory"));
    const std::string shard = it.value().get<std::string>();
    auto found = opened.find(shard);
    if (found == opened.end()) {
      absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(JoinPath(dir, shard));
      if (!f.ok())
        return absl::Status(f.status().code(), absl::StrCat(index, ": shard '", shard, "' (listed for tensor '",
                                                            absl::CEscape(tensor), "'): ", f.status().message()));
      found = opened.emplace(shard, f->get()).first;
      ck->files_.push_back(*std::move(f));
    }
    if (!found->second->Has(tensor))
      return absl::InvalidArgumentError(absl::StrCat(index, ": tensor '", absl::CEscape(tensor),
                                                     "' is mapped to shard '", shard, "', which does not contain it"));
    ck->where_[tensor] = found->second;
  }
  return ck;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(where_.size());
  for (const auto& [name, file] : where_) out.push_back(name);
  return out;
}

bool Checkpoint::Has(std::string_view name) const { return where_.find(name) != where_.end(); }

const SafetensorsFile* Checkpoint::FileOf(std::string_view name) const {
  auto it = where_.find(name);
  return it == where_.end() ? nullptr : it->second;
}

absl::StatusOr<const TensorView*> Checkpoint::Get(std::string_view name) const {
  auto it = where_.find(name);
  if (it == where_.end())
    return absl::NotFoundError(absl::StrCat(dir_, ": tensor '", std::string(name), "' not found (expected in ", source_,
                                            ", which lists ", where_.size(), " tensors)"));
  return it->second->Get(name);
}

// ---------------------------------------------------------------- writer ---

namespace {

// Streams header + tensor bytes into a temp file, fsyncs, renames onto
// `path`: readers see the old file or the new one, never a torn one, and the
// (possibly multi-GB) payload is never assembled in one buffer.
class AtomicFileWriter {
 public:
  static absl::StatusOr<AtomicFileWriter> Create(const std::string& path) {
    static std::atomic<uint64_t> counter{0};
    std::string tmp = absl::StrCat(path, ".tmp-", ::getpid(), "-", counter.fetch_add(1));
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return ErrnoError(errno, tmp, "create");
    return AtomicFileWriter(path, std::move(tmp), fd);
  }
  AtomicFileWriter(AtomicFileWriter&& o) noexcept
      : path_(std::move(o.path_)), tmp_(std::move(o.tmp_)), fd_(std::exchange(o.fd_, -1)) {}
  AtomicFileWriter& operator=(AtomicFileWriter&&) = delete;
  ~AtomicFileWriter() {
    if (fd_ >= 0) {   // not committed: drop the partial temp file
      ::close(fd_);
      ::unlink(tmp_.c_str());
    }
  }

  absl::Status Append(std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ::write(fd_, data.data(), data.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoError(errno, tmp_, "write");
      }
      data.remove_prefix(static_cast<size_t>(n));
    }
    return absl::OkStatus();
  }

  // Appends `len` bytes of `src` from `offset`: copy_file_range keeps them out
  // of user space (multi-GB spill files); pread + write where the kernel or the
  // file system refuses it.
  absl::Status AppendFrom(int src, uint64_t offset, uint64_t len, const std::string& what) {
    auto off = static_cast<off_t>(offset);
    while (len > 0 && use_copy_range_) {
      ssize_t n = ::copy_file_range(src, &off, fd_, nullptr, len, 0);
      if (n > 0) {
        len -= static_cast<uint64_t>(n);
        continue;
      }
      if (n == 0) return absl::DataLossError(absl::StrCat(what, ": source ends ", len, " bytes short"));
      if (errno == EINTR) continue;
      if (errno != EXDEV && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP && errno != EPERM)
        return ErrnoError(errno, tmp_, "copy_file_range");
      use_copy_range_ = false;
    }
    std::string buf(std::min<uint64_t>(len, uint64_t{16} << 20), '\0');
    while (len > 0) {
      ssize_t n = ::pread(src, buf.data(), std::min<uint64_t>(len, buf.size()), off);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return ErrnoError(errno, what, "read");
      if (n == 0) return absl::DataLossError(absl::StrCat(what, ": source ends ", len, " bytes short"));
      QF_RETURN_IF_ERROR(Append(std::string_view(buf.data(), static_cast<size_t>(n))));
      off += n;
      len -= static_cast<uint64_t>(n);
    }
    return absl::OkStatus();
  }

  absl::Status Commit() {
    int fd = std::exchange(fd_, -1);
    if (::fsync(fd) != 0 || ::close(fd) != 0) {
      int err = errno;
      ::unlink(tmp_.c_str());
      return ErrnoError(err, tmp_, "fsync/close");
    }
    if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
      int err = errno;
      ::unlink(tmp_.c_str());
      return ErrnoError(err, path_, "rename");
    }
    return absl::OkStatus();
  }

 private:
  AtomicFileWriter(std::string path, std::string tmp, int fd)
      : path_(std::move(path)), tmp_(std::move(tmp)), fd_(fd) {}
  std::string path_;
  std::string tmp_;
  int fd_;
  bool use_copy_range_ = true;
};

// Tensors sorted by name, after checking every input rule WriteFile documents.
absl::StatusOr<std::vector<const TensorRef*>> SortedChecked(const std::string& where,
                                                            const std::vector<TensorRef>& tensors) {
  std::vector<const TensorRef*> sorted;
  for (const TensorRef& t : tensors) sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(), [](const TensorRef* a, const TensorRef* b) { return a->name < b->name; });
  for (size_t i = 0; i < sorted.size(); ++i) {
    const TensorRef& t = *sorted[i];
    const std::string prefix = absl::StrCat(where, ": tensor '", t.name, "': ");
    if (t.name.empty() || t.name == kMetadataKey)
      return absl::InvalidArgumentError(absl::StrCat(prefix, "invalid name (expected non-empty, not __metadata__)"));
    if (i > 0 && sorted[i - 1]->name == t.name)
      return absl::InvalidArgumentError(absl::StrCat(prefix, "given twice (expected unique names)"));
    if (FindDType(t.dtype) == nullptr)
      return absl::InvalidArgumentError(absl::StrCat(prefix, "invalid dtype value ", static_cast<int>(t.dtype)));
    uint64_t nbytes = 0;
    if (!ByteSize(t.shape, DTypeSize(t.dtype), &nbytes))
      return absl::InvalidArgumentError(absl::StrCat(prefix, "shape ", ShapeString(t.shape),
                                                     " has a negative dimension or overflows"));
    if (nbytes != t.bytes())
      return absl::InvalidArgumentError(absl::StrCat(prefix, "shape ", ShapeString(t.shape), " of ",
                                                     DTypeStr(t.dtype), " needs ", nbytes, " bytes, data holds ",
                                                     t.bytes()));
  }
  return sorted;
}

// Header JSON padded with spaces so that the data area starts 8-aligned.
absl::StatusOr<std::string> BuildHeader(const std::string& path, const std::vector<const TensorRef*>& sorted,
                                        const std::map<std::string, std::string>& metadata) {
  json header = json::object();   // std::map-backed: keys come out sorted
  if (!metadata.empty()) header[kMetadataKey] = metadata;
  uint64_t offset = 0;
  for (const TensorRef* t : sorted) {
    header[t->name] = {{"dtype", DTypeName(t->dtype)},
                       {"shape", t->shape},
                       {"data_offsets", {offset, offset + t->bytes()}}};
    offset += t->bytes();
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const json::exception& e) {   // names or metadata that are not UTF-8
    return absl::InvalidArgumentError(absl::StrCat(path, ": cannot encode header (", e.what(),
                                                   "; expected UTF-8 names and metadata)"));
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

absl::Status WriteSorted(const std::string& path, const std::vector<const TensorRef*>& sorted,
                         const std::map<std::string, std::string>& metadata) {
  QF_ASSIGN_OR_RETURN(const std::string header, BuildHeader(path, sorted, metadata));
  char len[8];
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  QF_ASSIGN_OR_RETURN(AtomicFileWriter out, AtomicFileWriter::Create(path));
  QF_RETURN_IF_ERROR(out.Append(std::string_view(len, 8)));
  QF_RETURN_IF_ERROR(out.Append(header));
  for (const TensorRef* t : sorted) {
    if (t->fd < 0) {
      QF_RETURN_IF_ERROR(out.Append(t->data));
      continue;
    }
    QF_RETURN_IF_ERROR(out.AppendFrom(t->fd, t->offset, t->size, absl::StrCat(path, ": tensor '", t->name, "'")));
    // Best effort: a file system that cannot punch holes keeps the bytes.
    if (t->release && t->size > 0)
      (void)::fallocate(t->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(t->offset),
                        static_cast<off_t>(t->size));
  }
  return out.Commit();
}

std::vector<TensorRef> RefsOf(const std::vector<OwnedTensor>& tensors) {
  std::vector<TensorRef> refs;
  refs.reserve(tensors.size());
  for (const OwnedTensor& t : tensors) refs.push_back(RefOf(t));
  return refs;
}

}  // namespace

TensorRef RefOf(const OwnedTensor& t) { return TensorRef{t.name, t.dtype, t.shape, t.data}; }

absl::Status WriteFile(const std::string& path, const std::vector<OwnedTensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  const std::vector<TensorRef> refs = RefsOf(tensors);
  QF_ASSIGN_OR_RETURN(std::vector<const TensorRef*> sorted, SortedChecked(path, refs));
  return WriteSorted(path, sorted, metadata);
}

absl::StatusOr<std::vector<std::string>> WriteSharded(const std::string& dir,
                                                      const std::vector<OwnedTensor>& tensors,
                                                      uint64_t max_shard_bytes,
                                                      const std::map<std::string, std::string>& metadata) {
  return WriteSharded(dir, RefsOf(tensors), max_shard_bytes, metadata);
}

absl::StatusOr<std::vector<std::string>> WriteSharded(const std::string& dir, const std::vector<TensorRef>& tensors,
                                                      uint64_t max_shard_bytes,
                                                      const std::map<std::string, std::string>& metadata) {
  if (max_shard_bytes == 0)
    return absl::InvalidArgumentError(absl::StrCat(dir, ": max_shard_bytes is 0, expected > 0"));
  QF_ASSIGN_OR_RETURN(std::vector<const TensorRef*> sorted, SortedChecked(dir, tensors));
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(dir, ": create directory failed: ", ec.message()));

  // Greedy split in name order; a shard is closed when the next tensor would
  // push it past the limit (an oversized tensor still gets a shard).
  std::vector<std::vector<const TensorRef*>> shards(1);
  uint64_t total = 0, current = 0;
  for (const TensorRef* t : sorted) {
    if (current > 0 && current + t->bytes() > max_shard_bytes) {
      shards.emplace_back();
      current = 0;
    }
    shards.back().push_back(t);
    current += t->bytes();
    total += t->bytes();
  }
  if (shards.size() == 1) {
    QF_RETURN_IF_ERROR(WriteSorted(JoinPath(dir, kSingleFile), sorted, metadata));
    return std::vector<std::string>{kSingleFile};
  }

  std::vector<std::string> written;
  json weight_map = json::object();
  for (size_t i = 0; i < shards.size(); ++i) {
    std::string name = absl::StrFormat("model-%05d-of-%05d.safetensors", i + 1, shards.size());
    QF_RETURN_IF_ERROR(WriteSorted(JoinPath(dir, name), shards[i], metadata));
    for (const TensorRef* t : shards[i]) weight_map[t->name] = name;
    written.push_back(std::move(name));
  }
  json index = {{"metadata", {{"total_size", total}}}, {"weight_map", std::move(weight_map)}};
  QF_RETURN_IF_ERROR(WriteFileAtomic(JoinPath(dir, kIndexFile), index.dump(2) + "\n"));
  written.push_back(kIndexFile);
  return written;
}

// ------------------------------------------------------------ fp16/bf16 ---

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  const uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);           // Inf, or NaN with its payload
  } else if (exp != 0) {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;                                          // +-0
  } else {
    // Subnormal: mant * 2^-24, exactly representable as a normal float.
    float v = static_cast<float>(mant) * 0x1p-24f;
    return sign ? -v : v;
  }
  return std::bit_cast<float>(bits);
}

uint16_t FloatToHalf(float f) {
  const uint32_t bits = std::bit_cast<uint32_t>(f);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000);
  const uint32_t abs = bits & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7e00 | static_cast<uint16_t>((abs >> 13) & 0x1ff);  // quiet NaN
  if (abs >= 0x477ff000u) return sign | 0x7c00;   // >= 65520 rounds past the max half (65504): Inf
  if (abs < 0x38800000u) {
    // Result is a half subnormal (or zero): value / 2^-24, rounded to nearest
    // even on the integer mantissa. Below 2^-25 everything rounds to zero.
    if (abs < 0x33000000u) return sign;
    const uint32_t e = abs >> 23;                    // biased float exponent, 102..112
    const uint32_t m = (abs & 0x7fffff) | 0x800000;  // implicit bit restored
    const uint32_t shift = 126 - e;                  // places to drop, 14..24
    uint32_t q = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1))) ++q;   // may carry into the smallest normal: correct
    return sign | static_cast<uint16_t>(q);
  }
  // Normal: rebias the exponent and round the 13 dropped mantissa bits; a carry
  // propagates into the exponent (and at the top into Inf, excluded above).
  uint32_t h = ((abs >> 13) - ((127 - 15) << 10));
  const uint32_t rem = abs & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) ++h;
  return sign | static_cast<uint16_t>(h);
}

float BFloat16ToFloat(uint16_t h) { return std::bit_cast<float>(static_cast<uint32_t>(h) << 16); }

float FloatElement(DType d, const char* p) {
  uint16_t h;
  float f;
  switch (d) {
    case DType::kF16: std::memcpy(&h, p, 2); return HalfToFloat(h);
    case DType::kBF16: std::memcpy(&h, p, 2); return BFloat16ToFloat(h);
    default: std::memcpy(&f, p, 4); return f;
  }
}

uint16_t FloatToBFloat16(float f) {
  const uint32_t bits = std::bit_cast<uint32_t>(f);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x0040);  // quiet NaN
  // Round to nearest even; overflow of the largest finite values carries into Inf, as IEEE wants.
  const uint32_t rounded = bits + 0x7fff + ((bits >> 16) & 1);
  return static_cast<uint16_t>(rounded >> 16);
}

namespace {

// A floating-point element is NaN or Inf exactly when every bit of its
// exponent field is set: one mask per dtype (E4M3's NaN also needs the
// mantissa's bits, so its mask takes them too).
struct NonFiniteMask {
  DType dtype;
  int width;
  uint64_t mask;
};
constexpr NonFiniteMask kNonFiniteMasks[] = {
    {DType::kF64, 8, 0x7ff0000000000000ull}, {DType::kF32, 4, 0x7f800000u}, {DType::kF16, 2, 0x7c00u},
    {DType::kBF16, 2, 0x7f80u},              {DType::kF8E5M2, 1, 0x7cu},    {DType::kF8E4M3, 1, 0x7fu},
};

// Blocks of this many elements are tested with no early exit, so that the
// inner loop stays branch-free and vectorizes; the block that holds one is
// scanned again for its index.
constexpr int64_t kFiniteBlock = 4096;

template <class U>
int64_t FirstNonFiniteOf(const char* data, int64_t n, U mask) {
  const auto bad = [&](int64_t i) {
    U x;
    std::memcpy(&x, data + i * sizeof(U), sizeof(U));  // views are not always aligned
    return (x & mask) == mask;
  };
  for (int64_t b = 0; b < n; b += kFiniteBlock) {
    const int64_t e = std::min(n, b + kFiniteBlock);
    bool any = false;
    for (int64_t i = b; i < e; ++i) any |= bad(i);
    if (!any) continue;
    for (int64_t i = b; i < e; ++i) {
      if (bad(i)) return i;
    }
  }
  return -1;
}

}  // namespace

int64_t FirstNonFinite(const TensorView& v) {
  for (const NonFiniteMask& m : kNonFiniteMasks) {
    if (m.dtype != v.dtype) continue;
    const int64_t n = static_cast<int64_t>(v.data.size()) / m.width;
    switch (m.width) {
      case 8: return FirstNonFiniteOf<uint64_t>(v.data.data(), n, m.mask);
      case 4: return FirstNonFiniteOf<uint32_t>(v.data.data(), n, static_cast<uint32_t>(m.mask));
      case 2: return FirstNonFiniteOf<uint16_t>(v.data.data(), n, static_cast<uint16_t>(m.mask));
      default: return FirstNonFiniteOf<uint8_t>(v.data.data(), n, static_cast<uint8_t>(m.mask));
    }
  }
  return -1;  // integers and bool
}

}  // namespace qf::storage
