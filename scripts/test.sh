#!/usr/bin/env bash
# scripts/test.sh: set up, build, and run every test (CPU only).
#   scripts/test.sh                 # all tests
#   scripts/test.sh -L unit         # extra arguments go to ctest
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$ROOT/scripts/setup.sh"
BUILD=${QF_BUILD_DIR:-$ROOT/build}
cd "$BUILD"
ctest --output-on-failure -j"$(nproc)" -LE gpu "$@"
