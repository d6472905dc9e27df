// qctl verify ARTIFACT: the fused W4A16 GEMM on the artifact's own linears
// against the dequantized reference, its throughput against cuBLAS (FP16 or,
// --dtype bf16, BF16) on the model's shapes (GPU), and perplexity through the fused path
// (worker/engine/verify.h). Writes ARTIFACT/verify.json.
#include "common/status_macros.h"
#include "qctl/commands.h"
#include "qctl/verify_report.h"
#include "worker/engine/engine_host.h"

namespace qf::qctl {

CommandFn SetupVerify(CLI::App* sub) {
  auto o = std::make_shared<VerifyCliOptions>();
  sub->add_option("artifact", o->artifact, "qforge artifact directory")->required();
  sub->add_option("--device", o->device, "cpu | cuda | cuda:N")->capture_default_str();
  sub->add_option("--text", o->text, "UTF-8 text for the perplexity check (none: skipped)");
  sub->add_option("--seqlen", o->seqlen, "Tokens per perplexity chunk")->capture_default_str();
  sub->add_option("--max-chunks", o->max_chunks, "Perplexity over the first N chunks")->capture_default_str();
  sub->add_option("--iters", o->iters, "Timed calls per shape and M (the median is reported)")->capture_default_str();
  sub->add_option("--dtype", o->dtype, "Activations, scales and outputs of the fused path (and cuBLAS): fp16 | bf16")
      ->capture_default_str();
  sub->add_flag("--json", o->json, "Print verify.json's object instead of the table");
  AddCpuThreadsFlag(sub, &o->cpu_threads);
  return [o]() -> absl::Status {
    QF_ASSIGN_OR_RETURN(auto engine, worker::Engine::Load(o->cpu_threads));
    return RunVerifyStage(*engine, *o);
  };
}

}  // namespace qf::qctl
