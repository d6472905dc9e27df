// sentencepiece behind a plain C ABI, built as the module libqf_spm_plugin.so
// and loaded by worker/tokenizer.cc with dlopen(RTLD_NOW | RTLD_LOCAL |
// RTLD_DEEPBIND).
//
// Why a module: Debian's libsentencepiece.so.0 embeds protobuf 3.14 and exports
// those symbols; in one global symbol scope with gRPC's libprotobuf 3.21 the
// process crashes before main or aborts at model load. Loaded locally and with
// its own lookup scope first, each side keeps its own protobuf.
//
// Why no absl/gRPC include here: sentencepiece_processor.h declares
// `namespace absl { using std::string_view; }`, which clashes with Debian's
// Abseil (its absl::string_view is a class of its own).
//
// ABI (bump kSpmPluginAbiVersion, worker/spm_abi.h, on any change; tokenizer.cc
// refuses a mismatch):
//   int      qf_spm_abi_version(void);
//   void*    qf_spm_open(const char* model_path, char* err, size_t errlen);
//              null on failure, with the reason in err
//   int      qf_spm_encode(void* h, const char* text, size_t len,
//                          int32_t** ids, size_t* n, char* err, size_t errlen);
//              0 on success: *ids (free with qf_spm_free_ids) holds *n ids;
//              non-zero on failure, with the reason in err
//   void     qf_spm_free_ids(int32_t* ids);
//   int32_t  qf_spm_bos_id(void* h);      -1 when the model has no BOS piece
//   int32_t  qf_spm_eos_id(void* h);      -1 when the model has no EOS piece
//   int32_t  qf_spm_vocab_size(void* h);
//   int      qf_spm_piece(void* h, int32_t id, const char** piece, size_t* len,
//                         float* score, int32_t* type);
//              0 on success: *piece (valid while h is open, not NUL-ended)
//              holds *len bytes; *type is sentencepiece's piece type (1
//              normal, 2 unknown, 3 control, 5 unused, 6 byte); non-zero for
//              an id outside the vocabulary
//   void     qf_spm_close(void* h);
// No C++ exception crosses this boundary: every entry point catches.
// NOTE: qf_spm_encode may be called from several threads on one handle
// (SentencePieceProcessor::Encode is const and keeps no per-call state).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <sentencepiece_processor.h>

#include "worker/spm_abi.h"

#define QF_SPM_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

constexpr int kAbiVersion = qf::worker::kSpmPluginAbiVersion;

static_assert(sizeof(int) == sizeof(int32_t), "sentencepiece ids are int; the ABI hands out int32_t");

void SetError(char* err, size_t errlen, const std::string& msg) {
  if (err != nullptr && errlen > 0) std::snprintf(err, errlen, "%s", msg.c_str());
}

sentencepiece::SentencePieceProcessor* Processor(void* handle) {
  return static_cast<sentencepiece::SentencePieceProcessor*>(handle);
}

}  // namespace

QF_SPM_EXPORT int qf_spm_abi_version(void) { return kAbiVersion; }

QF_SPM_EXPORT void* qf_spm_open(const char* model_path, char* err, size_t errlen) {
  if (model_path == nullptr) {
    SetError(err, errlen, "null model path");
    return nullptr;
  }
  try {
    auto processor = std::make_unique<sentencepiece::SentencePieceProcessor>();
    const sentencepiece::util::Status status = processor->Load(std::string_view(model_path));
    if (!status.ok()) {
      SetError(err, errlen, std::string("sentencepiece cannot load the model: ") + status.ToString());
      return nullptr;
    }
    return processor.release();
  } catch (const std::exception& e) {
    SetError(err, errlen, std::string("sentencepiece load threw: ") + e.what());
  } catch (...) {
    SetError(err, errlen, "sentencepiece load threw an unknown exception");
  }
  return nullptr;
}

QF_SPM_EXPORT int qf_spm_encode(void* handle, const char* text, size_t len, int32_t** ids,
                                size_t* n, char* err, size_t errlen) {
  if (handle == nullptr || ids == nullptr || n == nullptr || (text == nullptr && len > 0)) {
    SetError(err, errlen, "qf_spm_encode: null argument");
    return 1;
  }
  *ids = nullptr;
  *n = 0;
  try {
    std::vector<int> out;
    const sentencepiece::util::Status status =
        Processor(handle)->Encode(std::string_view(text == nullptr ? "" : text, len), &out);
    if (!status.ok()) {
      SetError(err, errlen, std::string("sentencepiece encode failed: ") + status.ToString());
      return 1;
    }
    // malloc(0) may return null: always allocate at least one slot.
    auto* buf = static_cast<int32_t*>(std::malloc(std::max<size_t>(out.size(), 1) * sizeof(int32_t)));
    if (buf == nullptr) {
      SetError(err, errlen, "out of memory for " + std::to_string(out.size()) + " token ids");
      return 1;
    }
    if (!out.empty()) std::memcpy(buf, out.data(), out.size() * sizeof(int32_t));
    *ids = buf;
    *n = out.size();
    return 0;
  } catch (const std::exception& e) {
    SetError(err, errlen, std::string("sentencepiece encode threw: ") + e.what());
  } catch (...) {
    SetError(err, errlen, "sentencepiece encode threw an unknown exception");
  }
  return 1;
}

QF_SPM_EXPORT void qf_spm_free_ids(int32_t* ids) { std::free(ids); }

QF_SPM_EXPORT int32_t qf_spm_bos_id(void* handle) {
  return handle == nullptr ? -1 : Processor(handle)->bos_id();
}

QF_SPM_EXPORT int32_t qf_spm_eos_id(void* handle) {
  return handle == nullptr ? -1 : Processor(handle)->eos_id();
}

QF_SPM_EXPORT int32_t qf_spm_vocab_size(void* handle) {
  return handle == nullptr ? 0 : Processor(handle)->GetPieceSize();
}

QF_SPM_EXPORT int qf_spm_piece(void* handle, int32_t id, const char** piece, size_t* len, float* score,
                               int32_t* type) {
  if (handle == nullptr || piece == nullptr || len == nullptr || score == nullptr || type == nullptr) return 1;
  const sentencepiece::SentencePieceProcessor* p = Processor(handle);
  if (id < 0 || id >= p->GetPieceSize()) return 1;
  try {
    const std::string& s = p->IdToPiece(id);
    *piece = s.data();
    *len = s.size();
    *score = p->GetScore(id);
    // sentencepiece's ModelProto numbering (GGUF's token types use the same).
    *type = p->IsUnknown(id) ? 2 : p->IsControl(id) ? 3 : p->IsUnused(id) ? 5 : p->IsByte(id) ? 6 : 1;
    return 0;
  } catch (...) {
    return 1;
  }
}

QF_SPM_EXPORT void qf_spm_close(void* handle) { delete Processor(handle); }
