// File: tests/fuzz/state_records_fuzz.cc
//
// The coordinator restarting over its RocksDB state (coordinator/scheduler.cc,
// Scheduler::Load) when one record holds bytes it never wrote: a bug in an
// older version, a hand edit, bit rot under RocksDB's checksums.
//
// The base state is a real one, made once per process by the scheduler
// itself: a synthetic tiny job of two stages, worker "a" registered, stage 0
// leased and layer 0 committed (so every family holds records). An input is
//   byte 0: which of the records Load reads (meta, jobs, tasks, leases; in key
//           order) to replace, modulo their count;
//   the rest: that record's new value.
// Each input starts from the base state alone (every family cleared first), so
// a finding replays on its own. The contract:
//   - Load refuses on one line naming the state directory, or
//   - the scheduler it gives answers reads, leases, renewals, expiry,
//     cancellation and the assembler's reads without crashing, and what it
//     writes in doing so loads again on the next start (a record the
//     scheduler wrote itself is never refused).
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
#include "tests/fuzz/fuzz_target.h"

namespace {

using qf::storage::StateFamily;

struct Record {
  StateFamily family;
  std::string key, value;
};

// The families Load reads, the ones an input may replace a record of.
constexpr StateFamily kLoaded[] = {StateFamily::kMeta, StateFamily::kJobs, StateFamily::kTasks,
                                   StateFamily::kLeases};
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
  std::vector<Record> records;   // every family, key order
  std::vector<size_t> loaded;    // indices of the records Load reads
  std::string job_id;
};

// Runs the scheduler through submit, register, lease and one commit, and
// keeps what it wrote.
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

  qf::proto::SubmitRequest submit;
  qf::proto::JobSpec& spec = *submit.mutable_spec();
  spec.set_model_path("synthetic:llama-tiny?layers=4&seed=7");
  spec.set_method("gptq");
  spec.set_samples(4);
  spec.set_seqlen(32);
  spec.set_out_dir("/nonexistent/qf-fuzz-artifact");  // never written: no assembly runs here
  spec.set_stage_layers(2);
  auto job = (*sched)->Submit(submit);
  QF_FUZZ_SETUP_OK(job.status());
  b.job_id = job->job_id();

  qf::proto::RegisterRequest reg;
  reg.set_name("a");
  reg.set_incarnation("boot");
  reg.set_device("cpu");
  QF_FUZZ_SETUP_OK((*sched)->Register(reg).status());
  qf::proto::LeaseRequest lease;
  lease.set_worker_id("a");
  lease.set_incarnation("boot");
  auto leased = (*sched)->Lease(lease);
  QF_FUZZ_SETUP_OK(leased.status());
  QF_FUZZ_CHECK(leased->has_task(), "worker a got no task");
  const qf::proto::TaskAssignment& t = leased->task();

  auto cfg = qf::storage::LoadModelConfigOrSynthetic(t.spec().model_path());
  QF_FUZZ_SETUP_OK(cfg.status());
  qf::worker::QuantParams q;
  q.method = t.spec().method();
  q.bits = t.spec().bits();
  q.group_size = t.spec().group_size();
  q.sym = t.spec().sym();
  q.act_order = t.spec().act_order();
  q.static_groups = t.spec().static_groups();
  qf::proto::LayerChunk header;
  header.set_attempt_id(t.attempt_id());
  header.set_job_id(t.job_id());
  header.set_layer(0);
  const std::string bytes =
      qf::coordinator::LayerToProto(qf::testing::MakeFakeLayer(*cfg, q, 0, 1000)).SerializeAsString();
  QF_FUZZ_SETUP_OK((*sched)->CommitLayer(header, bytes).status());
  sched->reset();

  for (StateFamily f : kAll) {
    QF_FUZZ_SETUP_OK(b.store->Scan(f, "", [&](std::string_view k, std::string_view v) {
      b.records.push_back(Record{f, std::string(k), std::string(v)});
      return true;
    }));
  }
  for (size_t i = 0; i < b.records.size(); ++i) {
    for (StateFamily f : kLoaded)
      if (b.records[i].family == f) b.loaded.push_back(i);
  }
  QF_FUZZ_CHECK(b.loaded.size() >= 6, "the base state holds %zu loaded records", b.loaded.size());
  return b;
}

