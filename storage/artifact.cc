#include "storage/artifact.h"
#include "storage/synthetic_model.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <set>
#include <thread>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/sha256.h"
#include "common/status_macros.h"
#include "kernels/ref/pack.h"

namespace qf::storage {
namespace {

using kernels::LayerResult;
using kernels::QuantizedLinear;

// Debian's Abseil has its own string_view type; std::string_view is passed through this.
absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

std::string LinearNameList() {
  std::string out;
  for (std::string_view lin : kLinearNames) out += (out.empty() ? "" : ", ") + std::string(lin);
  return out;
}

// Tensor suffixes a quantized linear owns in an artifact.
constexpr std::array<std::string_view, 5> kPackedSuffixes = {"qweight", "qzeros", "scales", "g_idx", "bias"};

std::string LayerPrefix(int64_t layer) { return absl::StrCat("model.layers.", layer, "."); }

// "model.layers.<i>.<rest>" -> (i, rest). False for anything else.
bool SplitLayerName(std::string_view name, int64_t* layer, std::string_view* rest) {
  constexpr std::string_view kHead = "model.layers.";
  if (!name.starts_with(kHead)) return false;
  name.remove_prefix(kHead.size());
  const size_t dot = name.find('.');
  if (dot == std::string_view::npos || !absl::SimpleAtoi(Sv(name.substr(0, dot)), layer)) return false;
  *rest = name.substr(dot + 1);
  return true;
}

// Index in kLinearNames of the linear `rest` ("mlp.up_proj.scales") belongs
// to, with the part after the linear's name in *suffix; -1 when none.
int LinearOf(std::string_view rest, std::string_view* suffix) {
  for (size_t j = 0; j < kLinearNames.size(); ++j) {
    const std::string_view lin = kLinearNames[j];
    if (rest.size() > lin.size() && rest.starts_with(lin) && rest[lin.size()] == '.') {
      *suffix = rest.substr(lin.size() + 1);
      return static_cast<int>(j);
    }
  }
  return -1;
}

absl::StatusOr<int64_t> Numel(const std::vector<int64_t>& shape, absl::string_view what) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return absl::InvalidArgumentError(absl::StrCat(what, ": negative dimension ", d));
    n *= d;
  }
  return n;
}

// One result per layer 0..L-1, indexed by layer.
absl::StatusOr<std::vector<const LayerResult*>> OrderLayers(const ModelConfig& cfg,
                                                              const std::vector<LayerResult>& layers) {
  std::vector<const LayerResult*> by_layer(static_cast<size_t>(cfg.num_hidden_layers), nullptr);
  for (const LayerResult& r : layers) {
    if (r.layer < 0 || r.layer >= cfg.num_hidden_layers) {
      return absl::InvalidArgumentError(absl::StrCat("layer result for layer ", r.layer, ": outside [0, ",
                                                     cfg.num_hidden_layers, ")"));
    }
    if (by_layer[r.layer] != nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", r.layer, ": more than one layer result"));
    }
    by_layer[r.layer] = &r;
  }
  for (size_t i = 0; i < by_layer.size(); ++i) {
    if (by_layer[i] == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", i, ": no layer result (an artifact needs all ",
                                                     cfg.num_hidden_layers, " layers)"));
    }
  }
  return by_layer;
}

// The packed layer tensors, parked in an unlinked file of the staging
// directory until every layer is in. The shards hold tensors in name order
// (layers 0, 1, 10, 11, ..., 2, 20, ...), so no shard can be written before the
// last layer arrives; kept in memory instead, a 70B artifact meant ~35 GB of
// RAM on the coordinator. Unlinked at creation, the file goes with its
// descriptor whatever happens, and the shard writer punches out each range
// once copied, so the disk holds about one artifact at a time.
class PackedSpill {
 public:
  static absl::StatusOr<PackedSpill> Create(const std::string& dir) {
    const std::string path = absl::StrCat(dir, "/.packed-layers");
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return absl::InternalError(absl::StrCat(path, ": create failed: ", std::strerror(errno)));
    ::unlink(path.c_str());
    return PackedSpill(path, fd);
  }
  PackedSpill(PackedSpill&& o) noexcept
      : path_(std::move(o.path_)), fd_(std::exchange(o.fd_, -1)), end_(o.end_), refs_(std::move(o.refs_)) {}
  PackedSpill& operator=(PackedSpill&&) = delete;
  ~PackedSpill() {
    if (fd_ >= 0) ::close(fd_);
  }

