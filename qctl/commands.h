// File: qctl/commands.h
//
// qctl's subcommands. Each registers its flags on a CLI11 subcommand and
// returns the function that runs it; main.cc holds the table of them.
//
//   CLI::App* sub = app.add_subcommand("eval", "...");
//   CommandFn run = SetupEval(sub);
//   ... app.parse() ...; return run();    // process exit code
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"

namespace qf::qctl {

using CommandFn = std::function<absl::Status()>;

CommandFn SetupQuantize(CLI::App* sub);
CommandFn SetupEval(CLI::App* sub);
CommandFn SetupVerify(CLI::App* sub);
CommandFn SetupExport(CLI::App* sub);
// submit, status, watch, list, cancel, resume, logs.
void SetupClusterCommands(CLI::App& app, std::vector<std::pair<CLI::App*, CommandFn>>* subs);

// --cpu-threads N of the commands that run the engine (worker::Engine::Load).
inline void AddCpuThreadsFlag(CLI::App* sub, int* threads) {
  sub->add_option("--cpu-threads", *threads,
                  "CPU threads of the engine (0: the CPUs this process may use, by its affinity mask and cgroup quota)")
      ->capture_default_str()
      ->check(CLI::Range(0, 4096));
}

// Prints "qctl: error: <message>" on one line (newlines folded) to stderr and
// returns the process exit code for the status (0 for OK).
int ReportStatus(const absl::Status& s);

}  // namespace qf::qctl