Base& TheBase() {
  static Base* base = new Base(MakeBase());
  return *base;
}

// The seeds: each loaded record of the base state unchanged (QF_FUZZ_WRITE_STATE_SEEDS=DIR).
void WriteSeeds(const std::string& dir) {
  const Base& b = TheBase();
  for (size_t i = 0; i < b.loaded.size(); ++i) {
    const Record& r = b.records[b.loaded[i]];
    // Keys hold big-endian numbers: the index keeps two tasks' names apart.
    std::string name = std::to_string(i) + "-" + std::string(qf::storage::StateFamilyName(r.family)) + "-" + r.key;
    for (char& c : name)
      if (c == '/' || static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = '_';
    std::ofstream(dir + "/" + name + ".bin", std::ios::binary) << static_cast<char>(i) << r.value;
  }
}

// Clears every family and writes the base records, record `replaced` holding `value`.
void Restore(Base& b, size_t replaced, std::string_view value) {
  qf::storage::StateBatch batch;
  for (StateFamily f : kAll) {
    QF_FUZZ_SETUP_OK(b.store->Scan(f, "", [&](std::string_view k, std::string_view) {
      batch.Delete(f, std::string(k));
      return true;
    }));
  }
  for (size_t i = 0; i < b.records.size(); ++i) {
    const Record& r = b.records[i];
    batch.Put(r.family, r.key, i == replaced ? std::string(value) : r.value);
  }
  QF_FUZZ_SETUP_OK(b.store->Commit(std::move(batch)));
}

// What a running coordinator does with its scheduler: every call may refuse,
// none may crash.
void Exercise(qf::coordinator::Scheduler& s, qf::coordinator::FakeClock& clock, const std::string& job_id,
              const qf::coordinator::SchedulerOptions& o) {
  (void)s.ListJobs(qf::proto::ListRequest());
  (void)s.GetJob(job_id);
  (void)s.Events(job_id, 0, 0);
  (void)s.FetchLayer(job_id, 0);
  for (const char* worker : {"a", "b"}) {
    qf::proto::RegisterRequest reg;
    reg.set_name(worker);
    reg.set_incarnation("boot");
    reg.set_device("cpu");
    (void)s.Register(reg);
    qf::proto::LeaseRequest lease;
    lease.set_worker_id(worker);
    lease.set_incarnation("boot");
    auto l = s.Lease(lease);
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
    if (in.ok() && in->layer) {
      for (int layer : {0, 1}) (void)in->layer(layer);
    }
    (void)s.FinishAssembly(id, absl::InternalError("assembly not run here"));
  }
  (void)s.Cancel(job_id, "fuzz");
  (void)s.Resume(job_id);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  qf::fuzz::WriteSeedsOnce("QF_FUZZ_WRITE_STATE_SEEDS", WriteSeeds);
  if (size == 0) return 0;
  Base& b = TheBase();
  const size_t replaced = b.loaded[data[0] % b.loaded.size()];
  Restore(b, replaced, std::string_view(reinterpret_cast<const char*>(data) + 1, size - 1));

  const qf::coordinator::SchedulerOptions o = Options();
  qf::coordinator::FakeClock clock;
  auto s = qf::coordinator::Scheduler::Create(b.store.get(), &clock, o);
  if (!s.ok()) {
    qf::fuzz::CheckRefusal(s.status(), b.store->dir());
    return 0;
  }
  qf::fuzz::NoteAccepted();
  Exercise(**s, clock, b.job_id, o);
  s->reset();
  auto again = qf::coordinator::Scheduler::Create(b.store.get(), &clock, o);
  QF_FUZZ_CHECK(again.ok(), "state the scheduler wrote itself does not load again: %s",
                std::string(again.status().message()).c_str());
  return 0;
}
