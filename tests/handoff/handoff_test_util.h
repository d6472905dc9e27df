// File: tests/handoff/handoff_test_util.h
//
// Shared by the hand-off engine tests: sessions of tiny-llama, a sender thread
// that moves its copy over a link, and the comparison of a layer's result.
#pragma once

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "worker/engine/engine_host.h"
#include "worker/engine/loopback_link.h"

namespace qf::worker::testing {

inline const std::string kModel = std::string(QF_SOURCE_DIR) + "/models/tiny-llama";

inline SessionSpec TinySpec(const std::string& device, const std::string& method = "gptq") {
  SessionSpec s;
  s.model_dir = kModel;
  s.device = device;
  s.samples = 4;
  s.seqlen = 32;
  for (int i = 0; i < s.samples * s.seqlen; ++i) s.calib_tokens.push_back((i * 7919 + 13) % 8000);
  s.quant.method = method;
  return s;
}

inline void ExpectSameResult(const kernels::LayerResult& a, const kernels::LayerResult& b) {
  ASSERT_EQ(a.linears.size(), b.linears.size());
  for (size_t i = 0; i < a.linears.size(); ++i) {
    SCOPED_TRACE(a.linears[i].name);
    EXPECT_TRUE(a.linears[i].codes == b.linears[i].codes);
    EXPECT_TRUE(a.linears[i].scales == b.linears[i].scales);
    EXPECT_TRUE(a.linears[i].zeros == b.linears[i].zeros);
  }
}

// Quantizes layer `b` of a session replayed through the FP16 layers 0..b-1.
inline kernels::LayerResult ReplayedLayer(Engine* engine, const SessionSpec& spec, int b) {
  auto s = engine->OpenSession(spec);
  EXPECT_TRUE(s.ok()) << s.status();
  for (int l = 0; l < b; ++l) EXPECT_TRUE((*s)->ForwardOriginalLayer(l).ok());
  auto r = (*s)->QuantizeLayer(b, nullptr);
  EXPECT_TRUE(r.ok()) << r.status();
  return *r;
}

// Moves a sender session's copy (made at layer `from`) to `receiver` over the
// links `connect` makes (rank 0 on a thread, rank 1 here). Returns the
// receiver's status; *send_status gets the sender's.
inline absl::Status HandOver(Engine* engine, const SessionSpec& sender_spec, int from, int to, Session* receiver,
                             const std::function<absl::StatusOr<std::unique_ptr<ActivationLink>>(int rank)>& connect,
                             absl::Status* send_status) {
  auto sender = engine->OpenSession(sender_spec);
  if (!sender.ok()) return sender.status();
  for (int l = 0; l < from; ++l) {
    absl::Status s = (*sender)->ForwardOriginalLayer(l);
    if (!s.ok()) return s;
  }
  auto acts = (*sender)->ForwardOriginalCopy(to);
  if (!acts.ok()) return acts.status();
  EXPECT_EQ((*acts)->layer(), to);
  std::thread t([&] {
    auto link = connect(0);
    *send_status = link.ok() ? (*acts)->Send(link->get()) : link.status();
  });
  absl::Status got;
  {
    auto link = connect(1);
    got = link.ok() ? receiver->ReceiveActivations(to, link->get()) : link.status();
  }
  t.join();
  return got;
}

}  // namespace qf::worker::testing
