#include "qctl/quantize_options.h"

#include <unistd.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/fs.h"
#include "proto/job.pb.h"
#include "storage/synthetic_model.h"

namespace qf::qctl {

void AddQuantizeFlags(CLI::App* sub, QuantizeOptions* o) {
  sub->add_option("--model", o->model,
                  "HF checkpoint directory (safetensors + config.json), or synthetic:<preset>[?layers=N&seed=S]"
                  " (llama-70b, llama-8b, llama-tiny: weights generated on the device, synthetic calibration)")
      ->required();
  sub->add_option("--method", o->method, "gptq | awq | rtn")->capture_default_str();
  sub->add_option("--bits", o->bits, "2 | 3 | 4 | 8")->capture_default_str();
  sub->add_option("--group-size", o->group_size, "Input channels per group, -1 = per row")->capture_default_str();
  sub->add_flag("--act-order", o->act_order, "GPTQ: process columns by decreasing Hessian diagonal (desc_act)");
  sub->add_flag("--sym", o->sym, "Symmetric quantization (no zero points)");
  sub->add_flag("--static-groups", o->static_groups, "GPTQ: fix group parameters before act-order");
  sub->add_flag("--no-true-sequential", o->no_true_sequential, "GPTQ: quantize all linears of a layer from one forward");
  sub->add_option("--damp", o->damp, "GPTQ damping, fraction of mean(diag(H))")->capture_default_str();
  sub->add_flag("--awq-paper-scales", o->awq_paper_scales,
                "AWQ: search s = mean|x|^a as in the paper (default adds AutoAWQ's weight term)");
  sub->add_option("--awq-search-tokens", o->awq_search_tokens,
                  "AWQ: calibration tokens the scale/clip search is judged on (whole samples)")
      ->capture_default_str();
  sub->add_option("--calib", o->calib, "Calibration text (.txt or .jsonl with a 'text' field)");
  sub->add_option("--samples", o->samples, "Calibration windows")->capture_default_str();
  sub->add_option("--seqlen", o->seqlen, "Tokens per calibration window")->capture_default_str();
  sub->add_option("--seed", o->seed, "Seed of the window sampling")->capture_default_str();
  sub->add_option("--format", o->format, "Artifact format: gptq | awq")->capture_default_str();
  sub->add_option("--out", o->out, "Artifact directory (written atomically)")->required();
  sub->add_option("--device", o->device, "cpu | cuda | cuda:N")->capture_default_str();
  sub->add_flag("--host-activations", o->host_activations,
                "CUDA: keep the calibration activations in pinned host memory (GPUs too small to hold them)");
}

absl::Status ValidateQuantizeOptions(const QuantizeOptions& o) {
  static constexpr const char* kMethods[] = {"gptq", "awq", "rtn"};
  static constexpr const char* kFormats[] = {"gptq", "awq"};
  bool method_ok = false, format_ok = false;
  for (const char* m : kMethods) method_ok |= o.method == m;
  for (const char* f : kFormats) format_ok |= o.format == f;
  if (!method_ok) return absl::InvalidArgumentError(absl::StrCat("--method '", o.method, "': expected gptq, awq or rtn"));
  if (!format_ok) return absl::InvalidArgumentError(absl::StrCat("--format '", o.format, "': expected gptq or awq"));
  if (o.bits != 2 && o.bits != 3 && o.bits != 4 && o.bits != 8) {
    return absl::InvalidArgumentError(absl::StrCat("--bits ", o.bits, ": expected 2, 3, 4 or 8"));
  }
  if (o.format == "awq" && o.bits != 4) {
    return absl::InvalidArgumentError(absl::StrCat("--format awq: AWQ GEMM holds 4-bit weights only, got --bits ", o.bits,
                                                   " (use --format gptq)"));
  }
  if (o.format == "awq" && o.act_order) {
    return absl::InvalidArgumentError("--format awq: act-order (g_idx) is not representable in AWQ GEMM (use --format gptq)");
  }
  if (o.format == "awq" && o.sym) {
    return absl::InvalidArgumentError("--format awq: AWQ GEMM stores zero points; --sym is not supported with it");
  }
  if (o.method != "gptq" && (o.act_order || o.static_groups)) {
    return absl::InvalidArgumentError(absl::StrCat("--act-order/--static-groups: GPTQ options, not for --method ", o.method));
  }
  const bool synthetic = storage::IsSyntheticModel(o.model);
  if (synthetic) {
    absl::StatusOr<storage::SyntheticSpec> s = storage::ParseSyntheticModel(o.model);
    if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat("--model: ", s.status().message()));
    if (!o.calib.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("--calib ", o.calib, ": a synthetic model has no tokenizer;"
                                                     " it is calibrated on synthetic ids (--samples, --seqlen, --seed)"));
    }
  } else if (!IsDirectory(o.model)) {
    return absl::NotFoundError(absl::StrCat("--model ", o.model, ": no such directory"));
  }
  if (o.method != "rtn") {
    if (o.calib.empty() && !synthetic) return absl::InvalidArgumentError(absl::StrCat("--calib: required for --method ", o.method));
    if (!synthetic && !PathExists(o.calib)) return absl::NotFoundError(absl::StrCat("--calib ", o.calib, ": no such file"));
    if (o.samples <= 0) return absl::InvalidArgumentError(absl::StrCat("--samples ", o.samples, ": expected > 0"));
    if (o.seqlen <= 1) return absl::InvalidArgumentError(absl::StrCat("--seqlen ", o.seqlen, ": expected > 1"));
  }
  return absl::OkStatus();
}

