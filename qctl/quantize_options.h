// File: qctl/quantize_options.h
//
// The flags of a quantization job, shared by `qctl quantize` (embedded) and
// `qctl submit` (cluster), their validation, and their mapping onto the
// engine's SessionSpec and the artifact's QuantSpec.
#pragma once

#include <cstdint>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "nlohmann/json.hpp"
#include "storage/artifact.h"
#include "worker/engine/engine_host.h"

namespace qf::qctl {

struct QuantizeOptions {
  std::string model;
  std::string method = "gptq";
  int bits = 4;
  int group_size = 128;
  bool act_order = false;
  bool sym = false;
  bool static_groups = false;
  bool no_true_sequential = false;
  double damp = 0.01;
  bool awq_paper_scales = false;   // AWQ: s = mean|x|^a only (no duo scaling)
  std::string calib;
  int samples = 128;
  int seqlen = 512;
  uint64_t seed = 0;
  std::string format = "gptq";
  std::string out;
  std::string device = "cpu";
  bool json = false;
};

void AddQuantizeFlags(CLI::App* sub, QuantizeOptions* o);

// InvalidArgument naming the flag: unknown method/format, bits, awq format with
// bits != 4 or act-order, missing --calib for gptq/awq, missing files.
absl::Status ValidateQuantizeOptions(const QuantizeOptions& o);

// PermissionDenied naming the directory when the artifact cannot be written.
absl::Status CheckOutputWritable(const std::string& out);

worker::SessionSpec ToSessionSpec(const QuantizeOptions& o);
storage::QuantSpec ToQuantSpec(const QuantizeOptions& o);
// What went in, for the manifest: no timestamps or host names, so the same
// command writes the same bytes.
nlohmann::json QuantizeProvenance(const QuantizeOptions& o, const std::string& calib_sha256);

}  // namespace qf::qctl
