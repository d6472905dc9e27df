// qctl eval: perplexity with the fixed protocol of worker/calibration.h
// (BuildEvalTokens) and worker/engine/eval.h.
#include <cstdio>

#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "qctl/commands.h"
#include "qctl/progress.h"
#include "worker/calibration.h"
#include "worker/engine/engine_host.h"
#include "worker/tokenizer.h"

namespace qf::qctl {
namespace {

struct EvalOptions {
  std::string model;
  std::string text;
  int seqlen = 512;
  int max_chunks = 256;
  std::string device = "cpu";
  std::string logits_out;
  bool json = false;
  int cpu_threads = 0;
};

absl::Status RunEval(const EvalOptions& o) {
  QF_ASSIGN_OR_RETURN(auto tok, worker::Tokenizer::Load(o.model));
  QF_ASSIGN_OR_RETURN(std::vector<int32_t> tokens, worker::BuildEvalTokens(*tok, o.text, o.seqlen, o.max_chunks));
  QF_ASSIGN_OR_RETURN(auto engine, worker::Engine::Load(o.cpu_threads));
  worker::EvalSpec spec;
  spec.model_dir = o.model;
  spec.device = o.device;
  spec.seqlen = o.seqlen;
  spec.tokens = std::move(tokens);
  spec.logits_out = o.logits_out;
  std::unique_ptr<ProgressReporter> bar;
  QF_ASSIGN_OR_RETURN(worker::EvalResult r, engine->Evaluate(spec, [&](int done, int total) {
    if (!bar) bar = std::make_unique<ProgressReporter>("eval", total);
    bar->Update(done, done < total ? "layers" : "lm_head");
  }));
  if (bar) bar->Finish("evaluated");
  if (o.json) {
    nlohmann::json j = {{"model", o.model}, {"text", o.text},  {"seqlen", o.seqlen},
                        {"chunks", r.chunks}, {"tokens", r.predicted_tokens}, {"ppl", r.ppl},
                        {"nll", r.nll_sum / static_cast<double>(r.predicted_tokens)}, {"seconds", r.seconds}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("model %s\ntext  %s\nchunks %lld x %d tokens (%lld predicted)\nppl   %.4f\ntime  %.1fs\n",
                o.model.c_str(), o.text.c_str(), static_cast<long long>(r.chunks), o.seqlen,
                static_cast<long long>(r.predicted_tokens), r.ppl, r.seconds);
  }
  return absl::OkStatus();
}

}  // namespace

CommandFn SetupEval(CLI::App* sub) {
  auto o = std::make_shared<EvalOptions>();
  sub->add_option("--model", o->model, "HF checkpoint or qforge artifact directory")->required();
  sub->add_option("--text", o->text, "UTF-8 text file to evaluate on")->required();
  sub->add_option("--seqlen", o->seqlen, "Tokens per chunk")->capture_default_str();
  sub->add_option("--max-chunks", o->max_chunks, "Evaluate the first N chunks")->capture_default_str();
  sub->add_option("--device", o->device, "cpu | cuda | cuda:N")->capture_default_str();
  sub->add_option("--logits-out", o->logits_out, "Write chunk 0's tokens and logits (safetensors) here");
  sub->add_flag("--json", o->json, "Print one JSON object");
  AddCpuThreadsFlag(sub, &o->cpu_threads);
  return [o] { return RunEval(*o); };
}

}  // namespace qf::qctl
