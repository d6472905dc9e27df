#!/usr/bin/env bash
# scripts/setup.sh: idempotent set-up of a fresh Debian 12 machine and an
# incremental build. Safe to run again: every step is skipped when done.
#
#   scripts/setup.sh            # packages, .venv, configure, build (build/)
#   QF_BUILD_DIR=out scripts/setup.sh
#
# Steps:
#   1. Debian packages (gRPC, Protobuf, Abseil, RocksDB, sentencepiece, RE2,
#      ICU, CLI11, nlohmann-json, GoogleTest, OpenSSL, ninja, ccache), via apt-get.
#   2. .venv with the pinned Python packages of scripts/requirements.txt
#      (libtorch comes from the PyPI torch wheel).
#   3. CMake configure (Ninja, ccache) and build. QF_CUDA=OFF unless set in
#      the environment: the tests run on the CPU, and the CUDA sources are
#      built on GPU machines (QF_CUDA=ON, README "Commands (device)").
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${QF_BUILD_DIR:-$ROOT/build}
QF_CUDA=${QF_CUDA:-OFF}

log() { echo "setup: $*" >&2; }

APT_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git python3 python3-venv
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev librocksdb-dev libsentencepiece-dev nlohmann-json3-dev libcli11-dev
  libgtest-dev libgmock-dev libssl-dev libre2-dev libicu-dev
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Free space, checked before the steps that need it, so that a full disk is one
# line naming the directory instead of an OSError from the middle of pip or
# a truncated object file from the compiler. Measured on Debian 12: the .venv
# is 4.9 GiB, the disk use peaked 8 GiB above its start during the install,
# and build/ is 1.4 GiB.
need_space() {  # DIR GIB WHAT
  local avail_kib
  avail_kib=$(df -Pk "$1" | awk 'NR == 2 {print $4}')
  if ((avail_kib < $2 * 1024 * 1024)); then
    echo "setup: error: $1: $3 needs about $2 GiB free; $((avail_kib / 1024)) MiB is free" >&2
    exit 1
  fi
}

VENV=$ROOT/.venv
REQ=$ROOT/scripts/requirements.txt
STAMP=$VENV/.qforge-requirements
if [[ ! -x $VENV/bin/python ]]; then
  log "creating $VENV"
  python3 -m venv "$VENV"
fi
REQ_INTEROP=$ROOT/scripts/requirements-interop.txt
if ! cat "$REQ" "$REQ_INTEROP" | cmp -s - "$STAMP"; then
  if compgen -G "$VENV/lib/python3*/site-packages/torch" >/dev/null; then
    need_space "$VENV" 1 "updating the Python packages"
  else
    need_space "$VENV" 8 "the Python packages (torch and its CUDA libraries)"
  fi
  need_space "${TMPDIR:-/tmp}" 2 "pip's unpacking of the torch wheel"
  log "installing Python packages (torch wheel: a few minutes the first time)"
  # --no-cache-dir: pip would otherwise keep a second copy of the ~3 GB of
  # wheels under ~/.cache/pip, which nothing here reads again.
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-cache-dir -r "$REQ"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-cache-dir --no-deps -r "$REQ_INTEROP"
  cat "$REQ" "$REQ_INTEROP" > "$STAMP"
fi

if [[ ! -f $BUILD/build.ninja ]]; then
  log "configuring $BUILD"
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQF_CUDA="$QF_CUDA" \
        -DQF_PYTHON="$VENV/bin/python" >/dev/null
fi
[[ -f $BUILD/bin/qctl ]] || need_space "$BUILD" 3 "the first build"
log "building ($(nproc) jobs)"
cmake --build "$BUILD" -j"$(nproc)"
