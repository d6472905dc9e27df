// qcoordinator --listen HOST:PORT --state DIR [--stage-layers K] [--lease-ttl-ms MS]
//
// The coordinator process: the only owner of job state (RocksDB in --state),
// serving JobService to qctl and WorkService to qworker. On start it reloads
// every job, expires stale leases and carries on. SIGINT/SIGTERM stop it;
// kill -9 loses nothing that was acknowledged. A state store that fails a
// write (a full disk) ends it with exit 1 and one line naming the directory.
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <thread>

#include "CLI/CLI.hpp"
#include "common/log.h"
#include "coordinator/assembler.h"
#include "coordinator/server.h"

int main(int argc, char** argv) {
  qf::coordinator::CoordinatorOptions o;
  o.listen = "127.0.0.1:7070";
  CLI::App app{"qforge coordinator: job state, leases and assembly"};
  app.add_option("--listen", o.listen, "HOST:PORT (port 0 picks a free one) or unix:/path")->capture_default_str();
  app.add_option("--state", o.state_dir, "State directory (RocksDB), created if missing")->required();
  app.add_option("--stage-layers", o.scheduler.default_stage_layers,
                 "Decoder layers per stage for jobs that do not say")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--lease-ttl-ms", o.scheduler.lease_ttl_ms, "A lease expires this long after its last renewal")
      ->capture_default_str()
      ->check(CLI::Range(100, 3600 * 1000));
  app.add_option("--renew-interval-ms", o.scheduler.renew_interval_ms, "How often workers renew")
      ->capture_default_str()
      ->check(CLI::Range(20, 600 * 1000));
  app.add_option("--affinity-grace-ms", o.scheduler.affinity_grace_ms,
                 "How long a sequential job's next stage waits for the worker that ran the previous one")
      ->capture_default_str()
      ->check(CLI::Range(0, 3600 * 1000));
  app.add_option("--handoff-wait-ms", o.scheduler.handoff_wait_ms,
                 "Parallel mode: how long a stage waits for its predecessor's activations before replaying")
      ->capture_default_str()
      ->check(CLI::Range(0, 3600 * 1000));
  app.add_option("--handoff-transfer-ms", o.scheduler.handoff_transfer_ms,
                 "Parallel mode: a paired activation transfer (NCCL set-up included) must end within this")
      ->capture_default_str()
      ->check(CLI::Range(100, 3600 * 1000));
  int assemble_delay_ms = 0;
  app.add_option("--fault-assemble-layer-delay-ms", assemble_delay_ms,
                 "Fault injection (tests): the assembler waits this long before each layer")
      ->check(CLI::Range(0, 60000));
  CLI11_PARSE(app, argc, argv);
  if (assemble_delay_ms > 0) {
    // Holds the assemble stage open long enough for a test to kill the process in it.
    o.assemble = [assemble_delay_ms](const qf::coordinator::AssemblyInput& in) {
      qf::coordinator::AssemblyInput slow = in;
      slow.layer = [inner = in.layer, assemble_delay_ms](int layer) {
        std::this_thread::sleep_for(std::chrono::milliseconds(assemble_delay_ms));
        return inner(layer);
      };
      return qf::coordinator::AssembleArtifact(slow);
    };
  }
  if (o.scheduler.renew_interval_ms * 2 >= o.scheduler.lease_ttl_ms) {
    std::fprintf(stderr, "qcoordinator: --renew-interval-ms %d: expected less than half of --lease-ttl-ms %d\n",
                 o.scheduler.renew_interval_ms, o.scheduler.lease_ttl_ms);
    return 2;
  }

  // Signals are taken by sigwait below, not by whichever thread they hit.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGUSR1);  // ours: the state store failed
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  // A store that failed a write takes no more, and the orchestrator can only
  // help by restarting us from disk: exit 1 after the one line that says why.
  o.on_store_failure = [](const absl::Status&) { kill(getpid(), SIGUSR1); };

  auto coordinator = qf::coordinator::Coordinator::Start(o);
  if (!coordinator.ok()) {
    std::fprintf(stderr, "qcoordinator: %s\n", std::string(coordinator.status().message()).c_str());
    return 1;
  }
  // One parseable line: tests and scripts read the bound port from it.
  std::printf("qcoordinator listening on %s port %d state %s\n", o.listen.c_str(), (*coordinator)->port(),
              o.state_dir.c_str());
  std::fflush(stdout);
  int sig = 0;
  sigwait(&signals, &sig);
  if (sig == SIGUSR1) {
    (*coordinator)->Shutdown();
    return 1;  // the maintenance thread logged the store's error
  }
  QF_LOG(INFO) << "qcoordinator: signal " << sig << ", shutting down";
  (*coordinator)->Shutdown();
  return 0;
}
