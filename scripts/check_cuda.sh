#!/usr/bin/env bash
# scripts/check_cuda.sh: compile the CUDA sources on a machine without a GPU.
# The CPU build (scripts/setup.sh, QF_CUDA=OFF) never compiles them, so this
# configures a second build with QF_CUDA=ON (sm_90a and sm_80, no services),
# builds the W4A16 and GPTQ kernel libraries, the kernel tests and benchmarks,
# and runs the one test of that build that needs no device (the selection
# tables through the host API). Incremental after the first run.
# The W4A16 tuning variants (instances/tuning/, reachable only by name from
# the bench sweeps and GPU tests) are left out unless
# QF_W4A16_TUNING_VARIANTS=ON: they are half of a cold build, and nothing
# the selection tables pick is among them.
#
#   scripts/check_cuda.sh             # build-cuda/
#   QF_CUDA_BUILD_DIR=out scripts/check_cuda.sh
#
# Skipped, with a line saying so, where nvcc is not installed. Called by
# scripts/test.sh after the CPU tests (QF_CHECK_CUDA=0 there skips it).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${QF_CUDA_BUILD_DIR:-$ROOT/build-cuda}

log() { echo "check_cuda: $*" >&2; }

# nvcc from CUDACXX, PATH or the toolkit's default prefix (not on PATH on a
# stock Debian install of the CUDA toolkit).
NVCC=${CUDACXX:-$(command -v nvcc || true)}
[[ -n $NVCC ]] || NVCC=/usr/local/cuda/bin/nvcc
if [[ ! -x $NVCC ]]; then
  log "no nvcc (CUDACXX, PATH, /usr/local/cuda/bin): the CUDA sources were not compiled"
  exit 0
fi

TUNING=${QF_W4A16_TUNING_VARIANTS:-OFF}
if [[ ! -f $BUILD/build.ninja ]]; then
  log "configuring $BUILD (nvcc: $NVCC)"
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQF_CUDA=ON -DQF_SERVICES=OFF \
        -DQF_TESTS=ON -DQF_BENCH=ON -DCMAKE_CUDA_COMPILER="$NVCC" -DQF_PYTHON="$ROOT/.venv/bin/python" \
        -DQF_W4A16_TUNING_VARIANTS="$TUNING" >/dev/null
elif ! grep -qx "QF_W4A16_TUNING_VARIANTS:BOOL=$TUNING" "$BUILD/CMakeCache.txt"; then
  log "reconfiguring $BUILD with QF_W4A16_TUNING_VARIANTS=$TUNING"
  cmake -DQF_W4A16_TUNING_VARIANTS="$TUNING" "$BUILD" >/dev/null
fi
TARGETS=(qf_kernels_cuda qf_gptq_cuda w4a16_select_test w4a16_gpu_test w4a16_bf16_gpu_test w4a16_bench wgmma_ceiling)
log "building ${TARGETS[*]} ($(nproc) jobs; the first run takes several minutes)"
cmake --build "$BUILD" -j"$(nproc)" --target "${TARGETS[@]}"
"$BUILD/bin/w4a16_select_test" --gtest_brief=1