  // Appends `t`'s bytes; a name produced twice is InvalidArgument naming `origin`.
  absl::Status Add(const OwnedTensor& t, absl::string_view origin) {
    if (refs_.count(t.name)) {
      return absl::InvalidArgumentError(absl::StrCat(origin, ": tensor '", t.name, "' is produced twice"));
    }
    for (size_t done = 0; done < t.data.size();) {
      const ssize_t n = ::pwrite(fd_, t.data.data() + done, t.data.size() - done, static_cast<off_t>(end_ + done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return absl::InternalError(absl::StrCat(path_, ": write failed: ", std::strerror(errno)));
      done += static_cast<size_t>(n);
    }
    refs_.emplace(t.name, TensorRef{t.name, t.dtype, t.shape, {}, fd_, end_, t.data.size(), /*release=*/true});
    end_ += t.data.size();
    return absl::OkStatus();
  }
  bool Has(const std::string& name) const { return refs_.count(name) > 0; }
  // Every tensor added, as refs into the file (valid while this lives).
  std::vector<TensorRef> Refs() const {
    std::vector<TensorRef> out;
    out.reserve(refs_.size());
    for (const auto& [name, r] : refs_) out.push_back(r);
    return out;
  }

 private:
  PackedSpill(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  std::string path_;
  int fd_;
  uint64_t end_ = 0;
  std::map<std::string, TensorRef> refs_;
};

absl::Status CheckLinearAgainstSpec(const QuantSpec& spec, const TensorSource& src, int64_t layer,
                                    const QuantizedLinear& q) {
  const std::string where = absl::StrCat("layer ", layer, " linear '", q.name, "'");
  if (q.bits != spec.bits || q.group_size != spec.group_size || q.sym != spec.sym || q.desc_act != spec.desc_act) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": bits/group_size/sym/desc_act = ", q.bits, "/", q.group_size, "/", q.sym, "/", q.desc_act,
        " differ from the spec's ", spec.bits, "/", spec.group_size, "/", spec.sym, "/", spec.desc_act,
        " (one quantization_config covers every linear)"));
  }
  const std::string weight = absl::StrCat(LayerPrefix(layer), q.name, ".weight");
  absl::StatusOr<const TensorView*> w = src.Get(weight);
  if (!w.ok()) return absl::InvalidArgumentError(absl::StrCat(where, ": ", w.status().message()));
  const std::vector<int64_t> want = {q.out_features, q.in_features};
  if ((*w)->shape != want) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": shape [", q.out_features, ", ", q.in_features,
                                                   "] differs from source '", weight, "' [",
                                                   absl::StrJoin((*w)->shape, ", "), "]"));
  }
  return absl::OkStatus();
}

using PackResult = absl::StatusOr<kernels::PackedLinear>;

PackResult PackLinear(const QuantSpec& spec, const QuantizedLinear& q) {
  return spec.format == "awq" ? kernels::PackAwqGemm(q) : kernels::PackGptqV1(q);
}

// Packs the linears of one layer on up to 16 threads (they are independent),
// largest first. packed[j] is r.linears[j].
std::vector<PackResult> PackLayerLinears(const QuantSpec& spec, const LayerResult& r) {
  std::vector<PackResult> packed(r.linears.size(), absl::UnknownError("not packed"));
  std::vector<size_t> items(r.linears.size());
  for (size_t j = 0; j < items.size(); ++j) items[j] = j;
  std::stable_sort(items.begin(), items.end(),
                   [&](size_t a, size_t b) { return r.linears[a].codes.size() > r.linears[b].codes.size(); });
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i; (i = next.fetch_add(1)) < items.size();) packed[items[i]] = PackLinear(spec, r.linears[items[i]]);
  };
  const size_t threads = std::min<size_t>({std::max(1u, std::thread::hardware_concurrency()), 16, items.size()});
  std::vector<std::thread> pool;
  for (size_t t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (std::thread& t : pool) t.join();
  return packed;
}

