// qworker --coordinator HOST:PORT --device cpu|cuda:N[,cuda:M...] --name NAME
//
// A worker process: loads the numeric engine (libqf_engine.so, dlopen'ed),
// registers with the coordinator and runs stages until SIGINT/SIGTERM; the
// stage in hand is given back (Release) at its next layer boundary, or within
// one check of the verify stage, so another worker takes it at once. A
// restart under the same --name releases the leases of the previous process.
// With several devices (--device cuda:0,cuda:1, or cuda:0,1) it runs one
// worker loop per device, registered as NAME-0, NAME-1, ..., over one loaded
// engine; in parallel mode they hand activations to each other over NCCL
// like any two workers.
#include <csignal>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "common/cpu_threads_flag.h"
#include "common/log.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "worker/engine/engine_host.h"
#include "worker/runtime/worker.h"

int main(int argc, char** argv) {
  std::string coordinator = "127.0.0.1:7070";
  qf::worker::WorkerOptions o;
  CLI::App app{"qforge worker: leases stages from the coordinator and quantizes them"};
  app.add_option("--coordinator", coordinator, "Coordinator address, HOST:PORT or unix:/path")->capture_default_str();
  std::vector<std::string> device_list;  // CLI11 splits a comma list itself
  app.add_option("--device", device_list, "cpu | cuda | cuda:N, or a comma-separated list (cuda:0,1): a worker loop per device")
      ->delimiter(',');
  bool no_handoff = false;
  app.add_flag("--no-handoff", no_handoff, "Parallel mode: always replay, never hand activations GPU to GPU");
  app.add_flag("--host-activations", o.host_activations,
               "CUDA: keep the calibration activations in pinned host memory (GPUs too small to hold them)");
  app.add_option("--name", o.name, "Worker name, unique in the pool ([A-Za-z0-9._-], <= 64)")->required();
  int cpu_threads = 0;
  qf::AddCpuThreadsFlag(&app, &cpu_threads);
  app.add_option("--chunk-bytes", o.client.chunk_bytes, "Bytes per PutLayer chunk")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1024}, size_t{4} << 20));
  app.add_option("--retry-window-ms", o.client.retry_window_ms,
                 "How long to keep retrying an unreachable coordinator")
      ->capture_default_str();
  // Fault injection for the integration tests.
  auto* faults = app.add_option_group("faults", "Fault injection (tests only)");
  faults->add_option("--fault-corrupt-layer", o.client.corrupt_layer_once,
                     "Corrupt one chunk of this layer on its first send");
  faults->add_option("--fault-stall-after-layer", o.stall_after_layer,
                     "After computing this layer, stop renewing and stall before sending it");
  faults->add_option("--fault-stall-ms", o.stall_ms, "How long the stall lasts");
  faults->add_option("--fault-layer-delay-ms", o.layer_delay_ms, "Sleep before computing each layer");
  faults->add_option("--fault-verify-delay-ms", o.verify_delay_ms, "Sleep (renewing) before a verify stage starts");
  CLI11_PARSE(app, argc, argv);
  o.handoff = !no_handoff;
  o.device.clear();
  for (const std::string& d : device_list) o.device += (o.device.empty() ? "" : ",") + d;
  if (o.device.empty()) o.device = "cpu";
  auto devices = qf::worker::SplitDevices(o.device);
  if (!devices.ok()) {
    std::fprintf(stderr, "qworker: --device: %s\n", std::string(devices.status().message()).c_str());
    return 2;
  }

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto engine = qf::worker::Engine::Load(cpu_threads);
  if (!engine.ok()) {
    std::fprintf(stderr, "qworker: %s\n", std::string(engine.status().message()).c_str());
    return 1;
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(16 << 20);
  auto channel = grpc::CreateCustomChannel(coordinator, grpc::InsecureChannelCredentials(), args);
  // One loop per device; a single device keeps the name as given.
  std::vector<std::unique_ptr<qf::worker::Worker>> workers;
  for (size_t i = 0; i < devices->size(); ++i) {
    qf::worker::WorkerOptions wo = o;
    wo.device = (*devices)[i];
    if (devices->size() > 1) wo.name = o.name + "-" + std::to_string(i);
    workers.push_back(std::make_unique<qf::worker::Worker>(channel, engine->get(), wo));
  }

  std::atomic<bool> stop{false};
  std::thread signal_thread([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    QF_LOG(INFO) << "qworker " << o.name << ": signal " << sig << ", stopping after the current layer";
    stop = true;
  });
  std::vector<absl::Status> results(workers.size());
  std::vector<std::thread> loops;
  for (size_t i = 0; i < workers.size(); ++i) {
    loops.emplace_back([&, i] {
      results[i] = workers[i]->Run(&stop);
      if (!results[i].ok() && !stop) {
        // Unreachable: say which address was tried (the RPC names itself).
        const std::string where = absl::IsUnavailable(results[i]) ? "--coordinator " + coordinator + ": " : "";
        std::fprintf(stderr, "qworker: %s%s\n", where.c_str(), std::string(results[i].message()).c_str());
        std::_Exit(1);  // the signal thread is still waiting
      }
    });
  }
  for (auto& t : loops) t.join();
  signal_thread.join();
  for (const absl::Status& s : results) {
    if (!s.ok()) return 1;
  }
  return 0;
}
