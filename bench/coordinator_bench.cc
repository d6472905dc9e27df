// coordinator_bench: coordinator throughput with durable commits.
//
// A real Coordinator (RocksDB state with a synced WAL, gRPC services reached
// over an in-process channel) serves N fake workers doing no-op tasks. J jobs
// are queued first (one 1-layer stage each, on a synthetic 1-layer model);
// then every worker loops Lease -> PutLayer (a small precomputed layer) ->
// Complete until all jobs have succeeded (assembly is a no-op here). Each of
// the three is one durable state transition; the headline number counts
// lease + complete, as the issue asks, and the commits are reported beside it.
//
//   coordinator_bench [--jobs 1000] [--workers 64] [--state DIR]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "coordinator/client.h"
#include "coordinator/grpc_util.h"
#include "coordinator/layer_codec.h"
#include "coordinator/server.h"
#include "grpcpp/client_context.h"
#include "proto/work.grpc.pb.h"

namespace {

using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

// A 1-layer llama config with tiny shapes: validation runs as for a real model.
constexpr char kConfig[] = R"({"model_type": "llama", "hidden_size": 32, "intermediate_size": 64,
  "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16,
  "vocab_size": 64, "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "hidden_act": "silu",
  "rope_theta": 10000.0, "torch_dtype": "float16", "bos_token_id": 1, "eos_token_id": 2})";

std::string NoopLayer() {
  qf::kernels::LayerResult r;
  r.layer = 0;
  const struct { const char* name; int64_t out, in; } shapes[] = {
      {"self_attn.q_proj", 32, 32}, {"self_attn.k_proj", 16, 32}, {"self_attn.v_proj", 16, 32},
      {"self_attn.o_proj", 32, 32}, {"mlp.gate_proj", 64, 32},    {"mlp.up_proj", 64, 32},
      {"mlp.down_proj", 32, 64}};
  for (const auto& s : shapes) {
    qf::kernels::QuantizedLinear q;
    q.name = s.name;
    q.bits = 4;
    q.group_size = -1;
    q.out_features = s.out;
    q.in_features = s.in;
    q.num_groups = 1;
    q.codes.assign(s.out * s.in, 3);
    q.scales.assign(s.out, 0x2000);
    q.zeros.assign(s.out, 8);
    q.g_idx.assign(s.in, 0);
    r.linears.push_back(std::move(q));
  }
  return qf::coordinator::LayerToProto(r).SerializeAsString();
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5));
  return v[i];
}

struct WorkerResult {
  std::vector<double> lease_ms;  // latency of Lease calls that returned a task
  int leases = 0, commits = 0, completes = 0, empty_polls = 0, errors = 0;
};