// Packs one layer result into `out`; records the source tensors it replaces.
absl::Status AddLayer(const QuantSpec& spec, const TensorSource& src, const LayerResult& r, PackedSpill& out,
                      std::set<std::string>& replaced, int64_t& wrapped_zeros) {
  const std::string prefix = LayerPrefix(r.layer);
  std::vector<PackResult> packed = PackLayerLinears(spec, r);
  std::set<std::string_view> seen;
  for (size_t j = 0; j < r.linears.size(); ++j) {
    const QuantizedLinear& q = r.linears[j];
    if (std::find(kLinearNames.begin(), kLinearNames.end(), q.name) == kLinearNames.end()) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", r.layer, ": linear '", q.name, "' is not one of ",
                                                     LinearNameList()));
    }
    if (!seen.insert(q.name).second) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", r.layer, ": linear '", q.name, "' appears twice"));
    }
    QF_RETURN_IF_ERROR(CheckLinearAgainstSpec(spec, src, r.layer, q));
    PackResult& p = packed[j];
    if (!p.ok()) return absl::InvalidArgumentError(absl::StrCat("layer ", r.layer, ": ", p.status().message()));
    wrapped_zeros += p->wrapped_zeros;
    for (const OwnedTensor& t : std::move(*p).Take(absl::StrCat(prefix, q.name, "."))) {
      QF_RETURN_IF_ERROR(out.Add(t, absl::StrCat("layer ", r.layer)));
    }
    replaced.insert(absl::StrCat(prefix, q.name, ".weight"));
  }
  for (std::string_view lin : kLinearNames) {
    if (!seen.count(lin)) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", r.layer, ": linear '", Sv(lin),
                                                     "' missing from the layer result"));
    }
  }
  if (!r.errors.empty() && r.errors.size() != r.linears.size()) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", r.layer, ": errors has ", r.errors.size(),
                                                   " entries, expected 0 or one per linear (", r.linears.size(), ")"));
  }
  for (const kernels::DenseTensor& d : r.dense) {
    const std::string where = absl::StrCat("layer ", r.layer, " dense tensor '", d.name, "'");
    std::string_view suffix;
    if (d.name.empty() || LinearOf(d.name, &suffix) >= 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": empty, or inside a quantized linear (a linear's bias goes in QuantizedLinear::bias)"));
    }
    absl::StatusOr<DType> dt = ParseDType(d.dtype);
    if (!dt.ok()) return absl::InvalidArgumentError(absl::StrCat(where, ": ", dt.status().message()));
    QF_ASSIGN_OR_RETURN(int64_t numel, Numel(d.shape, where));
    if (d.data.size() != static_cast<size_t>(numel) * DTypeSize(*dt)) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": ", d.data.size(), " bytes, expected ",
                                                     numel * DTypeSize(*dt), " for its shape and dtype"));
    }
    QF_RETURN_IF_ERROR(out.Add(OwnedTensor{prefix + d.name, *dt, d.shape, d.data}, where));
  }
  return absl::OkStatus();
}

// The manifest's "layer_errors" entry of one layer, added to `all` (none
// when the result carries no errors).
void AddLayerErrors(const LayerResult& r, nlohmann::json& all) {
  if (r.errors.empty()) return;
  nlohmann::json per = nlohmann::json::object();
  for (size_t j = 0; j < r.linears.size(); ++j) {
    const double e = r.errors[j];
    per[r.linears[j].name] = std::isfinite(e) ? nlohmann::json(e) : nlohmann::json(nullptr);
  }
  all[std::to_string(r.layer)] = std::move(per);
}

absl::Status WriteJson(const std::string& path, const nlohmann::json& j) {
  return WriteFileAtomic(path, j.dump(2) + "\n");
}

// The digests of dir/names[i], one thread per file (shards are up to 4 GiB
// each: a 70B artifact's 35 GB take one shard's time, not nine), in the order
// of `names`.
std::vector<absl::StatusOr<std::string>> Sha256Files(const std::string& dir, const std::vector<std::string>& names) {
  std::vector<absl::StatusOr<std::string>> shas(names.size(), absl::UnknownError("not hashed"));
  std::vector<std::jthread> pool;
  for (size_t i = 0; i < names.size(); ++i)
    pool.emplace_back([&, i] { shas[i] = Sha256FileHex(absl::StrCat(dir, "/", names[i])); });
  pool.clear();   // joins
  return shas;
}

// {"name": {"bytes", "sha256"}} for every regular file in `dir` but the manifest.
absl::StatusOr<nlohmann::json> FileTable(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string n = e.path().filename().string();
    if (e.is_regular_file() && n != kManifestName) names.push_back(n);
  }
  if (ec) return absl::InternalError(absl::StrCat(dir, ": list failed: ", ec.message()));
  std::vector<absl::StatusOr<std::string>> shas = Sha256Files(dir, names);
  nlohmann::json files = nlohmann::json::object();
  for (size_t i = 0; i < names.size(); ++i) {
    const std::string& n = names[i];
    const std::string path = absl::StrCat(dir, "/", n);
    QF_ASSIGN_OR_RETURN(std::string sha, std::move(shas[i]));
    files[n] = {{"bytes", std::filesystem::file_size(path, ec)}, {"sha256", sha}};
    if (ec) return absl::InternalError(absl::StrCat(path, ": stat failed: ", ec.message()));
  }
  return files;
}

}  // namespace

