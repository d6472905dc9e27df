// File: common/sha256.h
//
// SHA-256 through OpenSSL's EVP interface (no home-made hash).
//
//   std::string hex = qf::Sha256Hex(bytes);
//   QF_ASSIGN_OR_RETURN(std::string file_hex, qf::Sha256FileHex(path));
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace qf {

// Lower-case hex digest of `data`.
std::string Sha256Hex(std::string_view data);

// Digest of a file, streamed in 1 MiB reads. NotFound / DataLoss on I/O errors.
absl::StatusOr<std::string> Sha256FileHex(const std::string& path);

}  // namespace qf
