#!/usr/bin/env bash
# tests/deploy/image_libs_test.sh BUILD_DIR TORCH_LIB_DIR
#
# Checks deploy/Dockerfile's runtime stage without Docker: every shared library
# that the built binaries and modules (BUILD_DIR/bin, BUILD_DIR/lib) load must
# be either copied into the image (our lib/, libtorch's lib/, the wheel's
# nvidia/ tree that libtorch's RPATH reaches as $ORIGIN/../../nvidia) or come
# from a Debian package that the stage installs, directly or as a dependency,
# or that the debian:12 base holds (apt's own dependencies). A library found
# nowhere else, or only outside the package database (say under /usr/local),
# is a missing runtime dependency: the container would fail at start or at
# the engine's dlopen. Exits 77 (skipped) without dpkg and apt-cache.
set -euo pipefail
BUILD=$(realpath "$1")
TORCH_LIB=$(realpath "$2")
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DOCKERFILE=$ROOT/deploy/Dockerfile
if ! command -v dpkg >/dev/null || ! command -v apt-cache >/dev/null; then
  echo "image_libs: skipped: needs dpkg and apt-cache (Debian)"; exit 77
fi
NVIDIA=$(realpath -m "$TORCH_LIB/../../nvidia")

# The runtime stage: the lines after the last FROM; its packages are the
# words of its apt-get install that look like package names.
pkgs=$(awk '/^FROM /{stage=""} {stage = stage "\n" $0} END{print stage}' "$DOCKERFILE" |
       sed -n '/apt-get install/,/rm -rf/p' | tr ' \\' '\n\n' |
       grep -E '^(lib[a-z0-9.+-]+|python3)$' | sort -u)
[[ -n $pkgs ]] || { echo "image_libs: $DOCKERFILE: no apt-get install in the runtime stage"; exit 1; }
grep -q "site-packages/nvidia /opt/qforge/nvidia" "$DOCKERFILE" ||
  { echo "image_libs: $DOCKERFILE: does not copy the wheel's nvidia/ tree next to torch/ (libtorch's RPATH)"; exit 1; }
# shellcheck disable=SC2086
provided=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
             --no-replaces --no-enhances $pkgs apt 2>/dev/null | grep -E '^[a-z0-9]' | sort -u)

missing=0
checked=0
declare -A pkg_of   # found path -> package ("" for none): each library is looked up once
# What the runtime stage copies: the three programs and every module.
BINS=(qctl qworker qcoordinator)
for b in "${BINS[@]}"; do
  grep -q "/src/build/bin/$b " "$DOCKERFILE" || { echo "image_libs: $DOCKERFILE: does not copy bin/$b"; exit 1; }
done
for f in "${BINS[@]/#/$BUILD/bin/}" "$BUILD"/lib/*.so; do
  [[ -f $f ]] && head -c4 "$f" | grep -q ELF || continue
  while read -r lib found; do
    path=$found
    [[ $path == "not" ]] || path=$(realpath "$path")
    case $path in
      "$BUILD"/*|"$TORCH_LIB"/*|"$NVIDIA"/*) continue ;;   # copied into the image
    esac
    checked=$((checked + 1))
    if [[ $path == "not" ]]; then
      echo "image_libs: $f: $lib is not found even here"; missing=1; continue
    fi
    # dpkg knows a file by the path its package ships it under: with Debian's
    # merged /usr that may be /lib/... where the loader found /usr/lib/...
    if [[ -v pkg_of[$found] ]]; then
      pkg=${pkg_of[$found]}
    else
      pkg=""
      for name in "$found" "${found#/usr}" "$path" "${path#/usr}"; do
        pkg=$(dpkg -S "$name" 2>/dev/null) && break
      done
      pkg=${pkg%%:*}
      pkg_of[$found]=$pkg
    fi
    if [[ -z $pkg ]]; then
      echo "image_libs: $f: $lib resolves to $path, which no Debian package holds (the image has no copy)"; missing=1
    elif ! grep -qx "$pkg" <<<"$provided"; then
      echo "image_libs: $f: $lib comes from Debian package $pkg, which $DOCKERFILE's runtime stage does not install"; missing=1
    fi
  done < <(LD_LIBRARY_PATH=$TORCH_LIB ldd "$f" 2>/dev/null | awk '$2 == "=>" {print $1, $3}')
done
((missing == 0)) || exit 1
echo "image_libs: $checked system libraries of ${#BINS[@]} programs and $(ls "$BUILD"/lib/*.so | wc -l) modules, all in the runtime stage's packages ($(wc -w <<<"$pkgs") named)"
