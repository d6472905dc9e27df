#!/usr/bin/env bash
# scripts/fetch-ptxas.sh: puts a newer ptxas (CUDA 13.5, from NVIDIA's
# nvidia-cuda-nvcc wheel on PyPI) into .venv and prints its path, for
#   cmake ... -DQF_CUDA=ON -DQF_PTXAS=$(scripts/fetch-ptxas.sh)
# Only the assembler is used (cmake/QfPtxas.cmake); the installed CUDA 13
# toolkit stays the compiler front end, headers and runtime.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VERSION=${QF_PTXAS_VERSION:-13.5.37}
DEST=$ROOT/.venv/ptxas-$VERSION
PY=$ROOT/.venv/bin/python  # scripts/setup.sh makes it; Debian's python3 may have no pip
[[ -x $PY ]] || PY=python3
if [[ ! -x $DEST/ptxas ]]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  "$PY" -m pip download -q --disable-pip-version-check --no-deps -d "$tmp" "nvidia-cuda-nvcc==$VERSION" >&2
  mkdir -p "$DEST"
  "$PY" - "$tmp" "$DEST" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/nvidia_cuda_nvcc-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("/bin/ptxas"))
    with open(sys.argv[2] + "/ptxas", "wb") as f:
        f.write(z.read(name))
PY
  chmod +x "$DEST/ptxas"
fi
"$DEST/ptxas" --version >/dev/null
echo "$DEST/ptxas"
