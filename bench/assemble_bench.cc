// Peak memory, disk and time of the assemble stage on a synthetic model:
// storage::WriteArtifact fed one synthetic layer result at a time (as the
// coordinator's assembler feeds it from the state store), against the
// in-memory assembly it replaced (every packed tensor, and a copy of every
// source tensor, held until the shards are written; kept here as the
// baseline). Each runs in its own child process, so each ru_maxrss is its
// own; the two must write the same safetensors files byte for byte. Then the
// artifact is read back both ways: every layer unpacked at once
// (ReadArtifact), and one layer at a time (OpenArtifact + Layer, as eval and
// verify read it).
//
//   build/bin/assemble_bench [--model 'synthetic:llama-8b?layers=N'] [--out DIR]
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "bench/synthetic_layer.h"
#include "common/fs.h"
#include "common/status_macros.h"
#include "kernels/ref/pack.h"
#include "storage/artifact.h"
#include "storage/synthetic_model.h"

namespace {

using namespace qf;
namespace fs = std::filesystem;

// ---- baseline: the assembly before the spill file ----
absl::Status AssembleInMemory(const std::string& model, const storage::ModelConfig& cfg, const std::string& dir) {
  auto src = storage::OpenSyntheticSource(model);
  if (!src.ok()) return src.status();
  std::vector<storage::OwnedTensor> tensors;
  std::vector<std::string> replaced;
  for (int l = 0; l < cfg.num_hidden_layers; ++l) {
    const kernels::LayerResult r = bench::MakeSyntheticLayer(cfg, l);
    std::vector<std::future<absl::StatusOr<kernels::PackedLinear>>> packed;
    for (const kernels::QuantizedLinear& q : r.linears)
      packed.push_back(std::async(std::launch::async, [&q] { return kernels::PackGptqV1(q); }));
    const std::string prefix = "model.layers." + std::to_string(l) + ".";
    for (size_t j = 0; j < packed.size(); ++j) {
      absl::StatusOr<kernels::PackedLinear> p = packed[j].get();
      if (!p.ok()) return p.status();
      for (storage::OwnedTensor& t : std::move(*p).Take(prefix + r.linears[j].name + "."))
        tensors.push_back(std::move(t));
      replaced.push_back(prefix + r.linears[j].name + ".weight");
    }
    for (const kernels::DenseTensor& d : r.dense)
      tensors.push_back({prefix + d.name, *storage::ParseDType(d.dtype), d.shape, d.data});
  }
  for (const std::string& name : (*src)->names()) {
    if (std::find(replaced.begin(), replaced.end(), name) != replaced.end()) continue;
    const storage::TensorView* v = *(*src)->Get(name);
    tensors.push_back({name, v->dtype, v->shape, std::string(v->data)});
  }
  return storage::WriteSharded(dir, tensors, storage::kMaxShardBytes, {{"format", "pt"}}).status();
}

absl::Status AssembleStreaming(const std::string& model, const storage::ModelConfig& cfg, const std::string& dir) {
  storage::QuantSpec spec;
  spec.method = "rtn";
  spec.bits = 4;
  spec.group_size = 128;
  spec.sym = false;
  return storage::WriteArtifact(
      model, cfg, spec, [&](int l) -> absl::StatusOr<kernels::LayerResult> { return bench::MakeSyntheticLayer(cfg, l); },
      dir, {{"bench", "assemble"}});
}

struct ChildRun {
  bool ok = false;
  double seconds = 0;
  double peak_gib = 0;        // ru_maxrss of the child
  double peak_disk_gib = 0;   // most of `dir`'s file system it used at once (statvfs, sampled)
  double peak_anon_gib = 0;   // largest RssAnon of the child (sampled): its own memory, not mapped files
};

// RssAnon of `pid` (/proc/PID/status), 0 when unreadable.
uint64_t AnonBytes(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string key;
  uint64_t kib = 0;
  while (in >> key) {
    if (key == "RssAnon:") {
      in >> kib;
      return kib << 10;
    }
    in.ignore(1 << 10, '\n');
  }
  return 0;
}

uint64_t FreeBytes(const std::string& dir) {
  struct statvfs v {};
  return ::statvfs(dir.c_str(), &v) == 0 ? static_cast<uint64_t>(v.f_bavail) * v.f_frsize : 0;
}

// Runs fn in a child process; the parent samples the free space of `dir`'s
// file system every 20 ms meanwhile (other writers to it distort the column).
ChildRun RunChild(const std::string& dir, const std::function<absl::Status()>& fn) {
  const uint64_t free_before = FreeBytes(dir);
  std::fflush(nullptr);   // or the child would print the parent's pending output again
  const auto t0 = std::chrono::steady_clock::now();
  const pid_t pid = ::fork();
  if (pid == 0) {
    const absl::Status s = fn();
    if (!s.ok()) std::fprintf(stderr, "assemble_bench: %s\n", std::string(s.message()).c_str());
    std::fflush(nullptr);
    ::_exit(s.ok() ? 0 : 1);
  }
  ChildRun run;
  if (pid < 0) return run;
  uint64_t free_min = free_before, anon_max = 0;
  int status = 0;
  struct rusage ru {};
  pid_t waited = 0;
  while ((waited = ::wait4(pid, &status, WNOHANG, &ru)) == 0) {
    free_min = std::min(free_min, FreeBytes(dir));
    anon_max = std::max(anon_max, AnonBytes(pid));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (waited != pid) return run;
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  run.peak_gib = static_cast<double>(ru.ru_maxrss) / (1 << 20);   // ru_maxrss is in KiB
  run.peak_disk_gib = static_cast<double>(free_before - free_min) / (1 << 30);
  run.peak_anon_gib = static_cast<double>(anon_max) / (1 << 30);
  run.ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  return run;
}

// Byte-for-byte comparison, 64 MiB at a time (shards are up to 4 GiB).
bool SameFile(const std::string& a, const std::string& b) {
  std::ifstream fa(a, std::ios::binary), fb(b, std::ios::binary);
  if (!fa || !fb) return false;
  std::vector<char> ba(64 << 20), bb(64 << 20);
  while (true) {
    fa.read(ba.data(), static_cast<std::streamsize>(ba.size()));
    fb.read(bb.data(), static_cast<std::streamsize>(bb.size()));
    if (fa.gcount() != fb.gcount() || std::memcmp(ba.data(), bb.data(), static_cast<size_t>(fa.gcount())) != 0)
      return false;
    if (fa.gcount() == 0) return fa.eof() && fb.eof();
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string model = "synthetic:llama-8b", out = "/tmp/qf-assemble-bench";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--model") model = argv[i + 1];
    else if (a == "--out") out = argv[i + 1];
    else {
      std::fprintf(stderr, "usage: assemble_bench [--model synthetic:PRESET[?layers=N]] [--out DIR]\n");
      return 1;
    }
  }
  auto cfg = storage::LoadModelConfigOrSynthetic(model);
  if (!cfg.ok() || !storage::IsSyntheticModel(model)) {
    std::fprintf(stderr, "assemble_bench: --model: expected synthetic:PRESET[?layers=N]\n");
    return 1;
  }
  (void)RemoveAll(out);
  fs::create_directories(out);
  const std::string mem_dir = out + "/in-memory", art_dir = out + "/artifact";
  const ChildRun base = RunChild(out, [&] { return AssembleInMemory(model, *cfg, mem_dir); });
  const ChildRun now = RunChild(out, [&] { return AssembleStreaming(model, *cfg, art_dir); });
  if (!base.ok || !now.ok) {
    std::fprintf(stderr, "assemble_bench: a run failed (in-memory ok=%d, WriteArtifact ok=%d)\n", base.ok, now.ok);
    return 1;
  }
  uint64_t bytes = 0;
  int files = 0;
  for (const auto& e : fs::directory_iterator(mem_dir)) {
    const std::string name = e.path().filename().string();
    if (!SameFile(e.path().string(), art_dir + "/" + name)) {
      std::fprintf(stderr, "assemble_bench: %s differs between the two assemblies\n", name.c_str());
      return 1;
    }
    bytes += fs::file_size(e.path());
    ++files;
  }
  std::printf("%s: %lld layers, %d files (shards and index), %.2f GB, identical in both runs\n\n", model.c_str(),
              static_cast<long long>(cfg->num_hidden_layers), files, static_cast<double>(bytes) / 1e9);
  std::printf("%-36s %9s %14s %14s\n", "assembly", "time", "peak RSS", "peak disk");
  std::printf("%-36s %8.1f s %10.2f GiB %10.2f GiB\n", "in memory (baseline)", base.seconds, base.peak_gib,
              base.peak_disk_gib);
  std::printf("%-36s %8.1f s %10.2f GiB %10.2f GiB\n", "WriteArtifact (spill file)", now.seconds, now.peak_gib,
              now.peak_disk_gib);
  std::printf("\npeak RSS %.2fx lower, time %.2fx the baseline's\n", base.peak_gib / now.peak_gib,
              now.seconds / base.seconds);

  // Reading it back: ReadArtifact unpacks every linear at once (one byte per
  // code), OpenArtifact + Layer(l) one layer at a time (qctl eval / verify).
  const ChildRun all = RunChild(out, [&]() -> absl::Status { return storage::ReadArtifact(art_dir).status(); });
  const ChildRun walk = RunChild(out, [&]() -> absl::Status {
    QF_ASSIGN_OR_RETURN(storage::LoadedArtifact a, storage::OpenArtifact(art_dir));
    for (int l = 0; l < static_cast<int>(a.layers.size()); ++l) QF_RETURN_IF_ERROR(a.Layer(l).status());
    return absl::OkStatus();
  });
  if (!all.ok || !walk.ok) {
    std::fprintf(stderr, "assemble_bench: reading the artifact back failed\n");
    return 1;
  }
  std::printf("\n%-36s %9s %14s %14s\n", "reading it back", "time", "peak RssAnon", "peak RSS");
  std::printf("%-36s %8.1f s %10.2f GiB %10.2f GiB\n", "ReadArtifact (every layer unpacked)", all.seconds,
              all.peak_anon_gib, all.peak_gib);
  std::printf("%-36s %8.1f s %10.2f GiB %10.2f GiB\n", "OpenArtifact + Layer(l), l = 0..", walk.seconds,
              walk.peak_anon_gib, walk.peak_gib);
  std::printf("(peak RSS counts the shards' mapped pages as they are read; RssAnon does not)\n");
  (void)RemoveAll(out);
  return 0;
}