absl::Status ValidateQuantSpec(const QuantSpec& s) {
  auto bad = [](absl::string_view field, absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("quantization spec: ", field, ": ", what));
  };
  if (s.method != "gptq" && s.method != "awq" && s.method != "rtn") {
    return bad("method", absl::StrCat("'", s.method, "' (expected gptq, awq or rtn)"));
  }
  if (s.format != "gptq" && s.format != "awq") return bad("format", absl::StrCat("'", s.format, "' (expected gptq or awq)"));
  if (s.bits != 2 && s.bits != 3 && s.bits != 4 && s.bits != 8) return bad("bits", absl::StrCat(s.bits, " (expected 2, 3, 4 or 8)"));
  if (s.group_size != -1 && s.group_size <= 0) return bad("group_size", absl::StrCat(s.group_size, " (expected -1 or positive)"));
  if (!(s.damp_percent > 0.0 && s.damp_percent < 1.0)) {
    return bad("damp_percent", absl::StrCat(s.damp_percent, " (expected inside (0, 1); transformers rejects others)"));
  }
  if (s.format == "awq") {
    if (s.bits != 4) return bad("bits", absl::StrCat(s.bits, " (the awq format stores 4 bits only)"));
    if (s.desc_act) return bad("desc_act", "the awq format has no g_idx, so act-order cannot be stored");
    if (s.group_size == -1) return bad("group_size", "-1 cannot be stored in the awq format (vLLM needs a group size)");
  }
  return absl::OkStatus();
}

nlohmann::json QuantSpecToJson(const QuantSpec& s) {
  return {{"method", s.method},         {"bits", s.bits},
          {"group_size", s.group_size}, {"sym", s.sym},
          {"desc_act", s.desc_act},     {"damp_percent", s.damp_percent},
          {"static_groups", s.static_groups}, {"true_sequential", s.true_sequential},
          {"format", s.format}};
}

absl::StatusOr<QuantSpec> QuantSpecFromJson(const nlohmann::json& j, const std::string& source) {
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(source, ": quantization spec is not an object"));
  auto field = [&](const char* key, auto pred, absl::string_view type) -> absl::StatusOr<const nlohmann::json*> {
    auto it = j.find(key);
    if (it == j.end() || !pred(*it)) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": quantization spec field '", key, "' missing or not ", type));
    }
    return &*it;
  };
  auto is_str = [](const nlohmann::json& v) { return v.is_string(); };
  auto is_int = [](const nlohmann::json& v) { return v.is_number_integer(); };
  auto is_bool = [](const nlohmann::json& v) { return v.is_boolean(); };
  auto is_num = [](const nlohmann::json& v) { return v.is_number(); };
  QuantSpec s;
  QF_ASSIGN_OR_RETURN(const nlohmann::json* method, field("method", is_str, "a string"));
  QF_ASSIGN_OR_RETURN(const nlohmann::json* format, field("format", is_str, "a string"));
  QF_ASSIGN_OR_RETURN(const nlohmann::json* bits, field("bits", is_int, "an integer"));
  QF_ASSIGN_OR_RETURN(const nlohmann::json* gs, field("group_size", is_int, "an integer"));
  QF_ASSIGN_OR_RETURN(const nlohmann::json* sym, field("sym", is_bool, "a boolean"));
  QF_ASSIGN_OR_RETURN(const nlohmann::json* desc, field("desc_act", is_bool, "a boolean"));
  QF_ASSIGN_OR_RETURN(const nlohmann::json* damp, field("damp_percent", is_num, "a number"));
  QF_ASSIGN_OR_RETURN(const nlohmann::json* sg, field("static_groups", is_bool, "a boolean"));
  QF_ASSIGN_OR_RETURN(const nlohmann::json* ts, field("true_sequential", is_bool, "a boolean"));
  s.method = method->get<std::string>();
  s.format = format->get<std::string>();
  s.bits = bits->get<int>();
  s.group_size = gs->get<int>();
  s.sym = sym->get<bool>();
  s.desc_act = desc->get<bool>();
  s.damp_percent = damp->get<double>();
  s.static_groups = sg->get<bool>();
  s.true_sequential = ts->get<bool>();
  absl::Status v = ValidateQuantSpec(s);
  if (!v.ok()) return absl::InvalidArgumentError(absl::StrCat(source, ": ", v.message()));
  return s;
}

