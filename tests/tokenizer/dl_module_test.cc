// common/dl_module: search order, error messages, symbol lookup.
#include "common/dl_module.h"

#include <dlfcn.h>

#include <cstdlib>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/tokenizer/spm_fixture.h"
#include "worker/spm_abi.h"

namespace qf {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

// Sets QF_MODULE_DIR for one scope.
class ScopedModuleDir {
 public:
  explicit ScopedModuleDir(const std::string& dir) {
    if (const char* old = std::getenv("QF_MODULE_DIR")) old_ = old, had_ = true;
    setenv("QF_MODULE_DIR", dir.c_str(), 1);
  }
  ~ScopedModuleDir() {
    if (had_) setenv("QF_MODULE_DIR", old_.c_str(), 1);
    else unsetenv("QF_MODULE_DIR");
  }

 private:
  std::string old_;
  bool had_ = false;
};

TEST(DlModule, FindsThePluginBesideTheBinary) {
  // Tests run from build/bin; the plugin is built into build/lib.
  absl::StatusOr<void*> module = OpenModule("libqf_spm_plugin.so", RTLD_DEEPBIND);
  ASSERT_TRUE(module.ok()) << module.status();
  absl::StatusOr<void*> sym = ModuleSymbol(*module, "qf_spm_abi_version");
  ASSERT_TRUE(sym.ok()) << sym.status();
  EXPECT_EQ(reinterpret_cast<int (*)()>(*sym)(), worker::kSpmPluginAbiVersion);
}

TEST(DlModule, MissingModuleListsWhereItLooked) {
  const std::string dir = qf::testing::MakeTempDir("modules");
  ScopedModuleDir env(dir);
  absl::StatusOr<void*> module = OpenModule("libqf_no_such_module.so");
  ASSERT_FALSE(module.ok());
  EXPECT_EQ(module.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(module.status().message(),
              AllOf(HasSubstr("libqf_no_such_module.so"), HasSubstr(dir), HasSubstr("/../lib")));
}

TEST(DlModule, ModuleDirComesFirstAndBrokenFilesAreReported) {
  // A file in QF_MODULE_DIR that is not a shared object wins the search and
  // fails with dlerror's reason, instead of a silent fallback to build/lib.
  const std::string dir = qf::testing::MakeTempDir("broken_modules");
  FILE* f = std::fopen((dir + "/libqf_spm_plugin.so").c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs("not an ELF file", f);
  std::fclose(f);
  ScopedModuleDir env(dir);
  absl::StatusOr<void*> module = OpenModule("libqf_spm_plugin.so");
  ASSERT_FALSE(module.ok());
  EXPECT_EQ(module.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(module.status().message(), HasSubstr(dir + "/libqf_spm_plugin.so"));
}

TEST(DlModule, MissingSymbolNamesSymbolAndModule) {
  absl::StatusOr<void*> module = OpenModule("libqf_spm_plugin.so", RTLD_DEEPBIND);
  ASSERT_TRUE(module.ok()) << module.status();
  absl::StatusOr<void*> sym = ModuleSymbol(*module, "qf_spm_no_such_symbol");
  ASSERT_FALSE(sym.ok());
  EXPECT_EQ(sym.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(sym.status().message(),
              AllOf(HasSubstr("qf_spm_no_such_symbol"), HasSubstr("libqf_spm_plugin.so")));
}

TEST(DlModule, PathWithSlashIsOpenedAsGiven) {
  absl::StatusOr<void*> module = OpenModule("/nonexistent/dir/libx.so");
  ASSERT_FALSE(module.ok());
  EXPECT_EQ(module.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(module.status().message(), HasSubstr("/nonexistent/dir/libx.so"));
}

}  // namespace
}  // namespace qf