absl::Status CheckOutputWritable(const std::string& out) {
  std::filesystem::path p = std::filesystem::path(out).lexically_normal();
  std::filesystem::path parent = p.has_parent_path() ? p.parent_path() : std::filesystem::path(".");
  // Walk up to the first existing ancestor: that is where directories get created.
  while (!parent.empty() && !PathExists(parent.string())) parent = parent.parent_path();
  if (parent.empty()) parent = ".";
  if (!IsDirectory(parent.string())) {
    return absl::FailedPreconditionError(absl::StrCat("--out ", out, ": ", parent.string(), " is not a directory"));
  }
  if (::access(parent.c_str(), W_OK | X_OK) != 0) {
    return absl::PermissionDeniedError(absl::StrCat("--out ", out, ": directory ", parent.string(), " is not writable"));
  }
  if (IsDirectory(out) && ::access(out.c_str(), W_OK) != 0) {
    return absl::PermissionDeniedError(absl::StrCat("--out ", out, ": not writable"));
  }
  if (absl::Status s = CheckReplaceable(out); !s.ok()) return absl::FailedPreconditionError(absl::StrCat("--out ", s.message()));
  return absl::OkStatus();
}

proto::JobSpec ToJobSpec(const QuantizeOptions& o) {
  auto abs = [](const std::string& p) {
    return p.empty() ? p : std::filesystem::absolute(p).lexically_normal().string();
  };
  proto::JobSpec s;
  s.set_model_path(storage::IsSyntheticModel(o.model) ? o.model : abs(o.model));
  s.set_method(o.method);
  s.set_bits(o.bits);
  s.set_group_size(o.group_size);
  s.set_act_order(o.act_order);
  s.set_sym(o.sym);
  s.set_damp_percent(o.damp);
  s.set_static_groups(o.static_groups);
  s.set_true_sequential(!o.no_true_sequential);
  s.set_awq_paper_scales(o.awq_paper_scales);
  if (o.method == "awq") s.set_awq_search_tokens(o.awq_search_tokens);
  if (o.method != "rtn") {
    s.set_calib_path(abs(o.calib));
    s.set_samples(o.samples);
    s.set_seqlen(o.seqlen);
    s.set_seed(o.seed);
  }
  s.set_format(o.format);
  s.set_out_dir(abs(o.out));
  s.set_mode(o.mode == "parallel" ? proto::MODE_PARALLEL : proto::MODE_SEQUENTIAL);
  s.set_stage_layers(o.stage_layers);
  s.set_priority(o.priority);
  if (o.verify) {
    s.set_verify(true);
    s.set_verify_text(abs(o.verify_text));
    s.set_verify_seqlen(o.verify_seqlen);
    s.set_verify_max_chunks(o.verify_max_chunks);
    s.set_verify_dtype(o.verify_dtype);
  }
  return s;
}

void AddClusterJobFlags(CLI::App* sub, QuantizeOptions* o) {
  sub->add_option("--mode", o->mode, "sequential (stage k starts from the quantized layers) | parallel")
      ->check(CLI::IsMember({"sequential", "parallel"}))->capture_default_str();
  sub->add_option("--stage-layers", o->stage_layers, "Decoder layers per stage (0: coordinator default)");
  sub->add_option("--priority", o->priority, "Higher runs first; FIFO among equals")->capture_default_str();
}

void AddVerifyFlags(CLI::App* sub, QuantizeOptions* o, const char* device) {
  CLI::Option* verify = sub->add_flag(
      "--verify", o->verify, absl::StrCat("Then run `qctl verify` on the artifact (", device, "); writes verify.json"));
  // Each of these means nothing without --verify: refused rather than ignored.
  sub->add_option("--verify-text", o->verify_text, "--verify: held-out text for the perplexity check (none: skipped)")
      ->needs(verify);
  sub->add_option("--verify-seqlen", o->verify_seqlen, "--verify: tokens per perplexity chunk")
      ->capture_default_str()->needs(verify);
  sub->add_option("--verify-max-chunks", o->verify_max_chunks, "--verify: perplexity over the first N chunks")
      ->capture_default_str()->needs(verify);
  sub->add_option("--verify-dtype", o->verify_dtype, "--verify: the fused path's element type, fp16 | bf16")
      ->capture_default_str()->needs(verify);
}

}  // namespace qf::qctl
