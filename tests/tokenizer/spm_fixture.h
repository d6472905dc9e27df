// File: tests/tokenizer/spm_fixture.h
//
// Paths of the bundled model and data, and spm_expected.json: the Python
// sentencepiece package's ids for them (written by gen_spm_fixture.py).
//
//   const nlohmann::json& fx = qf::testing::SpmExpected();
//   std::vector<int32_t> ids = fx["strings"][0]["ids"];
#pragma once

#include <string>

#include "nlohmann/json.hpp"

namespace qf::testing {

inline std::string SourcePath(const std::string& rel) { return std::string(QF_SOURCE_DIR) + "/" + rel; }
inline std::string ModelDir() { return SourcePath("models/tiny-llama"); }
inline std::string HeldoutPath() { return SourcePath("data/books-heldout.txt"); }
inline std::string CalibPath() { return SourcePath("data/calib.txt"); }

// Parsed once; aborts the test binary with a message if the fixture is missing
// or corrupt (a broken checkout, not a behaviour under test).
const nlohmann::json& SpmExpected();

// A fresh directory under ::testing::TempDir().
std::string MakeTempDir(const std::string& name);

}  // namespace qf::testing
