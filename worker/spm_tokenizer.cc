#include "worker/spm_tokenizer.h"

#include <dlfcn.h>

#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/dl_module.h"
#include "common/status_macros.h"
#include "worker/spm_abi.h"

namespace qf::worker {
namespace {

// Mirrors the C ABI documented at the top of worker/spm_plugin.cc.
struct SpmPluginApi {
  static constexpr int kAbiVersion = kSpmPluginAbiVersion;
  static constexpr const char* kModuleName = "libqf_spm_plugin.so";

  void* (*open)(const char* model_path, char* err, size_t errlen);
  int (*encode)(void* handle, const char* text, size_t len, int32_t** ids, size_t* n, char* err, size_t errlen);
  void (*free_ids)(int32_t* ids);
  int32_t (*bos_id)(void* handle);
  int32_t (*eos_id)(void* handle);
  int32_t (*vocab_size)(void* handle);
  int (*piece)(void* handle, int32_t id, const char** piece, size_t* len, float* score, int32_t* type);
  void (*close)(void* handle);
};

constexpr size_t kErrLen = 1024;

template <typename Fn>
absl::Status Resolve(void* module, const char* name, Fn* out) {
  QF_ASSIGN_OR_RETURN(void* sym, ModuleSymbol(module, name));
  *out = reinterpret_cast<Fn>(sym);
  return absl::OkStatus();
}

absl::StatusOr<const SpmPluginApi*> OpenPlugin() {
  // RTLD_DEEPBIND: the plugin and libsentencepiece resolve their protobuf
  // symbols in their own scope first, never in libprotobuf 3.21 (gRPC).
  QF_ASSIGN_OR_RETURN(void* module, OpenModule(SpmPluginApi::kModuleName, RTLD_DEEPBIND));
  int (*abi_version)() = nullptr;
  QF_RETURN_IF_ERROR(Resolve(module, "qf_spm_abi_version", &abi_version));
  if (abi_version() != SpmPluginApi::kAbiVersion) {
    return absl::FailedPreconditionError(absl::StrCat(SpmPluginApi::kModuleName, ": ABI version ", abi_version(),
                                                      ", expected ", SpmPluginApi::kAbiVersion,
                                                      " (a stale build of the plugin?)"));
  }
  auto api = std::make_unique<SpmPluginApi>();
  QF_RETURN_IF_ERROR(Resolve(module, "qf_spm_open", &api->open));
  QF_RETURN_IF_ERROR(Resolve(module, "qf_spm_encode", &api->encode));
  QF_RETURN_IF_ERROR(Resolve(module, "qf_spm_free_ids", &api->free_ids));
  QF_RETURN_IF_ERROR(Resolve(module, "qf_spm_bos_id", &api->bos_id));
  QF_RETURN_IF_ERROR(Resolve(module, "qf_spm_eos_id", &api->eos_id));
  QF_RETURN_IF_ERROR(Resolve(module, "qf_spm_vocab_size", &api->vocab_size));
  QF_RETURN_IF_ERROR(Resolve(module, "qf_spm_piece", &api->piece));
  QF_RETURN_IF_ERROR(Resolve(module, "qf_spm_close", &api->close));
  return api.release();  // lives as long as the process, like the module
}

// The plugin is opened once; its outcome (the API or the error) is kept for
// the process's lifetime. Thread-safe through the function-local static.
absl::StatusOr<const SpmPluginApi*> Plugin() {
  static const absl::StatusOr<const SpmPluginApi*> api = OpenPlugin();
  return api;
}

class SpmTokenizer final : public Tokenizer {
 public:
  SpmTokenizer(const SpmPluginApi* api, void* handle, std::string model_path)
      : Tokenizer(TokenizerKind::kSentencePiece, std::move(model_path), api->bos_id(handle), api->eos_id(handle),
                  api->vocab_size(handle)),
        api_(api),
        handle_(handle) {}
  ~SpmTokenizer() override { api_->close(handle_); }

  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text) const override {
    char err[kErrLen] = {0};
    int32_t* ids = nullptr;
    size_t n = 0;
    if (api_->encode(handle_, text.data(), text.size(), &ids, &n, err, sizeof err) != 0) {
      return absl::InternalError(absl::StrCat(model_path(), ": encoding ", text.size(), " bytes: ", err));
    }
    std::vector<int32_t> out(ids, ids + n);
    api_->free_ids(ids);
    return out;
  }

  absl::StatusOr<std::vector<Piece>> Pieces() const override {
    std::vector<Piece> out(static_cast<size_t>(vocab_size()));
    for (int32_t id = 0; id < vocab_size(); ++id) {
      const char* text = nullptr;
      size_t len = 0;
      Piece& p = out[static_cast<size_t>(id)];
      if (api_->piece(handle_, id, &text, &len, &p.score, &p.type) != 0) {
        return absl::InternalError(absl::StrCat(model_path(), ": piece ", id, " of ", vocab_size(), " unreadable"));
      }
      p.text.assign(text, len);
    }
    return out;
  }

 private:
  const SpmPluginApi* api_;  // process-wide, never freed
  void* handle_;             // the plugin's processor; closed in the destructor
};

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadSpmTokenizer(const std::string& model_path) {
  QF_ASSIGN_OR_RETURN(const SpmPluginApi* api, Plugin());
  char err[kErrLen] = {0};
  void* handle = api->open(model_path.c_str(), err, sizeof err);
  if (handle == nullptr) return absl::InvalidArgumentError(absl::StrCat(model_path, ": ", err));
  return std::make_unique<SpmTokenizer>(api, handle, model_path);
}

}  // namespace qf::worker
