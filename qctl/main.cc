// qctl: the qforge command line. A thin layer: flag parsing and printing here,
// the work in worker/, storage/ and coordinator/.
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/quote.h"
#include "qctl/commands.h"

namespace {

struct CommandEntry {
  const char* name;
  const char* help;
  qf::qctl::CommandFn (*setup)(CLI::App*);
};

constexpr CommandEntry kCommands[] = {
    {"quantize", "Quantize an HF checkpoint (GPTQ, AWQ or RTN) into a GPTQ/AWQ artifact", qf::qctl::SetupQuantize},
    {"eval", "Perplexity of a checkpoint or artifact on a text file", qf::qctl::SetupEval},
    {"verify", "Check an artifact's fused W4A16 GEMM, throughput and perplexity; writes verify.json", qf::qctl::SetupVerify},
    {"export", "Write an artifact as a GGUF file that llama.cpp loads (Q4_0 / Q4_1 / Q8_0 blocks, codes kept)",
     qf::qctl::SetupExport},
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"qctl: quantize LLMs with GPTQ/AWQ/RTN, locally or on a qforge cluster"};
  app.require_subcommand(1);
  std::vector<std::pair<CLI::App*, qf::qctl::CommandFn>> subs;
  for (const CommandEntry& c : kCommands) {
    CLI::App* sub = app.add_subcommand(c.name, c.help);
    subs.emplace_back(sub, c.setup(sub));
  }
  qf::qctl::SetupClusterCommands(app, &subs);
  // CLI11 would take an unknown first word for a stray argument and answer
  // "A subcommand is required"; name the word and the commands instead.
  std::vector<std::string> names;
  for (const CLI::App* sub : app.get_subcommands({})) names.push_back(sub->get_name());
  if (argc > 1 && argv[1][0] != '-' && std::find(names.begin(), names.end(), argv[1]) == names.end()) {
    return qf::qctl::ReportStatus(absl::InvalidArgumentError(absl::StrCat(
        qf::EscapeForError(argv[1]), ": not a qctl command (expected one of ", absl::StrJoin(names, ", "), ")")));
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // A bad command line is bad input like any other: one line, exit 1.
    return qf::qctl::ReportStatus(absl::InvalidArgumentError(e.what()));
  }
  for (auto& [sub, run] : subs) {
    if (sub->parsed()) return qf::qctl::ReportStatus(run());
  }
  return 2;
}
