// File: coordinator/server.h
//
// A running coordinator: the state store, the scheduler, the two gRPC
// services on one server, and two background threads (lease expiry every
// maintenance_interval_ms; assembly of jobs whose layers are all committed).
// qcoordinator's main and the embedded mode of `qctl quantize` both use it.
//
//   CoordinatorOptions o;
//   o.listen = "127.0.0.1:0";          // port 0: the kernel picks one
//   o.state_dir = "/var/lib/qforge";
//   QF_ASSIGN_OR_RETURN(auto c, Coordinator::Start(o));
//   std::cout << c->port();            // the port actually bound
//   auto channel = c->InProcessChannel();  // same services, no socket
//   c->Shutdown();
#pragma once

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "coordinator/assembler.h"
#include "coordinator/clock.h"
#include "coordinator/handler_pool.h"
#include "coordinator/scheduler.h"
#include "coordinator/services.h"
#include "grpcpp/channel.h"
#include "grpcpp/server.h"
#include "storage/state_store.h"

namespace qf::coordinator {

struct CoordinatorOptions {
  // "HOST:PORT" (PORT 0 picks a free one), "unix:/path/to.sock", or empty for
  // in-process channels only.
  std::string listen;
  std::string state_dir;              // RocksDB directory, created if missing
  SchedulerOptions scheduler;
  int maintenance_interval_ms = 200;  // lease-expiry sweep period
  AssembleFn assemble;                // empty: AssembleArtifact (storage::WriteArtifact)
  bool sync = true;                   // fsync every commit group (off only in tests that do not need durability)
  int handler_threads = 32;           // RPC handlers waiting for durability at once (group commit width)
  // Called once, from the maintenance thread, when the state store has failed
  // a write (a full disk): from then on no job can make progress here, and
  // only a restart from disk (once the disk is fixed) can go on.
  std::function<void(const absl::Status&)> on_store_failure;
  rocksdb::Env* store_env = nullptr;  // tests: StateStoreOptions::env
};

class Coordinator {
 public:
  // Opens the state (reloading jobs, expiring stale leases), starts the
  // server and the threads. Unavailable if the address cannot be bound or the
  // state dir is held by another coordinator; the store's errors otherwise.
  static absl::StatusOr<std::unique_ptr<Coordinator>> Start(CoordinatorOptions options,
                                                            const Clock* clock = nullptr);
  ~Coordinator();

  int port() const { return port_; }
  Scheduler* scheduler() { return scheduler_.get(); }
  storage::StateStore* store() { return store_.get(); }
  std::shared_ptr<grpc::Channel> InProcessChannel();

  // Stops accepting calls, ends open streams, joins the threads. Idempotent.
  void Shutdown();

 private:
  Coordinator() = default;
  void MaintenanceLoop();
  void AssemblyLoop();

  CoordinatorOptions options_;
  RealClock real_clock_;
  const Clock* clock_ = nullptr;
  std::unique_ptr<storage::StateStore> store_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<HandlerPool> pool_;
  std::unique_ptr<JobServiceImpl> job_service_;
  std::unique_ptr<WorkServiceImpl> work_service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool store_failure_reported_ = false;  // maintenance thread only
  bool assembly_pending_ = true;  // check once at start: jobs may have been left mid-assembly
  std::thread maintenance_;
  std::thread assembly_;
};

}  // namespace qf::coordinator
