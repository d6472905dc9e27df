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
#include "common/cpu_threads_flag.h"  // AddCpuThreadsFlag, for the engine commands

namespace qf::qctl {

using CommandFn = std::function<absl::Status()>;

CommandFn SetupQuantize(CLI::App* sub);
CommandFn SetupEval(CLI::App* sub);
CommandFn SetupVerify(CLI::App* sub);
CommandFn SetupExport(CLI::App* sub);
// submit, status, watch, list, cancel, resume, logs.
void SetupClusterCommands(CLI::App& app, std::vector<std::pair<CLI::App*, CommandFn>>* subs);

// Prints "qctl: error: <message>" on one line (newlines folded) to stderr and
// returns the process exit code for the status (0 for OK).
int ReportStatus(const absl::Status& s);

}  // namespace qf::qctl