void RunWorker(std::shared_ptr<grpc::Channel> channel, int id, const std::string& layer, std::atomic<int>* remaining,
               WorkerResult* out) {
  auto stub = qf::proto::WorkService::NewStub(channel);
  qf::proto::RegisterRequest reg;
  reg.set_name("bench-" + std::to_string(id));
  reg.set_incarnation("1");
  qf::proto::RegisterReply reg_reply;
  {
    grpc::ClientContext ctx;
    if (!stub->Register(&ctx, reg, &reg_reply).ok()) {
      out->errors++;
      return;
    }
  }
  std::vector<qf::proto::LayerChunk> chunks = qf::coordinator::SplitLayer(layer, 1 << 20);
  while (remaining->load() > 0) {
    qf::proto::LeaseRequest lr;
    lr.set_worker_id(reg_reply.worker_id());
    lr.set_incarnation("1");
    qf::proto::LeaseReply lease;
    auto t0 = Clock::now();
    grpc::ClientContext lctx;
    grpc::Status s = stub->Lease(&lctx, lr, &lease);
    double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    if (!s.ok()) {
      out->errors++;
      continue;
    }
    if (!lease.has_task()) {
      out->empty_polls++;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      continue;
    }
    out->leases++;
    out->lease_ms.push_back(ms);
    const qf::proto::TaskAssignment& t = lease.task();
    for (int l = t.start_layer(); l < t.end_layer(); ++l) {
      grpc::ClientContext pctx;
      qf::proto::PutLayerReply put;
      auto writer = stub->PutLayer(&pctx, &put);
      for (qf::proto::LayerChunk c : chunks) {
        c.set_attempt_id(t.attempt_id());
        c.set_job_id(t.job_id());
        c.set_layer(l);
        writer->Write(c);
      }
      writer->WritesDone();
      if (writer->Finish().ok()) out->commits++; else out->errors++;
    }
    qf::proto::CompleteRequest cr;
    cr.set_attempt_id(t.attempt_id());
    cr.set_worker_id(reg_reply.worker_id());
    qf::proto::CompleteReply done;
    grpc::ClientContext cctx;
    if (stub->Complete(&cctx, cr, &done).ok()) {
      out->completes++;
      remaining->fetch_sub(1);
    } else {
      out->errors++;
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  int jobs = 1000, workers = 64;
  std::string state;
  CLI::App app{"coordinator_bench: a real coordinator, in-process fake workers, no-op tasks over queued jobs"};
  app.add_option("--jobs", jobs, "jobs to submit")->check(CLI::Range(1, 1000000));
  app.add_option("--workers", workers, "fake workers leasing in parallel")->check(CLI::Range(1, 4096));
  app.add_option("--state", state, "state directory (default: a fresh temporary one)");
  CLI11_PARSE(app, argc, argv);
  const std::string root = (fs::temp_directory_path() / ("qf-coordinator-bench-" + std::to_string(::getpid()))).string();
  const std::string model = root + "/model";
  fs::create_directories(model);
  std::ofstream(model + "/config.json") << kConfig;
  std::ofstream(model + "/model.safetensors") << "";  // only its presence is checked
  if (state.empty()) state = root + "/state";

  qf::coordinator::CoordinatorOptions o;
  o.state_dir = state;
  o.assemble = [](const qf::coordinator::AssemblyInput&) { return absl::OkStatus(); };
  o.scheduler.idle_retry_ms = 2;
  auto coordinator = qf::coordinator::Coordinator::Start(o);
  if (!coordinator.ok()) {
    std::fprintf(stderr, "coordinator_bench: %s\n", std::string(coordinator.status().message()).c_str());
    return 1;
  }
  auto channel = (*coordinator)->InProcessChannel();
  qf::coordinator::JobClient client(channel);

  auto t_submit = Clock::now();
  for (int j = 0; j < jobs; ++j) {
    qf::proto::JobSpec spec;
    spec.set_model_path(model);
    spec.set_method("rtn");
    spec.set_group_size(-1);
    spec.set_out_dir(root + "/out-" + std::to_string(j));
    auto r = client.Submit(spec);
    if (!r.ok()) {
      std::fprintf(stderr, "coordinator_bench: submit: %s\n", std::string(r.status().message()).c_str());
      return 1;
    }
  }
  double submit_s = std::chrono::duration<double>(Clock::now() - t_submit).count();
  auto store_before = (*coordinator)->store()->stats();

  const std::string layer = NoopLayer();
  std::atomic<int> remaining{jobs};
  std::vector<WorkerResult> results(workers);
  std::vector<std::thread> threads;
  auto t0 = Clock::now();
  for (int w = 0; w < workers; ++w)
    threads.emplace_back(RunWorker, channel, w, std::cref(layer), &remaining, &results[w]);
  for (auto& t : threads) t.join();
  double run_s = std::chrono::duration<double>(Clock::now() - t0).count();
  auto store_after = (*coordinator)->store()->stats();

  // Every job must have gone all the way (no-op assembly is asynchronous).
  int succeeded = 0;
  for (int tries = 0; tries < 500 && succeeded < jobs; ++tries) {
    auto list = client.List({qf::proto::JOB_SUCCEEDED});
    succeeded = list.ok() ? static_cast<int>(list->size()) : 0;
    if (succeeded < jobs) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  (*coordinator)->Shutdown();

  WorkerResult total;
  for (auto& r : results) {
    total.lease_ms.insert(total.lease_ms.end(), r.lease_ms.begin(), r.lease_ms.end());
    total.leases += r.leases;
    total.commits += r.commits;
    total.completes += r.completes;
    total.empty_polls += r.empty_polls;
    total.errors += r.errors;
  }
  const double lc_rate = (total.leases + total.completes) / run_s;
  const double all_rate = (total.leases + total.commits + total.completes) / run_s;
  const uint64_t batches = store_after.batches - store_before.batches, groups = store_after.groups - store_before.groups;
  std::printf("coordinator_bench: %d jobs (1 stage x 1 layer each), %d in-process workers, %u hardware threads\n",
              jobs, workers, std::thread::hardware_concurrency());
  std::printf("  submit                 %8.0f jobs/s   (%d jobs in %.2f s)\n", jobs / submit_s, jobs, submit_s);
  std::printf("  lease+complete         %8.0f transitions/s  (%d leases + %d completes in %.2f s)\n", lc_rate,
              total.leases, total.completes, run_s);
  std::printf("  incl. layer commits    %8.0f transitions/s  (+%d PutLayer commits)\n", all_rate, total.commits);
  std::printf("  lease latency          p50 %.2f ms   p99 %.2f ms   (%zu leases; %d empty polls)\n",
              Percentile(total.lease_ms, 0.50), Percentile(total.lease_ms, 0.99), total.lease_ms.size(),
              total.empty_polls);
  std::printf("  durability             %llu batches in %llu synced WAL writes (%.1f batches per fsync)\n",
              static_cast<unsigned long long>(batches), static_cast<unsigned long long>(groups),
              groups ? static_cast<double>(batches) / groups : 0.0);
  std::printf("  jobs succeeded         %d / %d   errors %d\n", succeeded, jobs, total.errors);
  const bool pass = lc_rate >= 1000 && succeeded == jobs && total.errors == 0;
  std::printf("  target >= 1000 lease+complete transitions/s: %s\n", pass ? "PASS" : "FAIL");
  std::error_code ec;
  fs::remove_all(root, ec);
  return pass ? 0 : 1;
}