nlohmann::json QuantizationConfigJson(const QuantSpec& s) {
  if (s.format == "awq") {
    // transformers' AwqConfig / vLLM's AWQConfig / gptqmodel read these.
    return {{"quant_method", "awq"}, {"bits", s.bits},         {"group_size", s.group_size},
            {"zero_point", true},    {"version", "gemm"},      {"modules_to_not_convert", nullptr}};
  }
  // transformers' GPTQConfig (and optimum), vLLM's GPTQ / GPTQ-Marlin and
  // gptqmodel read these; checkpoint_format "gptq" = the v1 zero offset.
  return {{"quant_method", "gptq"},         {"bits", s.bits},
          {"group_size", s.group_size},     {"desc_act", s.desc_act},
          {"sym", s.sym},                   {"damp_percent", s.damp_percent},
          {"static_groups", s.static_groups}, {"true_sequential", s.true_sequential},
          {"checkpoint_format", "gptq"},    {"pack_dtype", "int32"},
          {"lm_head", false}};
}

nlohmann::json QuantizeConfigJson(const QuantSpec& s) {
  if (s.format == "awq") {
    return {{"zero_point", true}, {"q_group_size", s.group_size}, {"w_bit", s.bits}, {"version", "GEMM"}};
  }
  nlohmann::json j = QuantizationConfigJson(s);
  j["model_file_base_name"] = "model";   // AutoGPTQ looks for <base>.safetensors
  return j;
}

absl::Status WriteArtifact(const std::string& model_dir, const ModelConfig& cfg, const QuantSpec& spec,
                           const std::vector<LayerResult>& layers, const std::string& out_dir,
                           const nlohmann::json& provenance) {
  QF_RETURN_IF_ERROR(ValidateQuantSpec(spec));
  QF_ASSIGN_OR_RETURN(std::vector<const LayerResult*> by_layer, OrderLayers(cfg, layers));
  return WriteArtifact(model_dir, cfg, spec, [&](int layer) -> absl::StatusOr<LayerResult> { return *by_layer[layer]; },
                       out_dir, provenance);
}

absl::Status WriteArtifact(const std::string& model_dir, const ModelConfig& cfg, const QuantSpec& spec,
                           const LayerSource& layers, const std::string& out_dir, const nlohmann::json& provenance) {
  QF_RETURN_IF_ERROR(ValidateQuantSpec(spec));
  if (!cfg.raw.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(model_dir, ": ModelConfig::raw is not the config.json object"));
  }
  std::unique_ptr<TensorSource> src;
  if (IsSyntheticModel(model_dir)) {
    QF_ASSIGN_OR_RETURN(src, OpenSyntheticSource(model_dir));
  } else {
    QF_ASSIGN_OR_RETURN(src, Checkpoint::Open(model_dir));
  }

  // Checked first: a refusal to write here must come before hours of packing.
  QF_ASSIGN_OR_RETURN(StagingDir staging, StagingDir::Create(out_dir));
  const std::string& dir = staging.path();

  // Layers are fetched and packed one at a time and parked on disk (PackedSpill):
  // memory holds one layer, never the packed artifact.
  QF_ASSIGN_OR_RETURN(PackedSpill packed, PackedSpill::Create(dir));
  std::set<std::string> replaced;
  int64_t wrapped_zeros = 0;
  nlohmann::json layer_errors = nlohmann::json::object();
  for (int l = 0; l < cfg.num_hidden_layers; ++l) {
    QF_ASSIGN_OR_RETURN(LayerResult r, layers(l));
    if (r.layer != l) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", l, ": the layer source gave layer ", r.layer));
    }
    QF_RETURN_IF_ERROR(AddLayer(spec, *src, r, packed, replaced, wrapped_zeros));
    AddLayerErrors(r, layer_errors);
  }
  std::vector<TensorRef> tensors = packed.Refs();
  // The rest of the source goes in as it is, straight from its mapping.
  for (const std::string& name : src->names()) {
    if (replaced.count(name) || packed.Has(name)) continue;
    QF_ASSIGN_OR_RETURN(const TensorView* v, src->Get(name));
    tensors.push_back(TensorRef{name, v->dtype, v->shape, v->data});
  }
  if (wrapped_zeros > 0 && spec.format == "gptq") {
    QF_LOG(WARNING) << out_dir << ": " << wrapped_zeros
                    << " zero points are 0, which GPTQ v1 stores as 2^bits-1; readers that do not wrap"
                       " the +1 will dequantize those groups wrongly (see kernels/ref/pack.h)";
  }
  QF_RETURN_IF_ERROR(WriteSharded(dir, tensors, kMaxShardBytes, {{"format", "pt"}}).status());
  tensors.clear();

  nlohmann::json config = cfg.raw;
  config["quantization_config"] = QuantizationConfigJson(spec);
  QF_RETURN_IF_ERROR(WriteJson(dir + "/config.json", config));
  QF_RETURN_IF_ERROR(WriteJson(dir + "/quantize_config.json", QuantizeConfigJson(spec)));
  for (std::string_view f : kTokenizerFiles) {
    const std::string from = absl::StrCat(model_dir, "/", Sv(f));
    if (PathExists(from)) QF_RETURN_IF_ERROR(CopyFile(from, absl::StrCat(dir, "/", Sv(f))));
  }
  QF_ASSIGN_OR_RETURN(nlohmann::json files, FileTable(dir));
  nlohmann::json manifest = {{"format_version", 1},
                             {"files", std::move(files)},
                             {"quantization", QuantSpecToJson(spec)},
                             {"provenance", provenance},
                             {"layer_errors", std::move(layer_errors)}};
  QF_RETURN_IF_ERROR(WriteJson(absl::StrCat(dir, "/", kManifestName), manifest));
  return staging.Commit();
}

