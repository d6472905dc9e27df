// File: tests/fuzz/safetensors_fuzz.cc
//
// SafetensorsFile::Open on arbitrary bytes: the 8-byte header length, the
// JSON header and the data area. An accepted file must keep Open's promises:
// every named tensor resolves, its bytes are numel * dtype size, lie inside
// the data area, and do not overlap another tensor's.
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "storage/safetensors.h"
#include "tests/fuzz/fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using qf::fuzz::CheckRefusal;
  const std::string path =
      qf::fuzz::WriteScratch("model.safetensors", {reinterpret_cast<const char*>(data), size});
  auto file = qf::storage::SafetensorsFile::Open(path);
  if (!file.ok()) {
    CheckRefusal(file.status(), path);
    return 0;
  }
  qf::fuzz::NoteAccepted();
  std::vector<std::pair<const char*, const char*>> ranges;
  unsigned sum = 0;
  for (const std::string& name : (*file)->names()) {
    auto t = (*file)->Get(name);
    QF_FUZZ_CHECK(t.ok(), "listed tensor %s does not resolve", name.c_str());
    const qf::storage::TensorView& v = **t;
    QF_FUZZ_CHECK(v.numel() >= 0, "%s: negative numel", name.c_str());
    QF_FUZZ_CHECK(v.nbytes() == static_cast<size_t>(v.numel()) * qf::storage::DTypeSize(v.dtype),
                  "%s: %zu bytes for %lld elements", name.c_str(), v.nbytes(), static_cast<long long>(v.numel()));
    // Touch the first and last byte: a view past the mapping faults here.
    if (!v.data.empty()) sum += static_cast<unsigned char>(v.data.front()) + static_cast<unsigned char>(v.data.back());
    if (!v.data.empty()) ranges.emplace_back(v.data.data(), v.data.data() + v.data.size());
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    QF_FUZZ_CHECK(ranges[i - 1].second <= ranges[i].first, "tensor data overlaps");
  QF_FUZZ_CHECK(!(*file)->Get("\x01 no such tensor").ok(), "a missing tensor resolved");
  qf::fuzz::g_sink = sum;  // keeps the reads above from being optimized away
  return 0;
}
