#include "storage/model_config.h"

#include <array>
#include <filesystem>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/fs.h"
#include "common/status_macros.h"

namespace qf::storage {
namespace {

using json = nlohmann::json;

constexpr std::array<absl::string_view, 3> kModelTypes = {"llama", "mistral", "qwen2"};
constexpr std::array<absl::string_view, 3> kRopeTypes = {"default", "llama3", "linear"};
constexpr std::array<absl::string_view, 3> kDTypes = {"float16", "bfloat16", "float32"};

template <size_t N>
bool OneOf(const std::array<absl::string_view, N>& set, absl::string_view v) {
  for (absl::string_view s : set)
    if (s == v) return true;
  return false;
}

template <size_t N>
std::string ListOf(const std::array<absl::string_view, N>& set) {
  std::string out;
  for (absl::string_view s : set) absl::StrAppend(&out, out.empty() ? "" : ", ", s);
  return out;
}

// Typed access to optional fields of one JSON object: absent and `null` both
// read as nullopt; a value of the wrong type is an error naming the field.
class Fields {
 public:
  Fields(const json& obj, std::string source, std::string prefix = "")
      : obj_(obj), source_(std::move(source)), prefix_(std::move(prefix)) {}

  absl::Status Error(absl::string_view field, absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(source_, ": field '", prefix_, field, "' ", what));
  }

  const std::string& source() const { return source_; }

  const json* Find(absl::string_view field) const {
    auto it = obj_.find(std::string(field));
    return it == obj_.end() || it->is_null() ? nullptr : &*it;
  }

  absl::StatusOr<std::optional<int64_t>> Int(absl::string_view field) const {
    const json* v = Find(field);
    if (v == nullptr) return std::nullopt;
    if (!v->is_number_integer()) return Error(field, absl::StrCat("is ", v->dump(), ", expected an integer"));
    return v->get<int64_t>();
  }
  absl::StatusOr<std::optional<double>> Double(absl::string_view field) const {
    const json* v = Find(field);
    if (v == nullptr) return std::nullopt;
    if (!v->is_number()) return Error(field, absl::StrCat("is ", v->dump(), ", expected a number"));
    return v->get<double>();
  }
  absl::StatusOr<std::optional<bool>> Bool(absl::string_view field) const {
    const json* v = Find(field);
    if (v == nullptr) return std::nullopt;
    if (!v->is_boolean()) return Error(field, absl::StrCat("is ", v->dump(), ", expected true or false"));
    return v->get<bool>();
  }
  absl::StatusOr<std::optional<std::string>> String(absl::string_view field) const {
    const json* v = Find(field);
    if (v == nullptr) return std::nullopt;
    if (!v->is_string()) return Error(field, absl::StrCat("is ", v->dump(), ", expected a string"));
    return v->get<std::string>();
  }

  // Sets *out when present; `required` makes absence an error. Values must be > 0.
  absl::Status PositiveInt(absl::string_view field, bool required, int64_t* out) const {
    QF_ASSIGN_OR_RETURN(std::optional<int64_t> v, Int(field));
    if (!v) return required ? Error(field, "is missing (expected a positive integer)") : absl::OkStatus();
    if (*v <= 0) return Error(field, absl::StrCat("is ", *v, ", expected a positive integer"));
    *out = *v;
    return absl::OkStatus();
  }
  absl::Status PositiveDouble(absl::string_view field, bool required, double* out) const {
    QF_ASSIGN_OR_RETURN(std::optional<double> v, Double(field));
    if (!v) return required ? Error(field, "is missing (expected a positive number)") : absl::OkStatus();
    if (!(*v > 0)) return Error(field, absl::StrCat("is ", *v, ", expected a positive number"));
    *out = *v;
    return absl::OkStatus();
  }

