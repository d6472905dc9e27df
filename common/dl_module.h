// File: common/dl_module.h
//
// Loading our own shared modules (the sentencepiece plugin, the libtorch
// engine) with dlopen, so that their dependencies' symbols stay out of the
// process's global scope (DESIGN.md, "Process and symbol boundaries").
//
// A module is looked up by file name, in this order:
//   1. every directory of $QF_MODULE_DIR (colon-separated), when set;
//   2. <directory of /proc/self/exe>/../lib   (build/bin -> build/lib, or an
//      installed prefix's bin -> lib);
//   3. <directory of /proc/self/exe>.
// A file name that contains a '/' is opened as given, without searching.
//
//   QF_ASSIGN_OR_RETURN(void* module, qf::OpenModule("libqf_spm_plugin.so", RTLD_DEEPBIND));
//   QF_ASSIGN_OR_RETURN(void* sym, qf::ModuleSymbol(module, "qf_spm_abi_version"));
//   auto abi_version = reinterpret_cast<int (*)()>(sym);
//
// NOTE: handles are never closed. The modules hold static state of libraries
// (protobuf, CUDA) that does not survive an unload; dlopen reference-counts,
// so opening the same module again is cheap and returns the same handle.
#pragma once

#include <string_view>

#include "absl/status/statusor.h"

namespace qf {

// dlopen(RTLD_NOW | RTLD_LOCAL | extra_flags) of the first directory in the
// search order that holds `file_name`.
// NotFound: no searched directory holds it (the message lists each place).
// Internal: a file was there but dlopen refused it (the message quotes
// dlerror(), e.g. an unresolved dependency).
absl::StatusOr<void*> OpenModule(std::string_view file_name, int extra_flags = 0);

// dlsym of `name` in a handle from OpenModule. NotFound naming the symbol and
// the module's path when the module does not export it.
absl::StatusOr<void*> ModuleSymbol(void* handle, const char* name);

}  // namespace qf
