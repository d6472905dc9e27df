#!/usr/bin/env bash
# scripts/test.sh: set up, build, and run every test (CPU only), then compile
# the CUDA sources where nvcc is installed (scripts/check_cuda.sh).
#   scripts/test.sh                 # all tests
#   scripts/test.sh -L unit         # extra arguments go to ctest
#   QF_CHECK_CUDA=0 scripts/test.sh # without the CUDA compile
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$ROOT/scripts/setup.sh"
BUILD=${QF_BUILD_DIR:-$ROOT/build}
(cd "$BUILD" && ctest --output-on-failure -j"$(nproc)" -LE gpu "$@")
if [[ ${QF_CHECK_CUDA:-1} != 0 ]]; then
  "$ROOT/scripts/check_cuda.sh"
fi
