// qctl's cluster commands: submit, status, watch, list, cancel, resume, logs,
// against a coordinator (--coordinator HOST:PORT or $QCTL_COORDINATOR).
// `-o json` prints the protobuf messages as JSON (one object per line).
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <map>

#include <google/protobuf/util/json_util.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/fs.h"
#include "common/status_macros.h"
#include "coordinator/client.h"
#include "qctl/commands.h"
#include "qctl/progress.h"
#include "qctl/quantize_options.h"

namespace qf::qctl {
namespace {

struct ClusterFlags {
  std::string coordinator;
  std::string output = "text";   // text | json
  std::string job_id;
};

void AddCommonFlags(CLI::App* sub, ClusterFlags* f, bool needs_job) {
  sub->add_option("--coordinator", f->coordinator, "HOST:PORT of the coordinator (default $QCTL_COORDINATOR)");
  sub->add_option("-o,--output", f->output, "text | json")->check(CLI::IsMember({"text", "json"}));
  if (needs_job) sub->add_option("job", f->job_id, "Job id (job-NNNNNN)")->required();
}

absl::StatusOr<std::unique_ptr<coordinator::JobClient>> Connect(const ClusterFlags& f) {
  std::string target = f.coordinator;
  if (target.empty()) {
    const char* env = std::getenv("QCTL_COORDINATOR");
    if (env != nullptr) target = env;
  }
  if (target.empty()) {
    return absl::InvalidArgumentError("--coordinator: not given and QCTL_COORDINATOR is not set (expected HOST:PORT)");
  }
  return coordinator::JobClient::Connect(target);
}

std::string ToJson(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, o);
  return out;
}

std::string StateName(proto::JobState s) {
  std::string n = proto::JobState_Name(s);
  return n.rfind("JOB_", 0) == 0 ? n.substr(4) : n;
}

void PrintStatus(const proto::JobStatus& s) {
  std::printf("%s  %s  layers %d/%d  %s %d-bit g%d  %s\n", s.job_id().c_str(), StateName(s.state()).c_str(),
              s.layers_committed(), s.layers_total(), s.spec().method().c_str(), s.spec().bits(),
              s.spec().group_size(), s.spec().model_path().c_str());
  for (const proto::StageStatus& st : s.stages()) {
    const std::string what = st.verify() ? std::string("verify") : absl::StrCat("layers ", st.first_layer(), "-",
                                                                              st.end_layer() - 1);
    std::printf("  stage %d  %s  %s  %d/%d%s%s\n", st.stage(), what.c_str(),
                proto::TaskState_Name(st.state()).c_str(), st.layers_committed(), st.end_layer() - st.first_layer(),
                st.worker().empty() ? "" : ("  on " + st.worker()).c_str(),
                st.last_error().empty() ? "" : ("  last error: " + st.last_error()).c_str());
  }
  if (!s.reason().empty()) std::printf("  reason: %s\n", s.reason().c_str());
  if (!s.artifact_dir().empty()) std::printf("  artifact: %s\n", s.artifact_dir().c_str());
  if (!s.verify_verdict().empty())
    std::printf("  verify: %s (%s)\n", s.verify_verdict().c_str(), s.verify_report().c_str());
}

// Exit status of `watch`: 0 succeeded, 1 failed, 3 cancelled.
absl::Status EndStatus(const proto::JobStatus& s) {
  if (s.state() == proto::JOB_SUCCEEDED) return absl::OkStatus();
  if (s.state() == proto::JOB_CANCELLED) return absl::CancelledError(absl::StrCat("job ", s.job_id(), " cancelled: ", s.reason()));
  return absl::AbortedError(absl::StrCat("job ", s.job_id(), " failed: ", s.reason()));
}

// Per-stage progress: a redrawn block on a terminal, one line per event otherwise.
class WatchPrinter {
 public:
  explicit WatchPrinter(bool json) : json_(json), tty_(::isatty(STDOUT_FILENO) != 0) {}
  void operator()(const proto::WatchUpdate& u) {
    if (json_) { std::printf("%s\n", ToJson(u).c_str()); std::fflush(stdout); return; }
    const proto::JobStatus& s = u.status();
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    if (first_committed_ < 0) first_committed_ = s.layers_committed();
    const int done_here = s.layers_committed() - first_committed_;
    const double eta = done_here > 0 ? elapsed / done_here * (s.layers_total() - s.layers_committed()) : -1;
    if (tty_) {
      if (lines_ > 0) std::printf("\033[%dA", lines_);
      lines_ = 0;
      std::printf("\r\033[K%s %s  layers %d/%d  ETA %s\n", s.job_id().c_str(), StateName(s.state()).c_str(),
                  s.layers_committed(), s.layers_total(), ProgressReporter::FormatDuration(eta).c_str());
      ++lines_;
      for (const proto::StageStatus& st : s.stages()) {
        if (st.verify()) {
          std::printf("\r\033[K  stage %-3d verify: %s %s\n", st.stage(), proto::TaskState_Name(st.state()).c_str(),
                      st.worker().c_str());
          ++lines_;
          continue;
        }
        const int n = st.end_layer() - st.first_layer();
        const int w = 20, filled = n > 0 ? st.layers_committed() * w / n : 0;
        std::printf("\r\033[K  stage %-3d [%s%s] %d/%d %s\n", st.stage(), std::string(filled, '#').c_str(),
                    std::string(w - filled, '.').c_str(), st.layers_committed(), n, st.worker().c_str());
        ++lines_;
      }
    } else {
      const proto::JobEvent& e = u.event();
      std::string what = proto::EventKind_Name(e.kind());
      if (what.rfind("EVENT_", 0) == 0) what = what.substr(6);
      std::printf("%s %s%s%s layers %d/%d ETA %s%s%s\n", s.job_id().c_str(), what.c_str(),
                  e.stage() >= 0 ? absl::StrCat(" stage ", e.stage()).c_str() : "",
                  e.layer() >= 0 ? absl::StrCat(" layer ", e.layer()).c_str() : "", s.layers_committed(),
                  s.layers_total(), ProgressReporter::FormatDuration(eta).c_str(),
                  e.worker().empty() ? "" : (" worker " + e.worker()).c_str(),
                  e.message().empty() ? "" : (" : " + e.message()).c_str());
    }
    std::fflush(stdout);
  }

