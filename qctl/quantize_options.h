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
#include "proto/job.pb.h"

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
  int64_t awq_search_tokens = 65536;
  std::string calib;
  int samples = 128;
  int seqlen = 512;
  uint64_t seed = 0;
  std::string format = "gptq";
  std::string out;
  std::string device = "cpu";
  bool host_activations = false;   // CUDA: calibration activations in pinned host memory
  int cpu_threads = 0;             // quantize: the engine's CPU threads; 0: common/cpu_budget.h
  // Cluster jobs (`qctl submit`).
  std::string mode = "sequential";
  int stage_layers = 0;            // 0: the coordinator's default
  int priority = 0;
  bool json = false;
  // The verify stage (JobSpec.verify*): `qctl quantize` runs it after the job
  // in its own process, a cluster job on a worker after assembly.
  bool verify = false;
  std::string verify_text;         // empty: no perplexity check
  int verify_seqlen = 512;
  int verify_max_chunks = 256;
  std::string verify_dtype = "fp16";
};

void AddQuantizeFlags(CLI::App* sub, QuantizeOptions* o);

// InvalidArgument naming the flag: unknown method/format, bits, awq format with
// bits != 4 or act-order, missing --calib for gptq/awq, missing files.
absl::Status ValidateQuantizeOptions(const QuantizeOptions& o);

// PermissionDenied naming the directory when the artifact cannot be written.
absl::Status CheckOutputWritable(const std::string& out);

// The JobSpec both `qctl quantize` (embedded) and `qctl submit` send: one
// mapping, so an embedded run and a cluster run write the same bytes.
proto::JobSpec ToJobSpec(const QuantizeOptions& o);

// Cluster-only flags (`qctl submit`): --mode, --stage-layers, --priority.
void AddClusterJobFlags(CLI::App* sub, QuantizeOptions* o);

// --verify, --verify-text, --verify-seqlen, --verify-max-chunks, --verify-dtype
// (both commands; `device` names where the stage runs).
void AddVerifyFlags(CLI::App* sub, QuantizeOptions* o, const char* device);

}  // namespace qf::qctl
