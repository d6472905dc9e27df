#include "qctl/verify_report.h"

#include <cmath>
#include <cstdio>
#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/fs.h"
#include "common/status_macros.h"
#include "qctl/progress.h"
#include "worker/calibration.h"
#include "worker/tokenizer.h"

namespace qf::qctl {
namespace {

// JSON has no inf/NaN: such values become null (the entry's detail says why).
nlohmann::json Num(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

struct Counts {
  int ok = 0, failed = 0, unsupported = 0;
  double max_rel_err = 0;
  double threshold = 0;
};

Counts Count(const worker::VerifyReport& r) {
  Counts c;
  for (const worker::VerifyLinear& l : r.linears) {
    if (l.status == "unsupported") {
      ++c.unsupported;
      continue;
    }
    l.status == "ok" ? ++c.ok : ++c.failed;
    if (!(l.max_rel_err <= c.max_rel_err)) c.max_rel_err = l.max_rel_err;
    c.threshold = l.threshold;
  }
  return c;
}

}  // namespace

nlohmann::json VerifyReportJson(const worker::VerifyReport& r) {
  const Counts c = Count(r);
  nlohmann::json linears = nlohmann::json::array();
  for (const worker::VerifyLinear& l : r.linears) {
    nlohmann::json j = {{"tensor", l.tensor}, {"k", l.k}, {"n", l.n}, {"status", l.status}};
    if (l.status != "unsupported") {
      j["max_rel_err"] = Num(l.max_rel_err);
      j["threshold"] = l.threshold;
    }
    if (!l.detail.empty()) j["detail"] = l.detail;
    linears.push_back(std::move(j));
  }
  nlohmann::json shapes = nlohmann::json::array();
  for (const worker::VerifyTiming& t : r.timings) {
    nlohmann::json j = {{"k", t.k}, {"n", t.n}, {"m", t.m}, {"linears", t.linears}, {"variant", t.variant}};
    if (t.fused_us > 0 && t.cublas_us > 0) {
      j["fused_us"] = t.fused_us;
      j["cublas_us"] = t.cublas_us;
      j["speedup"] = t.cublas_us / t.fused_us;
    }
    shapes.push_back(std::move(j));
  }
  const worker::VerifyPerplexity& p = r.ppl;
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

std::string VerifyReportTable(const worker::VerifyReport& r) {
  const Counts c = Count(r);
  std::string out = absl::StrFormat("artifact    %s (%s, %d bits, group %d, %s%s)\ndevice      %s, %s\n", r.artifact_dir,
                                    r.format, r.bits, r.group_size, r.sym ? "sym" : "asym",
                                    r.desc_act ? ", act-order" : "", r.device, r.dtype);
  absl::StrAppendFormat(&out, "linears     %d at M = %s: %d ok, %d failed, %d unsupported", r.linears.size(),
                        absl::StrJoin(r.check_ms, ", "), c.ok, c.failed, c.unsupported);
  if (c.ok + c.failed > 0) {
    absl::StrAppendFormat(&out, "; max rel. error %.2e (threshold %.2g)", c.max_rel_err, c.threshold);
  }
  out += "\n";
  int listed = 0;
  for (const worker::VerifyLinear& l : r.linears) {
    if (l.status == "ok") continue;
    if (++listed > 8) {
      absl::StrAppendFormat(&out, "  ... %d more in verify.json\n", c.failed + c.unsupported - 8);
      break;
    }
    absl::StrAppendFormat(&out, "  %-11s %s: %s\n", l.status, l.tensor, l.detail);
  }
  if (!r.timing_measured) {
    absl::StrAppendFormat(&out, "throughput  %s\n", r.timing_note);
  } else {
    absl::StrAppendFormat(&out, "throughput  fused W4A16 vs cuBLAS %s, same run, median of %d, L2 flushed\n",
                          absl::AsciiStrToUpper(r.dtype), r.iters);
    absl::StrAppendFormat(&out, "  %7s %7s %5s %10s %10s %8s  %-22s %s\n", "K", "N", "M", "fused us", "cuBLAS us",
                          "speedup", "variant", "linears");
    for (const worker::VerifyTiming& t : r.timings) {
      if (t.fused_us <= 0) {
        absl::StrAppendFormat(&out, "  %7d %7d %5d %10s %10s %8s  %-22s %s\n", t.k, t.n, t.m, "-", "-", "-", t.variant,
                              t.linears);
        continue;
      }
      absl::StrAppendFormat(&out, "  %7d %7d %5d %10.1f %10.1f %7.2fx  %-22s %s\n", t.k, t.n, t.m, t.fused_us,
                            t.cublas_us, t.cublas_us / t.fused_us, t.variant, t.linears);
    }
  }
  const worker::VerifyPerplexity& p = r.ppl;
  if (!p.measured) {
    absl::StrAppendFormat(&out, "perplexity  %s\n", p.note);
  } else {
    absl::StrAppendFormat(&out, "perplexity  fused %.4f vs dequantized %.4f: rel. diff %.1e (tolerance %.0e) %s\n",
                          p.fused, p.dequant, p.rel_diff, p.tolerance, p.passed ? "ok" : "FAILED");
    absl::StrAppendFormat(&out, "            %d chunks x %d tokens of %s\n", p.chunks, p.seqlen, p.text);
  }
  absl::StrAppendFormat(&out, "verdict     %s (%.1f s)\n", r.verdict, r.seconds);
  return out;
}

absl::Status RunVerifyStage(worker::Engine& engine, const VerifyCliOptions& o) {
  if (!IsDirectory(o.artifact)) return absl::NotFoundError(absl::StrCat(o.artifact, ": no such artifact directory"));
  worker::VerifySpec spec;
  spec.artifact_dir = o.artifact;
  spec.device = o.device;
  spec.iters = o.iters;
  spec.dtype = o.dtype;
  if (!o.text.empty()) {
    QF_ASSIGN_OR_RETURN(auto tok, worker::Tokenizer::Load(o.artifact));
    QF_ASSIGN_OR_RETURN(spec.tokens, worker::BuildEvalTokens(*tok, o.text, o.seqlen, o.max_chunks));
    spec.seqlen = o.seqlen;
    spec.text = o.text;
  }
  std::unique_ptr<ProgressReporter> bar;
  std::string stage;
  QF_ASSIGN_OR_RETURN(worker::VerifyReport r, engine.Verify(spec, [&](const std::string& s, int done, int total) {
    if (s != stage) {
      if (bar) bar->Finish(stage);
      bar = std::make_unique<ProgressReporter>(absl::StrCat("verify ", s), total);
      stage = s;
    }
    bar->Update(done, s);
  }));
  if (bar) bar->Finish(stage);
  const std::string path = absl::StrCat(o.artifact, "/", kVerifyReportName);
  QF_RETURN_IF_ERROR(WriteFileAtomic(path, VerifyReportJson(r).dump(2) + "\n"));
  if (o.print && o.json) {
    std::printf("%s\n", VerifyReportJson(r).dump().c_str());
  } else if (o.print) {
    std::printf("%sreport      %s\n", VerifyReportTable(r).c_str(), path.c_str());
  }
  std::fflush(stdout);
  if (r.verdict == "failed") return absl::FailedPreconditionError(absl::StrCat(o.artifact, ": ", r.failure));
  return absl::OkStatus();
}

}  // namespace qf::qctl