namespace {

bool MustBeListed(std::string_view n) {
  return n == "config.json" || n == "model.safetensors.index.json" || n.ends_with(".safetensors");
}

// A digest as Sha256Files spells it. Checked before use: the manifest is
// untrusted, and a mismatch message quotes the digest it lists.
bool IsSha256Hex(const nlohmann::json& v) {
  if (!v.is_string()) return false;
  const std::string& s = v.get_ref<const std::string&>();
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// Checks size and sha256 of every file the manifest lists, and that every file
// ReadArtifact reads is listed. Returns the manifest.
absl::StatusOr<nlohmann::json> VerifyManifest(const std::string& dir) {
  const std::string path = absl::StrCat(dir, "/", kManifestName);
  if (!PathExists(path)) {
    return absl::NotFoundError(absl::StrCat(path, ": missing (", dir, " is not a qforge artifact)"));
  }
  QF_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  nlohmann::json m = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (m.is_discarded() || !m.is_object()) return absl::DataLossError(absl::StrCat(path, ": not a JSON object"));
  auto version = m.find("format_version");
  if (version == m.end() || !version->is_number_integer() || version->get<int64_t>() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": format_version missing or not 1"));
  }
  auto files = m.find("files");
  if (files == m.end() || !files->is_object()) return absl::DataLossError(absl::StrCat(path, ": 'files' is not an object"));
  std::vector<std::string> names, wanted;   // checked below, hashed together after
  for (const auto& [name, entry] : files->items()) {
    const std::string file = absl::StrCat(dir, "/", name);
    if (!IsPlainFileName(name) || !entry.is_object() || !entry.contains("bytes") || !entry.contains("sha256") ||
        !entry["bytes"].is_number_unsigned() || !IsSha256Hex(entry["sha256"])) {
      return absl::DataLossError(absl::StrCat(path, ": entry '", absl::CEscape(name),
                                              "' is not {\"bytes\": n, \"sha256\": 64 lowercase hex digits}"));
    }
    if (!PathExists(file) || IsDirectory(file)) {
      return absl::DataLossError(absl::StrCat(file, ": listed in the manifest but missing"));
    }
    std::error_code ec;
    const uint64_t size = std::filesystem::file_size(file, ec);
    const uint64_t want = entry["bytes"].get<uint64_t>();
    if (ec || size != want) {
      return absl::DataLossError(absl::StrCat(file, ": ", size, " bytes, the manifest says ", want));
    }
    names.push_back(name);
    wanted.push_back(entry["sha256"].get<std::string>());
  }
  std::vector<absl::StatusOr<std::string>> shas = Sha256Files(dir, names);
  for (size_t i = 0; i < names.size(); ++i) {   // the first bad file in the manifest's order
    QF_ASSIGN_OR_RETURN(const std::string sha, std::move(shas[i]));
    if (sha != wanted[i]) {
      return absl::DataLossError(absl::StrCat(dir, "/", names[i], ": sha256 ", sha, " does not match the manifest's ",
                                              wanted[i]));
    }
  }
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string n = e.path().filename().string();
    if (MustBeListed(n) && !files->contains(n)) {
      return absl::DataLossError(absl::StrCat(dir, "/", n, ": not covered by the manifest"));
    }
  }
  if (ec) return absl::InternalError(absl::StrCat(dir, ": list failed: ", ec.message()));
  if (!files->contains("config.json")) return absl::DataLossError(absl::StrCat(path, ": does not list config.json"));
  return m;
}

