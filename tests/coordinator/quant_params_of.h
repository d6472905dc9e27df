// File: tests/coordinator/quant_params_of.h
//
// The QuantParams a test's fake layers are made with: the JobSpec fields that
// shape a layer result (worker::ToQuantParams also sets the search and damping
// knobs, and lives in the worker runtime, which a fuzz target need not link).
//
//   kernels::LayerResult r = MakeFakeLayer(cfg, QuantParamsOf(task.spec()), layer, seed);
#pragma once

#include "proto/job.pb.h"
#include "worker/engine/engine_host.h"

namespace qf::testing {

inline worker::QuantParams QuantParamsOf(const proto::JobSpec& s) {
  worker::QuantParams q;
  q.method = s.method();
  q.bits = s.bits();
  q.group_size = s.group_size();
  q.sym = s.sym();
  q.act_order = s.act_order();
  q.static_groups = s.static_groups();
  return q;
}

}  // namespace qf::testing
