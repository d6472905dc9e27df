#include "common/dl_module.h"

#include <dlfcn.h>
#include <link.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace qf {
namespace {

// Directory of the running executable, "" if /proc is not there.
std::string ExecutableDir() {
  std::string buf(4096, '\0');
  const ssize_t len = readlink("/proc/self/exe", buf.data(), buf.size());
  if (len <= 0 || static_cast<size_t>(len) >= buf.size()) return "";
  buf.resize(static_cast<size_t>(len));
  const size_t slash = buf.rfind('/');
  return slash == std::string::npos ? "" : buf.substr(0, slash);
}

std::vector<std::string> SearchDirs() {
  std::vector<std::string> dirs;
  if (const char* env = std::getenv("QF_MODULE_DIR"); env != nullptr) {
    for (absl::string_view dir : absl::StrSplit(env, ':', absl::SkipEmpty())) {
      dirs.emplace_back(dir);
    }
  }
  if (const std::string exe_dir = ExecutableDir(); !exe_dir.empty()) {
    dirs.push_back(exe_dir + "/../lib");
    dirs.push_back(exe_dir);
  }
  return dirs;
}

bool IsRegularFile(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// dlerror() as a string; dlerror() may return null when nothing is pending.
std::string LastDlError() {
  const char* err = dlerror();
  return err != nullptr ? err : "unknown dlopen error";
}

absl::StatusOr<void*> OpenPath(const std::string& path, int flags) {
  dlerror();  // clear a stale error
  void* handle = dlopen(path.c_str(), flags);
  if (handle == nullptr) {
    return absl::InternalError(absl::StrCat("dlopen ", path, ": ", LastDlError()));
  }
  return handle;
}

}  // namespace

absl::StatusOr<void*> OpenModule(std::string_view name_view, int extra_flags) {
  // Debian's Abseil has its own absl::string_view: work on a std::string.
  const std::string file_name(name_view);
  const int flags = RTLD_NOW | RTLD_LOCAL | extra_flags;
  if (file_name.empty()) return absl::InvalidArgumentError("OpenModule: empty module file name");
  if (file_name.find('/') != std::string::npos) {
    const std::string& path = file_name;
    if (!IsRegularFile(path)) return absl::NotFoundError(absl::StrCat("module ", path, ": no such file"));
    return OpenPath(path, flags);
  }
  const std::vector<std::string> dirs = SearchDirs();
  for (const std::string& dir : dirs) {
    const std::string path = absl::StrCat(dir, "/", file_name);
    // The first directory holding the file decides: a broken module in
    // QF_MODULE_DIR is reported, not silently replaced by another copy.
    if (IsRegularFile(path)) return OpenPath(path, flags);
  }
  return absl::NotFoundError(absl::StrCat(
      "module ", file_name, " not found; looked in: ",
      dirs.empty() ? std::string("(no directories: QF_MODULE_DIR unset, /proc/self/exe unreadable)")
                   : absl::StrJoin(dirs, ", "),
      " (set QF_MODULE_DIR to the directory that holds it)"));
}

absl::StatusOr<void*> ModuleSymbol(void* handle, const char* name) {
  if (handle == nullptr) return absl::InvalidArgumentError(absl::StrCat("ModuleSymbol(", name, "): null module handle"));
  dlerror();
  void* sym = dlsym(handle, name);
  if (sym != nullptr) return sym;
  const std::string err = LastDlError();
  std::string module = "module";
  struct link_map* map = nullptr;
  if (dlinfo(handle, RTLD_DI_LINKMAP, &map) == 0 && map != nullptr && map->l_name != nullptr) {
    module = map->l_name;
  }
  return absl::NotFoundError(absl::StrCat(module, ": does not export symbol ", name, " (", err, ")"));
}

}  // namespace qf