// config.json's quantization_config must describe what the manifest says.
absl::Status CheckConfigAgrees(const nlohmann::json& raw, const QuantSpec& spec, const std::string& source) {
  auto qc = raw.find("quantization_config");
  if (qc == raw.end() || !qc->is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": no quantization_config object"));
  }
  const nlohmann::json want = QuantizationConfigJson(spec);
  for (const char* key : {"quant_method", "bits", "group_size", "desc_act", "sym", "version", "checkpoint_format"}) {
    if (!want.contains(key)) continue;
    auto it = qc->find(key);
    if (it == qc->end() || *it != want[key]) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": quantization_config.", key, " is ",
                                                     it == qc->end() ? "missing" : it->dump(), ", the manifest's spec says ",
                                                     want[key].dump()));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<QuantizedLinear> ReadLinear(const Checkpoint& ckpt, const QuantSpec& spec, int64_t layer,
                                           std::string_view lin) {
  const std::string prefix = absl::StrCat(LayerPrefix(layer), Sv(lin), ".");
  auto get = [&](std::string_view suffix) -> absl::StatusOr<TensorView> {
    absl::StatusOr<const TensorView*> v = ckpt.Get(absl::StrCat(prefix, Sv(suffix)));
    if (!v.ok()) return absl::InvalidArgumentError(absl::StrCat("layer ", layer, ": ", v.status().message()));
    return **v;
  };
  kernels::PackedLinearView view;
  QF_ASSIGN_OR_RETURN(view.qweight, get("qweight"));
  QF_ASSIGN_OR_RETURN(view.qzeros, get("qzeros"));
  QF_ASSIGN_OR_RETURN(view.scales, get("scales"));
  if (ckpt.Has(prefix + "g_idx")) {
    QF_ASSIGN_OR_RETURN(view.g_idx, get("g_idx"));
  }
  std::string bias_f16;   // bytes of a bias stored in another float type, as fp16
  if (ckpt.Has(prefix + "bias")) {
    QF_ASSIGN_OR_RETURN(TensorView b, get("bias"));
    if (b.dtype == DType::kBF16 || b.dtype == DType::kF32) {
      const size_t n = static_cast<size_t>(b.numel());
      bias_f16.resize(n * 2);
      const size_t es = DTypeSize(b.dtype);
      for (size_t i = 0; i < n; ++i) {
        const uint16_t h = FloatToHalf(FloatElement(b.dtype, b.data.data() + es * i));
        std::memcpy(bias_f16.data() + 2 * i, &h, 2);
      }
      b = TensorView{b.name, DType::kF16, b.shape, bias_f16};
    }
    view.bias = b;
  }
  const kernels::PackedLinearInfo info{std::string(lin), spec.bits, spec.group_size, spec.sym, spec.desc_act};
  absl::StatusOr<QuantizedLinear> q =
      spec.format == "awq" ? kernels::UnpackAwqGemm(view, info) : kernels::UnpackGptqV1(view, info);
  if (!q.ok()) return absl::InvalidArgumentError(absl::StrCat("layer ", layer, ": ", q.status().message()));
  return q;
}

// The linears of one layer, in kLinearNames order, unpacked on one thread
// each: the checkpoint is immutable after Open and each linear has its own
// output, so the result is the same bytes as one thread's. (A 70B layer's
// three MLP linears are 0.7 G codes of its 0.86 G; a verify or an eval
// unpacks every layer of the artifact.)
absl::StatusOr<std::vector<QuantizedLinear>> UnpackLinears(const LoadedArtifact& a, int64_t layer) {
  std::vector<absl::StatusOr<QuantizedLinear>> got(kLinearNames.size(), absl::UnknownError("not unpacked"));
  {
    std::vector<std::jthread> threads;
    for (size_t i = 0; i < kLinearNames.size(); ++i)
      threads.emplace_back([&, i] { got[i] = ReadLinear(*a.checkpoint, a.spec, layer, kLinearNames[i]); });
  }   // joined
  std::vector<QuantizedLinear> out;
  for (absl::StatusOr<QuantizedLinear>& q : got) {
    if (!q.ok()) return absl::Status(q.status().code(), absl::StrCat(a.dir, ": ", q.status().message()));
    out.push_back(*std::move(q));
  }
  return out;
}

