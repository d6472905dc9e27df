#include "coordinator/server.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/server_builder.h"

namespace qf::coordinator {

absl::StatusOr<std::unique_ptr<Coordinator>> Coordinator::Start(CoordinatorOptions options, const Clock* clock) {
  std::unique_ptr<Coordinator> c(new Coordinator());
  c->options_ = std::move(options);
  c->clock_ = clock != nullptr ? clock : &c->real_clock_;
  if (!c->options_.assemble) c->options_.assemble = AssembleArtifact;
  storage::StateStoreOptions so;
  so.sync = c->options_.sync;
  so.env = c->options_.store_env;
  QF_ASSIGN_OR_RETURN(c->store_, storage::StateStore::Open(c->options_.state_dir, so));
  QF_ASSIGN_OR_RETURN(c->scheduler_, Scheduler::Create(c->store_.get(), c->clock_, c->options_.scheduler));
  c->pool_ = std::make_unique<HandlerPool>(std::max(1, c->options_.handler_threads));
  c->job_service_ = std::make_unique<JobServiceImpl>(c->scheduler_.get(), c->pool_.get());
  c->work_service_ = std::make_unique<WorkServiceImpl>(c->scheduler_.get(), c->pool_.get());

  // grpc.health.v1 (proto/health.proto), for Kubernetes' grpc readiness
  // probe: SERVING once the state above is loaded and the port is bound.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  if (!c->options_.listen.empty())
    builder.AddListeningPort(c->options_.listen, grpc::InsecureServerCredentials(), &c->port_);
  builder.RegisterService(c->job_service_.get());
  builder.RegisterService(c->work_service_.get());
  builder.SetMaxReceiveMessageSize(16 << 20);  // chunks are <= 4 MiB (layer_codec.h)
  builder.SetMaxSendMessageSize(16 << 20);
  c->server_ = builder.BuildAndStart();
  if (c->server_ == nullptr || (!c->options_.listen.empty() && c->port_ == 0 &&
                                c->options_.listen.rfind("unix:", 0) != 0))
    return absl::UnavailableError(absl::StrCat("--listen ", c->options_.listen, ": cannot bind (in use or bad address?)"));

  Coordinator* self = c.get();
  c->scheduler_->SetAssemblyWakeup([self] {
    std::lock_guard<std::mutex> l(self->mu_);
    self->assembly_pending_ = true;
    self->cv_.notify_all();
  });
  c->maintenance_ = std::thread([self] { self->MaintenanceLoop(); });
  c->assembly_ = std::thread([self] { self->AssemblyLoop(); });
  return c;
}

Coordinator::~Coordinator() { Shutdown(); }

std::shared_ptr<grpc::Channel> Coordinator::InProcessChannel() {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(16 << 20);
  return server_->InProcessChannel(args);
}

void Coordinator::Shutdown() {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stopping_) return;
    stopping_ = true;
    cv_.notify_all();
  }
  if (scheduler_) scheduler_->SetAssemblyWakeup(nullptr);
  // Open Watch streams would hold Shutdown forever; cancel them after a moment.
  if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(300));
  if (maintenance_.joinable()) maintenance_.join();
  if (assembly_.joinable()) assembly_.join();
  if (server_) server_->Wait();
  pool_.reset();  // drains the handlers still queued; their calls are already cancelled
}

void Coordinator::MaintenanceLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    cv_.wait_for(lock, std::chrono::milliseconds(options_.maintenance_interval_ms));
    if (stopping_) break;
    lock.unlock();
    absl::Status health = scheduler_->StoreHealth();
    if (health.ok()) {
      absl::StatusOr<int> n = scheduler_->ExpireLeases();
      if (!n.ok()) QF_LOG(ERROR) << "lease expiry: " << n.status();
    } else if (!store_failure_reported_) {
      store_failure_reported_ = true;
      QF_LOG(ERROR) << health.message();
      if (options_.on_store_failure) options_.on_store_failure(health);
    }
    lock.lock();
  }
}

void Coordinator::AssemblyLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return stopping_ || assembly_pending_; });
    if (stopping_) break;
    assembly_pending_ = false;
    lock.unlock();
    for (const std::string& job_id : scheduler_->TakeJobsToAssemble()) {
      absl::StatusOr<AssemblyInput> in = scheduler_->LoadAssemblyInput(job_id);
      absl::Status s = in.ok() ? options_.assemble(*in) : in.status();
      if (!s.ok()) QF_LOG(ERROR) << "job " << job_id << ": assemble failed: " << s;
      absl::Status fin = scheduler_->FinishAssembly(job_id, s);
      if (!fin.ok()) QF_LOG(ERROR) << "job " << job_id << ": recording assembly: " << fin;
    }
    lock.lock();
  }
}

}  // namespace qf::coordinator
