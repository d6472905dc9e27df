// File: tests/fuzz/state_records_fuzz.cc
//
// The coordinator restarting over its RocksDB state (coordinator/scheduler.cc,
// Scheduler::Load) when one record holds bytes it never wrote: a bug in an
// older version, a hand edit, bit rot under RocksDB's checksums.
//
// The base state is a real one, made once per process by the scheduler
// itself, with records in every family: job 1 (synthetic tiny model, two
// one-layer stages) has both stages done and waits for the assembler; job 2
// has stage 0 leased to worker "a" and layer 0 committed. An input is
//   byte 0: which record to replace (every family, key order), modulo their count;
//   the rest: that record's new value.
// Each input starts from the base state alone (whatever the previous input
// left is put back first), so a finding replays on its own. The contract:
//   - Load refuses on one line naming the state directory, or
//   - the scheduler it gives answers reads, events, leases, renewals, expiry,
//     the assembler's reads and cancellation without crashing; every
//     committed layer of job 1 whose record and job record are intact comes
//     back from the assembler's read (one bad record loses nothing else),
//     and a bad one is refused on one line; and what the scheduler writes
//     meanwhile loads again on the next start (a record the scheduler wrote
//     itself is never refused).
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "common/log.h"
#include "coordinator/clock.h"
#include "coordinator/layer_codec.h"
#include "coordinator/scheduler.h"
#include "storage/state/keys.h"
#include "storage/state_store.h"
#include "storage/synthetic_model.h"
#include "tests/coordinator/fake_engine.h"
#include "tests/coordinator/quant_params_of.h"
#include "tests/fuzz/fuzz_target.h"