 private:
  const json& obj_;
  std::string source_;
  std::string prefix_;
};

// Rope settings from either spelling:
//   5.x: rope_parameters {rope_theta, rope_type, factor, ...}
//   4.x: rope_theta at top level + rope_scaling {rope_type | type, factor, ...} (or null)
absl::Status ParseRope(const json& j, const std::string& source, RopeConfig* rope) {
  Fields top(j, source);
  QF_RETURN_IF_ERROR(top.PositiveDouble("rope_theta", /*required=*/false, &rope->theta));
  absl::string_view group = "rope_parameters";
  const json* params = top.Find(group);
  if (params == nullptr) {
    group = "rope_scaling";
    params = top.Find(group);
  }
  if (params == nullptr) return absl::OkStatus();
  if (!params->is_object()) return top.Error(group, absl::StrCat("is ", params->dump(), ", expected an object"));

  Fields p(*params, source, absl::StrCat(group, "."));
  QF_RETURN_IF_ERROR(p.PositiveDouble("rope_theta", /*required=*/false, &rope->theta));
  QF_ASSIGN_OR_RETURN(std::optional<std::string> type, p.String("rope_type"));
  if (!type) {
    QF_ASSIGN_OR_RETURN(type, p.String("type"));   // older 4.x key
  }
  if (type) rope->type = *type;
  if (!OneOf(kRopeTypes, rope->type))
    return p.Error("rope_type", absl::StrCat("is '", rope->type, "', expected one of ", ListOf(kRopeTypes)));
  if (rope->type == "default") return absl::OkStatus();

  QF_RETURN_IF_ERROR(p.PositiveDouble("factor", /*required=*/true, &rope->factor));
  if (rope->type == "linear") return absl::OkStatus();
  // llama3: the wavelength bands divide by (high - low), so both are required and ordered.
  QF_RETURN_IF_ERROR(p.PositiveDouble("low_freq_factor", /*required=*/true, &rope->low_freq_factor));
  QF_RETURN_IF_ERROR(p.PositiveDouble("high_freq_factor", /*required=*/true, &rope->high_freq_factor));
  QF_RETURN_IF_ERROR(p.PositiveInt("original_max_position_embeddings", /*required=*/true,
                                   &rope->original_max_position_embeddings));
  if (rope->high_freq_factor <= rope->low_freq_factor)
    return p.Error("high_freq_factor", absl::StrCat("is ", rope->high_freq_factor,
                                                    ", expected greater than low_freq_factor ",
                                                    rope->low_freq_factor));
  return absl::OkStatus();
}

// Head layout: defaults, then the divisibility rules the attention code relies on.
absl::Status ParseHeads(const Fields& f, ModelConfig* cfg) {
  QF_RETURN_IF_ERROR(f.PositiveInt("num_attention_heads", /*required=*/true, &cfg->num_attention_heads));
  cfg->num_key_value_heads = cfg->num_attention_heads;
  QF_RETURN_IF_ERROR(f.PositiveInt("num_key_value_heads", /*required=*/false, &cfg->num_key_value_heads));
  if (cfg->num_attention_heads % cfg->num_key_value_heads != 0)
    return f.Error("num_key_value_heads", absl::StrCat("is ", cfg->num_key_value_heads,
                                                       ", expected a divisor of num_attention_heads ",
                                                       cfg->num_attention_heads));
  QF_ASSIGN_OR_RETURN(std::optional<int64_t> head_dim, f.Int("head_dim"));
  if (head_dim) {
    QF_RETURN_IF_ERROR(f.PositiveInt("head_dim", /*required=*/true, &cfg->head_dim));
  } else {
    if (cfg->hidden_size % cfg->num_attention_heads != 0)
      return f.Error("num_attention_heads", absl::StrCat("is ", cfg->num_attention_heads,
                                                         ", expected a divisor of hidden_size ", cfg->hidden_size,
                                                         " (or an explicit head_dim)"));
    cfg->head_dim = cfg->hidden_size / cfg->num_attention_heads;
  }
  if (cfg->head_dim % 2 != 0)   // RoPE rotates pairs of channels
    return f.Error("head_dim", absl::StrCat("is ", cfg->head_dim, ", expected an even number"));
  return absl::OkStatus();
}

// Which projections carry biases and whether a sliding window applies.
absl::Status ParseFamilyRules(const Fields& f, ModelConfig* cfg) {
  if (cfg->model_type == "llama") {
    QF_ASSIGN_OR_RETURN(std::optional<bool> attn, f.Bool("attention_bias"));
    QF_ASSIGN_OR_RETURN(std::optional<bool> mlp, f.Bool("mlp_bias"));
    cfg->attention_bias = cfg->o_proj_bias = attn.value_or(false);
    cfg->mlp_bias = mlp.value_or(false);
  } else if (cfg->model_type == "qwen2") {
    cfg->attention_bias = true;
    QF_ASSIGN_OR_RETURN(std::optional<bool> use_window, f.Bool("use_sliding_window"));
    // Qwen2 windows only the layers from max_window_layers on; that per-layer
    // split is not modelled, so refuse rather than compute the wrong attention.
    if (use_window.value_or(false))
      return absl::UnimplementedError(
          absl::StrCat(f.source(), ": field 'use_sliding_window' is true, expected false (qwen2 sliding window)"));
  } else {   // mistral
    QF_RETURN_IF_ERROR(f.PositiveInt("sliding_window", /*required=*/false, &cfg->sliding_window));
  }
  return absl::OkStatus();
}

absl::Status ParseTokenIds(const Fields& f, ModelConfig* cfg) {
  QF_ASSIGN_OR_RETURN(std::optional<int64_t> bos, f.Int("bos_token_id"));
  if (bos) cfg->bos_token_id = *bos;
  const json* eos = f.Find("eos_token_id");
  if (eos != nullptr && eos->is_array()) {
    if (eos->empty() || !(*eos)[0].is_number_integer())
      return f.Error("eos_token_id", absl::StrCat("is ", eos->dump(), ", expected an integer or a list of integers"));
    cfg->eos_token_id = (*eos)[0].get<int64_t>();   // generation stops on any; the first is the canonical one
  } else {
    QF_ASSIGN_OR_RETURN(std::optional<int64_t> id, f.Int("eos_token_id"));
    if (id) cfg->eos_token_id = *id;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelConfig> ParseModelConfig(const json& j, const std::string& source) {
  if (!j.is_object())
    return absl::InvalidArgumentError(absl::StrCat(source, ": is a JSON ", j.type_name(), ", expected an object"));
  Fields f(j, source);
  ModelConfig cfg;
  QF_ASSIGN_OR_RETURN(std::optional<std::string> model_type, f.String("model_type"));
  if (!model_type)
    return f.Error("model_type", absl::StrCat("is missing (expected one of ", ListOf(kModelTypes), ")"));
  if (!OneOf(kModelTypes, *model_type))
    return absl::InvalidArgumentError(absl::StrCat(source, ": model_type '", *model_type,
                                                   "' is not supported (expected one of ", ListOf(kModelTypes), ")"));
  cfg.model_type = *model_type;

  struct SizeField { absl::string_view name; int64_t ModelConfig::*member; bool required; };
  static constexpr SizeField kSizes[] = {
      {"hidden_size", &ModelConfig::hidden_size, true},
      {"intermediate_size", &ModelConfig::intermediate_size, true},
      {"num_hidden_layers", &ModelConfig::num_hidden_layers, true},
      {"vocab_size", &ModelConfig::vocab_size, true},
      {"max_position_embeddings", &ModelConfig::max_position_embeddings, false},
  };
  for (const SizeField& s : kSizes) QF_RETURN_IF_ERROR(f.PositiveInt(s.name, s.required, &(cfg.*s.member)));
  QF_RETURN_IF_ERROR(ParseHeads(f, &cfg));
  QF_RETURN_IF_ERROR(f.PositiveDouble("rms_norm_eps", /*required=*/false, &cfg.rms_norm_eps));
  QF_RETURN_IF_ERROR(ParseRope(j, source, &cfg.rope));
  QF_RETURN_IF_ERROR(ParseFamilyRules(f, &cfg));
  QF_RETURN_IF_ERROR(ParseTokenIds(f, &cfg));

  QF_ASSIGN_OR_RETURN(std::optional<bool> tie, f.Bool("tie_word_embeddings"));
  cfg.tie_word_embeddings = tie.value_or(false);

  // 5.x writes "dtype"; 4.x "torch_dtype".
  absl::string_view dtype_field = f.Find("dtype") ? "dtype" : "torch_dtype";
  QF_ASSIGN_OR_RETURN(std::optional<std::string> dtype, f.String(dtype_field));
  if (dtype) {
    if (!OneOf(kDTypes, *dtype))
      return f.Error(dtype_field, absl::StrCat("is '", *dtype, "', expected one of ", ListOf(kDTypes)));
    cfg.dtype = *dtype;
  }

  QF_ASSIGN_OR_RETURN(std::optional<std::string> act, f.String("hidden_act"));
  if (act && *act != "silu")   // every supported family uses SwiGLU
    return f.Error("hidden_act", absl::StrCat("is '", *act, "', expected 'silu'"));

  cfg.raw = j;
  return cfg;
}

std::array<LinearShape, 7> DecoderLinearShapes(const ModelConfig& cfg) {
  const int64_t h = cfg.hidden_size, inter = cfg.intermediate_size;
  const int64_t q = cfg.num_attention_heads * cfg.head_dim, kv = cfg.num_key_value_heads * cfg.head_dim;
  return {{{q, h}, {kv, h}, {kv, h}, {h, q}, {inter, h}, {inter, h}, {h, inter}}};
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir) {
  const std::string path = (std::filesystem::path(model_dir) / "config.json").string();
  QF_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON (", e.what(), ")"));
  }
  return ParseModelConfig(j, path);
}

}  // namespace qf::storage