 private:
  bool json_, tty_;
  int lines_ = 0;
  int first_committed_ = -1;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

absl::Status LoadJobFile(const std::string& path, proto::JobSpec* spec) {
  QF_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  google::protobuf::util::JsonParseOptions o;
  auto st = google::protobuf::util::JsonStringToMessage(text, spec, o);
  if (!st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON JobSpec (field names as in proto/job.proto): ",
                                                   std::string(st.message())));
  }
  return absl::OkStatus();
}

}  // namespace

void SetupClusterCommands(CLI::App& app, std::vector<std::pair<CLI::App*, CommandFn>>* subs) {
  {  // submit
    CLI::App* sub = app.add_subcommand("submit", "Submit a quantization job to a coordinator; prints the job id");
    auto f = std::make_shared<ClusterFlags>();
    auto o = std::make_shared<QuantizeOptions>();
    auto file = std::make_shared<std::string>();
    AddCommonFlags(sub, f.get(), false);
    sub->add_option("-f,--file", *file, "Job file: a JSON JobSpec (proto/job.proto); flags are ignored with it");
    // The same flags as quantize; --model/--out are required unless -f is given.
    AddQuantizeFlags(sub, o.get());
    for (const char* name : {"--model", "--out"}) sub->get_option(name)->required(false);
    AddClusterJobFlags(sub, o.get());
    AddVerifyFlags(sub, o.get(), "on a worker, after assembly; the artifact must be readable by the workers");
    subs->emplace_back(sub, [f, o, file]() -> absl::Status {
      proto::JobSpec spec;
      if (!file->empty()) {
        QF_RETURN_IF_ERROR(LoadJobFile(*file, &spec));
      } else {
        if (o->model.empty() || o->out.empty()) return absl::InvalidArgumentError("--model and --out are required (or -f FILE)");
        spec = ToJobSpec(*o);
      }
      QF_ASSIGN_OR_RETURN(auto client, Connect(*f));
      QF_ASSIGN_OR_RETURN(proto::SubmitReply r, client->Submit(spec));
      if (f->output == "json") std::printf("%s\n", ToJson(r).c_str());
      else std::printf("%s\n", r.job_id().c_str());
      return absl::OkStatus();
    });
  }
  struct JobCommand {
    const char* name;
    const char* help;
    std::function<absl::Status(coordinator::JobClient&, const ClusterFlags&)> run;
  };
  const JobCommand kJobCommands[] = {
      {"status", "Show a job and its stages", [](coordinator::JobClient& c, const ClusterFlags& f) -> absl::Status {
         QF_ASSIGN_OR_RETURN(proto::JobStatus s, c.Get(f.job_id));
         if (f.output == "json") std::printf("%s\n", ToJson(s).c_str()); else PrintStatus(s);
         return absl::OkStatus();
       }},
      {"watch", "Follow a job's progress until it ends; exit 0 succeeded, 1 failed, 3 cancelled",
       [](coordinator::JobClient& c, const ClusterFlags& f) -> absl::Status {
         WatchPrinter printer(f.output == "json");
         QF_ASSIGN_OR_RETURN(proto::JobStatus s, c.Watch(f.job_id, [&](const proto::WatchUpdate& u) { printer(u); }));
         return EndStatus(s);
       }},
      {"cancel", "Cancel a job (releases its leases; resume continues it)",
       [](coordinator::JobClient& c, const ClusterFlags& f) -> absl::Status {
         QF_ASSIGN_OR_RETURN(proto::JobStatus s, c.Cancel(f.job_id, "cancelled by qctl"));
         if (f.output == "json") std::printf("%s\n", ToJson(s).c_str()); else PrintStatus(s);
         return absl::OkStatus();
       }},
      {"resume", "Resume a failed or cancelled job from its last committed layer",
       [](coordinator::JobClient& c, const ClusterFlags& f) -> absl::Status {
         QF_ASSIGN_OR_RETURN(proto::JobStatus s, c.Resume(f.job_id));
         if (f.output == "json") std::printf("%s\n", ToJson(s).c_str()); else PrintStatus(s);
         return absl::OkStatus();
       }},
      {"logs", "A job's event history", [](coordinator::JobClient& c, const ClusterFlags& f) -> absl::Status {
         QF_ASSIGN_OR_RETURN(std::vector<proto::JobEvent> events, c.Logs(f.job_id));
         for (const proto::JobEvent& e : events) {
           if (f.output == "json") { std::printf("%s\n", ToJson(e).c_str()); continue; }
           std::printf("%4llu %s stage %d layer %d %s %s\n", static_cast<unsigned long long>(e.seq()),
                       proto::EventKind_Name(e.kind()).c_str(), e.stage(), e.layer(), e.worker().c_str(),
                       e.message().c_str());
         }
         return absl::OkStatus();
       }},
  };
  for (const JobCommand& jc : kJobCommands) {
    CLI::App* sub = app.add_subcommand(jc.name, jc.help);
    auto f = std::make_shared<ClusterFlags>();
    AddCommonFlags(sub, f.get(), true);
    auto run = jc.run;
    subs->emplace_back(sub, [f, run]() -> absl::Status {
      QF_ASSIGN_OR_RETURN(auto client, Connect(*f));
      return run(*client, *f);
    });
  }
  {  // list
    CLI::App* sub = app.add_subcommand("list", "List jobs, most recent first");
    auto f = std::make_shared<ClusterFlags>();
    AddCommonFlags(sub, f.get(), false);
    subs->emplace_back(sub, [f]() -> absl::Status {
      QF_ASSIGN_OR_RETURN(auto client, Connect(*f));
      QF_ASSIGN_OR_RETURN(std::vector<proto::JobStatus> jobs, client->List());
      for (const proto::JobStatus& s : jobs) {
        if (f->output == "json") std::printf("%s\n", ToJson(s).c_str());
        else std::printf("%s  %-10s layers %d/%d  %s\n", s.job_id().c_str(), StateName(s.state()).c_str(),
                         s.layers_committed(), s.layers_total(), s.spec().out_dir().c_str());
      }
      return absl::OkStatus();
    });
  }
}

}  // namespace qf::qctl
