// File: worker/spm_abi.h
//
// The version of the C ABI between worker/tokenizer.cc and the sentencepiece
// plugin module (worker/spm_plugin.cc documents the entry points). Bump it on
// any change to them: the loader refuses a module of another version. Plain
// C++ with no includes, so that the plugin (which cannot see Abseil) shares it.
#pragma once

namespace qf::worker {

// 2: qf_spm_piece (the vocabulary, for the GGUF export).
inline constexpr int kSpmPluginAbiVersion = 2;

}  // namespace qf::worker
