// File: tests/mutator.h
//
// Deterministic corruption of inputs for the malformed-input tests: text
// (JSON headers, config files: Mutate) and binary (serialized messages:
// MutateBytes). Each call applies one to three random edits from a fixed seed,
// so a failing mutant is reproduced by its index.
//
//   Mutator mut(7);
//   for (int i = 0; i < 1000; ++i) WriteBytes(path, mut.Mutate(original));
#pragma once

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <random>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qf::testing {

// A refused mutant's status names `what` (a file, a layer) on one line;
// `i` is the mutant's index, for the log.
inline void ExpectRefusalNames(const absl::Status& s, const std::string& what, int i) {
  if (s.ok()) return;
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr(what)) << "mutant " << i;
  EXPECT_EQ(std::string(s.message()).find('\n'), std::string::npos) << "mutant " << i << ": " << s;
}

// One random edit of a JSON text, biased to the edits parsers get wrong:
// structural characters, digits and signs, dropped or repeated runs, and
// numbers swapped for extremes (negative, zero, past int64, fractional).
class Mutator {
 public:
  explicit Mutator(uint32_t seed) : rng_(seed) {}

  std::string Mutate(std::string s) {
    return Edit(std::move(s), [&](std::string& t, size_t at) {
      switch (Pick(5)) {
        case 0: t[at] = kChars[Pick(sizeof(kChars) - 1)]; break;
        case 1: t.erase(at, 1 + Pick(8)); break;
        case 2: t.insert(at, t.substr(at, 1 + Pick(16))); break;
        case 3: t.insert(at, 1, kChars[Pick(sizeof(kChars) - 1)]); break;
        default: ReplaceNumber(t, at); break;
      }
    });
  }

  // Binary edits: a byte set at random, a bit flipped, a run dropped or repeated.
  std::string MutateBytes(std::string s) {
    return Edit(std::move(s), [&](std::string& t, size_t at) {
      switch (Pick(4)) {
        case 0: t[at] = static_cast<char>(Pick(256)); break;
        case 1: t[at] = static_cast<char>(t[at] ^ (1 << Pick(8))); break;
        case 2: t.erase(at, 1 + Pick(8)); break;
        default: t.insert(at, t.substr(at, 1 + Pick(16))); break;
      }
    });
  }

 private:
  static constexpr char kChars[] = "{}[],:\"0123456789-+eE.tfn \\x";

  size_t Pick(size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng_); }

  // One to three calls of edit(s, position), each at a random position of
  // what the previous left (the draws in that order, so a seed gives the same
  // mutants whichever edit set runs).
  template <class EditFn>
  std::string Edit(std::string s, EditFn edit) {
    if (s.empty()) return s;
    const int edits = 1 + static_cast<int>(Pick(3));
    for (int e = 0; e < edits && !s.empty(); ++e) edit(s, Pick(s.size()));
    return s;
  }

  void ReplaceNumber(std::string& s, size_t from) {
    const size_t b = s.find_first_of("0123456789", from);
    if (b == std::string::npos) return;
    const size_t e = s.find_first_not_of("0123456789", b);
    static const char* kNumbers[] = {"-1", "0", "1e30", "18446744073709551616", "9223372036854775807",
                                     "4294967296", "0.5", "-9223372036854775808", "3"};
    s.replace(b, (e == std::string::npos ? s.size() : e) - b, kNumbers[Pick(std::size(kNumbers))]);
  }

  std::mt19937 rng_;
};

}  // namespace qf::testing
