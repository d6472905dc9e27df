// qctl quantize: the main job on one machine. Tokenizes the calibration text,
// runs the engine layer by layer, and writes the artifact atomically.
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/sha256.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "qctl/commands.h"
#include "qctl/progress.h"
#include "qctl/quantize_options.h"
#include "storage/artifact.h"
#include "storage/model_config.h"
#include "worker/calibration.h"
#include "worker/engine/engine_host.h"
#include "worker/tokenizer.h"

namespace qf::qctl {
namespace {

absl::Status RunQuantize(const QuantizeOptions& o) {
  QF_RETURN_IF_ERROR(ValidateQuantizeOptions(o));
  QF_ASSIGN_OR_RETURN(storage::ModelConfig cfg, storage::LoadModelConfig(o.model));
  worker::SessionSpec spec = ToSessionSpec(o);
  std::string calib_sha;
  if (spec.quant.method != "rtn") {
    QF_ASSIGN_OR_RETURN(auto tok, worker::Tokenizer::Load(o.model));
    QF_ASSIGN_OR_RETURN(spec.calib_tokens,
                        worker::BuildCalibrationTokens(*tok, {o.calib, o.samples, o.seqlen, o.seed}));
    QF_ASSIGN_OR_RETURN(calib_sha, Sha256FileHex(o.calib));
  } else {
    spec.samples = 0;
    spec.seqlen = 0;
  }
  // Fail on an unwritable output before any work, not after it.
  QF_RETURN_IF_ERROR(CheckOutputWritable(o.out));
  QF_ASSIGN_OR_RETURN(auto engine, worker::Engine::Load());
  QF_ASSIGN_OR_RETURN(auto session, engine->OpenSession(spec));
  const int n = session->num_layers();
  ProgressReporter bar("quantize", n);
  std::vector<kernels::LayerResult> layers;
  for (int i = 0; i < n; ++i) {
    bar.Update(i, absl::StrCat("layer ", i + 1, "/", n));
    QF_ASSIGN_OR_RETURN(kernels::LayerResult r, session->QuantizeLayer(i, [&](const std::string& stage, int done, int total) {
      bar.Update(i, absl::StrCat("layer ", i + 1, "/", n, " ", stage, " ", done, "/", total));
    }));
    layers.push_back(std::move(r));
  }
  bar.Update(n, "writing artifact");
  nlohmann::json provenance = QuantizeProvenance(o, calib_sha);
  QF_RETURN_IF_ERROR(storage::WriteArtifact(o.model, cfg, ToQuantSpec(o), layers, o.out, provenance));
  double secs = bar.ElapsedSeconds();
  bar.Finish(absl::StrCat("wrote ", o.out));
  if (o.json) {
    nlohmann::json j = {{"artifact", o.out}, {"method", o.method}, {"bits", o.bits}, {"group_size", o.group_size},
                        {"layers", n}, {"seconds", secs}};
    std::printf("%s\n", j.dump().c_str());
  }
  return absl::OkStatus();
}

}  // namespace

CommandFn SetupQuantize(CLI::App* sub) {
  auto o = std::make_shared<QuantizeOptions>();
  AddQuantizeFlags(sub, o.get());
  sub->add_flag("--json", o->json, "Print a JSON summary on stdout");
  return [o] { return RunQuantize(*o); };
}

}  // namespace qf::qctl