std::vector<double> ErrorsOf(const nlohmann::json& manifest, int64_t layer) {
  auto all = manifest.find("layer_errors");
  if (all == manifest.end() || !all->is_object()) return {};
  auto per = all->find(std::to_string(layer));
  if (per == all->end() || !per->is_object()) return {};
  std::vector<double> out;
  for (std::string_view lin : kLinearNames) {
    auto e = per->find(std::string(lin));
    out.push_back(e != per->end() && e->is_number() ? e->get<double>() : std::numeric_limits<double>::quiet_NaN());
  }
  return out;
}

}  // namespace

absl::StatusOr<LoadedArtifact> OpenArtifact(const std::string& dir) {
  LoadedArtifact a;
  a.dir = dir;
  QF_ASSIGN_OR_RETURN(a.manifest, VerifyManifest(dir));
  const std::string manifest_path = absl::StrCat(dir, "/", kManifestName);
  auto spec = a.manifest.find("quantization");
  if (spec == a.manifest.end()) return absl::InvalidArgumentError(absl::StrCat(manifest_path, ": no 'quantization'"));
  QF_ASSIGN_OR_RETURN(a.spec, QuantSpecFromJson(*spec, manifest_path));
  QF_ASSIGN_OR_RETURN(a.config, LoadModelConfig(dir));
  QF_RETURN_IF_ERROR(CheckConfigAgrees(a.config.raw, a.spec, absl::StrCat(dir, "/config.json")));
  QF_ASSIGN_OR_RETURN(a.checkpoint, Checkpoint::Open(dir));

  const int64_t num_layers = a.config.num_hidden_layers;
  a.layers.resize(static_cast<size_t>(num_layers));
  for (int64_t i = 0; i < num_layers; ++i) a.layers[i].layer = static_cast<int>(i);
  for (const std::string& name : a.checkpoint->names()) {
    int64_t layer;
    std::string_view rest, suffix;
    if (!SplitLayerName(name, &layer, &rest)) {
      a.other_tensors.push_back(name);
      continue;
    }
    if (layer < 0 || layer >= num_layers) {
      return absl::InvalidArgumentError(absl::StrCat(dir, ": tensor '", name, "' is outside the ", num_layers,
                                                     " layers of config.json"));
    }
    if (LinearOf(rest, &suffix) >= 0) {
      const bool known = std::find(kPackedSuffixes.begin(), kPackedSuffixes.end(), suffix) != kPackedSuffixes.end() &&
                         !(a.spec.format == "awq" && suffix == "g_idx");
      if (!known) {
        return absl::InvalidArgumentError(absl::StrCat(dir, ": tensor '", name, "' is not part of a packed ",
                                                       a.spec.format, " linear"));
      }
      continue;
    }
    QF_ASSIGN_OR_RETURN(const TensorView* v, a.checkpoint->Get(name));
    a.layers[layer].dense.push_back(kernels::DenseTensor{std::string(rest), std::string(DTypeName(v->dtype)),
                                                         v->shape, std::string(v->data)});
  }
  for (int64_t i = 0; i < num_layers; ++i) a.layers[i].errors = ErrorsOf(a.manifest, i);
  return a;
}

absl::StatusOr<LoadedArtifact> ReadArtifact(const std::string& dir) {
  QF_ASSIGN_OR_RETURN(LoadedArtifact a, OpenArtifact(dir));
  for (size_t i = 0; i < a.layers.size(); ++i) {
    QF_ASSIGN_OR_RETURN(std::vector<QuantizedLinear> linears, UnpackLinears(a, static_cast<int64_t>(i)));
    a.layers[i].linears = std::move(linears);
  }
  return a;
}

absl::StatusOr<kernels::LayerResult> LoadedArtifact::Layer(int layer) const {
  if (layer < 0 || layer >= static_cast<int>(layers.size())) {
    return absl::OutOfRangeError(absl::StrCat(dir, ": layer ", layer, " not in the artifact's ", layers.size()));
  }
  kernels::LayerResult r = layers[layer];
  if (r.linears.empty()) {
    QF_ASSIGN_OR_RETURN(r.linears, UnpackLinears(*this, layer));
  }
  return r;
}

}  // namespace qf::storage
