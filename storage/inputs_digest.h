// What a job read, digested at submit, so that resuming it on inputs that
// changed since (a new revision of the checkpoint pulled into the same
// directory, an edited calibration file) is refused instead of writing an
// artifact whose first layers come from one model and the rest from another.
//
// Per file, in a fixed order: config.json, the safetensors index, the
// tokenizer files and the calibration text whole; each *.safetensors shard by
// its size, its header (names, dtypes, shapes, offsets) and 64 KiB at each end
// of its data. A full hash of 140 GB of weights would cost minutes at every
// restart; a new revision rewrites every tensor, so the sampled ends differ.
#ifndef QF_STORAGE_INPUTS_DIGEST_H_
#define QF_STORAGE_INPUTS_DIGEST_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace qf::storage {

struct InputDigest {
  std::string path;    // as read
  std::string sha256;  // hex, of what is described above
};

// Empty for a synthetic model without calibration text. Errors name the file.
absl::StatusOr<std::vector<InputDigest>> DigestJobInputs(const std::string& model_path, const std::string& calib_path);

// The first difference between the inputs recorded at submit and now, as
// "PATH changed" / "PATH is new" / "PATH is gone"; empty when they agree.
std::string FirstInputChange(const std::vector<InputDigest>& recorded, const std::vector<InputDigest>& now);

}  // namespace qf::storage

#endif  // QF_STORAGE_INPUTS_DIGEST_H_
