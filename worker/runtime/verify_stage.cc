#include "worker/runtime/verify_stage.h"

#include <cmath>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/fs.h"
#include "common/status_macros.h"
#include "worker/calibration.h"
#include "worker/tokenizer.h"

namespace qf::worker {
namespace {

// JSON has no inf/NaN: such values become null (the entry's detail says why).
nlohmann::json Num(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

}  // namespace

VerifyStageOptions VerifyStageOptionsOf(const proto::JobSpec& spec, const std::string& device) {
  VerifyStageOptions o;
  o.artifact = spec.out_dir();
  o.device = device;
  o.text = spec.verify_text();
  if (spec.verify_seqlen() > 0) o.seqlen = spec.verify_seqlen();
  if (spec.verify_max_chunks() > 0) o.max_chunks = spec.verify_max_chunks();
  if (!spec.verify_dtype().empty()) o.dtype = spec.verify_dtype();
  return o;
}

absl::StatusOr<VerifySpec> MakeVerifySpec(const VerifyStageOptions& o) {
  if (!IsDirectory(o.artifact)) return absl::NotFoundError(absl::StrCat(o.artifact, ": no such artifact directory"));
  VerifySpec spec;
  spec.artifact_dir = o.artifact;
  spec.device = o.device;
  spec.iters = o.iters;
  spec.dtype = o.dtype;
  if (!o.text.empty()) {
    if (!PathExists(o.text)) return absl::NotFoundError(absl::StrCat("verify text ", o.text, ": no such file"));
    QF_ASSIGN_OR_RETURN(auto tok, Tokenizer::Load(o.artifact));
    QF_ASSIGN_OR_RETURN(spec.tokens, BuildEvalTokens(*tok, o.text, o.seqlen, o.max_chunks));
    spec.seqlen = o.seqlen;
    spec.text = o.text;
  }
  return spec;
}

VerifyCounts CountVerifyLinears(const VerifyReport& r) {
  VerifyCounts c;
  for (const VerifyLinear& l : r.linears) {
    if (l.status == "unsupported") {
      ++c.unsupported;
      continue;
    }
    l.status == "ok" ? ++c.ok : ++c.failed;
    if (!(l.max_rel_err <= c.max_rel_err)) c.max_rel_err = l.max_rel_err;  // NaN wins too (null in JSON)
    c.threshold = l.threshold;
  }
  return c;
}

nlohmann::json VerifyReportJson(const VerifyReport& r) {
  const VerifyCounts c = CountVerifyLinears(r);
  nlohmann::json linears = nlohmann::json::array();
  for (const VerifyLinear& l : r.linears) {
    nlohmann::json j = {{"tensor", l.tensor}, {"k", l.k}, {"n", l.n}, {"status", l.status}};
    if (l.status != "unsupported") {
      j["max_rel_err"] = Num(l.max_rel_err);
      j["threshold"] = l.threshold;
    }
    if (!l.detail.empty()) j["detail"] = l.detail;
    linears.push_back(std::move(j));
  }
  nlohmann::json shapes = nlohmann::json::array();
  for (const VerifyTiming& t : r.timings) {
    nlohmann::json j = {{"k", t.k}, {"n", t.n}, {"m", t.m}, {"linears", t.linears}, {"variant", t.variant}};
    if (t.fused_us > 0 && t.cublas_us > 0) {
      j["fused_us"] = t.fused_us;
      j["cublas_us"] = t.cublas_us;
      j["speedup"] = t.cublas_us / t.fused_us;
    }
    shapes.push_back(std::move(j));
  }
  const VerifyPerplexity& p = r.ppl;
  nlohmann::json ppl = {{"measured", p.measured}, {"tolerance", p.tolerance}};
  if (p.measured) {
    ppl.update({{"text", p.text}, {"seqlen", p.seqlen}, {"chunks", p.chunks}, {"fused", Num(p.fused)},
                {"dequant", Num(p.dequant)}, {"rel_diff", Num(p.rel_diff)}, {"passed", p.passed}});
  } else {
    ppl["note"] = p.note;
  }
  nlohmann::json throughput = {{"measured", r.timing_measured}};
  if (r.timing_measured) {
    throughput.update({{"baseline", absl::StrCat("cuBLAS ", absl::AsciiStrToUpper(r.dtype), " (at::mm on a ", r.dtype,
                                                 " copy of the dequantized weight)")},
                       {"method", "CUDA-event median, L2 flushed before every timed call"},
                       {"iters", r.iters}, {"shapes", std::move(shapes)}});
  } else {
    throughput["note"] = r.timing_note;
  }
  return {{"artifact", r.artifact_dir},
          {"device", r.device},
          {"dtype", r.dtype},
          {"verdict", r.verdict},
          {"failure", r.failure.empty() ? nlohmann::json(nullptr) : nlohmann::json(r.failure)},
          {"quantization", {{"format", r.format}, {"bits", r.bits}, {"group_size", r.group_size},
                            {"sym", r.sym}, {"desc_act", r.desc_act}}},
          {"linear_checks", {{"reference", "dequantize + matmul in float32"},
                             {"metric", "||C_fused - C_ref|| / ||C_ref||, max over ms"},
                             {"ms", r.check_ms}, {"ok", c.ok}, {"failed", c.failed},
                             {"unsupported", c.unsupported}, {"max_rel_err", Num(c.max_rel_err)},
                             {"linears", std::move(linears)}}},
          {"throughput", std::move(throughput)},
          {"perplexity", std::move(ppl)},
          {"seconds", r.seconds}};
}

}  // namespace qf::worker
