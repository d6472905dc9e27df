// File: tests/fuzz/layer_result_fuzz.cc
//
// What the coordinator does with a worker's layer before it commits anything
// (coordinator/layer_codec.h): the bytes parsed as a LayerResultProto, then
// ValidateLayer against the model (tests/fuzz/micro_model.h) and the job's
// spec (GPTQ, 4 bits, group size 32), then LayerFromProto. A layer that
// ValidateLayer accepts must decode, and each of its linears must pass the
// dequantization contract: the assembler packs what gets past here.
#include <cstdlib>
#include <fstream>
#include <string>

#include "coordinator/layer_codec.h"
#include "kernels/ref/pack.h"
#include "tests/fuzz/fuzz_target.h"
#include "tests/fuzz/micro_model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const qf::storage::ModelConfig cfg = qf::fuzz::MicroConfig();
  static const qf::proto::JobSpec spec = [] {
    qf::proto::JobSpec s;
    s.set_method("rtn");
    s.set_bits(4);
    s.set_group_size(32);
    s.set_sym(false);
    s.set_act_order(false);
    if (const char* seed = std::getenv("QF_FUZZ_WRITE_LAYER_SEED"))
      std::ofstream(seed, std::ios::binary) << qf::coordinator::LayerToProto(qf::fuzz::MicroLayer()).SerializeAsString();
    return s;
  }();
  qf::proto::LayerResultProto layer;
  if (!layer.ParseFromArray(data, static_cast<int>(size))) return 0;  // the RPC layer refuses these
  const absl::Status valid = qf::coordinator::ValidateLayer(layer, 0, cfg, spec);
  if (!valid.ok()) {
    qf::fuzz::CheckRefusal(valid, "layer ");
    return 0;
  }
  auto decoded = qf::coordinator::LayerFromProto(layer);
  QF_FUZZ_CHECK(decoded.ok(), "validated, but does not decode: %s", std::string(decoded.status().message()).c_str());
  for (const auto& q : decoded->linears) {
    const absl::Status v = qf::kernels::ValidateQuantizedLinear(q);
    QF_FUZZ_CHECK(v.ok(), "validated, but breaks the contract: %s", std::string(v.message()).c_str());
  }
  qf::fuzz::NoteAccepted();
  return 0;
}