namespace {

using qf::storage::StateFamily;

struct Record {
  StateFamily family;
  std::string key, value;
};

constexpr StateFamily kAll[] = {StateFamily::kMeta, StateFamily::kJobs, StateFamily::kTasks,
                                StateFamily::kLeases, StateFamily::kResults, StateFamily::kEvents};

qf::coordinator::SchedulerOptions Options() {
  qf::coordinator::SchedulerOptions o;
  o.lease_ttl_ms = 10000;
  o.renew_interval_ms = 2000;
  o.affinity_grace_ms = 3000;
  return o;
}

#define QF_FUZZ_SETUP_OK(expr)                                                            \
  do {                                                                                    \
    const absl::Status _st = (expr);                                                      \
    QF_FUZZ_CHECK(_st.ok(), "setting up the base state: %s", std::string(_st.message()).c_str()); \
  } while (0)

struct Base {
  std::unique_ptr<qf::storage::StateStore> store;
  std::vector<Record> records;  // every family, key order
  std::string assembling_job;   // job 1: both stages done
  std::string running_job;      // job 2: stage 0 leased, layer 0 committed
};

// A synthetic tiny job of two one-layer stages.
qf::proto::SubmitRequest TinyJob() {
  qf::proto::SubmitRequest submit;
  qf::proto::JobSpec& spec = *submit.mutable_spec();
  spec.set_model_path("synthetic:llama-tiny?layers=2&seed=7");
  spec.set_method("gptq");
  spec.set_samples(4);
  spec.set_seqlen(32);
  spec.set_out_dir("/nonexistent/qf-fuzz-artifact");  // never written: no assembly runs here
  spec.set_stage_layers(1);
  return submit;
}

// What worker `name` sends (setup and Exercise alike).
qf::proto::RegisterRequest RegisterRequestFor(const std::string& name) {
  qf::proto::RegisterRequest reg;
  reg.set_name(name);
  reg.set_incarnation("boot");
  reg.set_device("cpu");
  return reg;
}

qf::proto::LeaseRequest LeaseRequestFor(const std::string& name) {
  qf::proto::LeaseRequest lease;
  lease.set_worker_id(name);
  lease.set_incarnation("boot");
  return lease;
}

qf::proto::TaskAssignment LeaseFor(qf::coordinator::Scheduler& s, const std::string& worker) {
  auto leased = s.Lease(LeaseRequestFor(worker));
  QF_FUZZ_SETUP_OK(leased.status());
  QF_FUZZ_CHECK(leased->has_task(), "worker %s got no task", worker.c_str());
  return leased->task();
}

void CommitFake(qf::coordinator::Scheduler& s, const qf::proto::TaskAssignment& t, int layer) {
  auto cfg = qf::storage::LoadModelConfigOrSynthetic(t.spec().model_path());
  QF_FUZZ_SETUP_OK(cfg.status());
  qf::proto::LayerChunk header;
  header.set_attempt_id(t.attempt_id());
  header.set_job_id(t.job_id());
  header.set_layer(layer);
  const std::string bytes =
      qf::coordinator::LayerToProto(
          qf::testing::MakeFakeLayer(*cfg, qf::testing::QuantParamsOf(t.spec()), layer, 1000 + layer)).SerializeAsString();
  QF_FUZZ_SETUP_OK(s.CommitLayer(header, bytes).status());
}

void Register(qf::coordinator::Scheduler& s, const std::string& worker) {
  QF_FUZZ_SETUP_OK(s.Register(RegisterRequestFor(worker)).status());
}

// Runs the scheduler through both jobs as far as the header says and keeps
// what it wrote.
Base MakeBase() {
  Base b;
  qf::SetMinLogLevel(qf::LogLevel::kError);  // a line per load would drown the fuzzer's own output
  qf::storage::StateStoreOptions so;
  so.sync = false;  // one process, no crash to survive: the fsyncs would only slow the fuzzer
  auto store = qf::storage::StateStore::Open(qf::fuzz::ScratchDir() + "/state", so);
  QF_FUZZ_SETUP_OK(store.status());
  b.store = *std::move(store);
  qf::coordinator::FakeClock clock;
  auto sched = qf::coordinator::Scheduler::Create(b.store.get(), &clock, Options());
  QF_FUZZ_SETUP_OK(sched.status());
  qf::coordinator::Scheduler& s = **sched;

  auto first = s.Submit(TinyJob());
  QF_FUZZ_SETUP_OK(first.status());
  b.assembling_job = first->job_id();
  Register(s, "c");
  for (int stage = 0; stage < 2; ++stage) {
    const qf::proto::TaskAssignment t = LeaseFor(s, "c");
    QF_FUZZ_CHECK(t.job_id() == b.assembling_job && t.stage() == stage, "worker c got %s stage %d",
                  t.job_id().c_str(), t.stage());
    CommitFake(s, t, stage);
    qf::proto::CompleteRequest done;
    done.set_attempt_id(t.attempt_id());
    done.set_worker_id("c");
    auto reply = s.Complete(done);
    QF_FUZZ_SETUP_OK(reply.status());
    QF_FUZZ_CHECK(reply->job_done() == (stage == 1), "job_done %d after stage %d", reply->job_done(), stage);
  }

  auto second = s.Submit(TinyJob());
  QF_FUZZ_SETUP_OK(second.status());
  b.running_job = second->job_id();
  Register(s, "a");
  const qf::proto::TaskAssignment t = LeaseFor(s, "a");
  QF_FUZZ_CHECK(t.job_id() == b.running_job, "worker a got %s", t.job_id().c_str());
  CommitFake(s, t, 0);
  sched->reset();

  for (StateFamily f : kAll) {
    QF_FUZZ_SETUP_OK(b.store->Scan(f, "", [&](std::string_view k, std::string_view v) {
      b.records.push_back(Record{f, std::string(k), std::string(v)});
      return true;
    }));
  }
  QF_FUZZ_CHECK(b.records.size() >= 20, "the base state holds %zu records", b.records.size());
  return b;
}

Base& TheBase() {
  static Base* base = new Base(MakeBase());
  return *base;
}

// The seeds: each record of the base state behind the byte that selects it
// (QF_FUZZ_WRITE_STATE_SEEDS=DIR); the committed layers (about 400 KiB each)
// cut to their first 4 KiB, a torn record.
void WriteSeeds(const std::string& dir) {
  const Base& b = TheBase();
  for (size_t i = 0; i < b.records.size(); ++i) {
    const Record& r = b.records[i];
    // Keys hold big-endian numbers: the index keeps two tasks' names apart.
    std::string name = std::to_string(i) + "-" + std::string(qf::storage::StateFamilyName(r.family)) + "-" + r.key;
    for (char& c : name)
      if (c == '/' || static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = '_';
    std::ofstream(dir + "/" + name + ".bin", std::ios::binary)
        << static_cast<char>(i) << std::string_view(r.value).substr(0, 4096);
  }
}

// Puts the base state back, record `replaced` holding `value`: deletes what
// the last input added, rewrites what it changed (only those: the committed
// layers are large).
void Restore(Base& b, size_t replaced, std::string_view value) {
  qf::storage::StateBatch batch;
  size_t next = 0;  // b.records is in (family, key) order, as the scans below
  for (StateFamily f : kAll) {
    QF_FUZZ_SETUP_OK(b.store->Scan(f, "", [&](std::string_view k, std::string_view v) {
      // Base records before k that the last input deleted.
      while (next < b.records.size() && b.records[next].family == f && b.records[next].key < k) {
        batch.Put(f, b.records[next].key, next == replaced ? std::string(value) : b.records[next].value);
        ++next;
      }
      if (next < b.records.size() && b.records[next].family == f && b.records[next].key == k) {
        const std::string_view want = next == replaced ? value : std::string_view(b.records[next].value);
        if (v != want) batch.Put(f, std::string(k), std::string(want));
        ++next;
      } else {
        batch.Delete(f, std::string(k));
      }
      return true;
    }));
    for (; next < b.records.size() && b.records[next].family == f; ++next)
      batch.Put(f, b.records[next].key, next == replaced ? std::string(value) : b.records[next].value);
  }
  if (!batch.empty()) QF_FUZZ_SETUP_OK(b.store->Commit(std::move(batch)));
}

// What a running coordinator does with its scheduler: every call may refuse,
// none may crash. `replaced` is the record the input replaced.
void Exercise(qf::coordinator::Scheduler& s, qf::coordinator::FakeClock& clock, const Base& b,
              const Record& replaced, const qf::coordinator::SchedulerOptions& o) {
  (void)s.ListJobs(qf::proto::ListRequest());
  for (const std::string& id : {b.assembling_job, b.running_job}) {
    (void)s.GetJob(id);
    (void)s.Events(id, 0, 0);
    (void)s.FetchLayer(id, 0);
  }
  for (const char* worker : {"a", "b"}) {
    (void)s.Register(RegisterRequestFor(worker));
    auto l = s.Lease(LeaseRequestFor(worker));
    if (l.ok() && l->has_task()) {
      qf::proto::RenewRequest renew;
      renew.set_attempt_id(l->task().attempt_id());
      renew.set_worker_id(worker);
      (void)s.Renew(renew);
    }
  }
  clock.AdvanceMs(o.affinity_grace_ms + o.lease_ttl_ms + 1);
  (void)s.ExpireLeases();
  for (const std::string& id : s.TakeJobsToAssemble()) {
    auto in = s.LoadAssemblyInput(id);
    if (!in.ok() || !in->layer) continue;
    for (int layer = 0; layer < 2; ++layer) {
      const absl::StatusOr<qf::kernels::LayerResult> r = in->layer(layer);
      const bool intact = replaced.family != StateFamily::kJobs &&
                          replaced.key != qf::storage::ResultKey(b.assembling_job, layer);
      if (id == b.assembling_job && intact) {
        QF_FUZZ_CHECK(r.ok(), "intact layer %d of job %s lost: %s", layer, id.c_str(),
                      std::string(r.status().message()).c_str());
      }
      if (!r.ok()) {
        const std::string msg(r.status().message());
        QF_FUZZ_CHECK(msg.find('\n') == std::string::npos, "refusal spans lines: %s", msg.c_str());
      }
    }
    (void)s.FinishAssembly(id, absl::InternalError("assembly not run here"));
  }
  for (const std::string& id : {b.assembling_job, b.running_job}) {
    (void)s.Cancel(id, "fuzz");
    (void)s.Resume(id);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  qf::fuzz::WriteSeedsOnce("QF_FUZZ_WRITE_STATE_SEEDS", WriteSeeds);
  if (size == 0) return 0;
  Base& b = TheBase();
  const size_t replaced = data[0] % b.records.size();
  Restore(b, replaced, std::string_view(reinterpret_cast<const char*>(data) + 1, size - 1));

  const qf::coordinator::SchedulerOptions o = Options();
  qf::coordinator::FakeClock clock;
  auto s = qf::coordinator::Scheduler::Create(b.store.get(), &clock, o);
  if (!s.ok()) {
    qf::fuzz::CheckRefusal(s.status(), b.store->dir());
    return 0;
  }
  qf::fuzz::NoteAccepted();
  Exercise(**s, clock, b, b.records[replaced], o);
  s->reset();
  auto again = qf::coordinator::Scheduler::Create(b.store.get(), &clock, o);
  QF_FUZZ_CHECK(again.ok(), "state the scheduler wrote itself does not load again: %s",
                std::string(again.status().message()).c_str());
  return 0;
}
