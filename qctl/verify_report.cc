#include "qctl/verify_report.h"

#include <cstdio>
#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/fs.h"
#include "common/status_macros.h"
#include "common/verify_vocab.h"
#include "qctl/progress.h"

namespace qf::qctl {
std::string VerifyReportTable(const worker::VerifyReport& r) {
  const worker::VerifyCounts c = worker::CountVerifyLinears(r);
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
  QF_ASSIGN_OR_RETURN(worker::VerifySpec spec, worker::MakeVerifySpec(o));
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
  QF_RETURN_IF_ERROR(WriteFileAtomic(path, worker::VerifyReportJson(r).dump(2) + "\n"));
  if (o.print && o.json) {
    std::printf("%s\n", worker::VerifyReportJson(r).dump().c_str());
  } else if (o.print) {
    std::printf("%sreport      %s\n", VerifyReportTable(r).c_str(), path.c_str());
  }
  std::fflush(stdout);
  if (r.verdict == kVerdictFailed) return absl::FailedPreconditionError(absl::StrCat(o.artifact, ": ", r.failure));
  return absl::OkStatus();
}

}  // namespace qf::qctl
