#!/usr/bin/env bash
# Build the llama-cpp-python wheel once per CPU and cache it; prints the directory holding it
# (.ci/run installs the wheel from there).
#
# Why not plain `pip install`: llama.cpp compiles with -march=native, and on a CPU that reports Intel
# AMX (e.g. this project's Sapphire Rapids VMs) it then multiplies matrices with AMX tile instructions,
# which die with "Illegal instruction" under some hypervisors as soon as a batch has more than one
# token. Where the CPU reports AMX the wheel is built with AMX switched off (every other native kernel,
# AVX-512 included, stays), and pip's own wheel cache is bypassed because it cannot tell the two builds
# apart. The same flags build llama-server (.ci/llama-server.sh).
set -euo pipefail
SPEC="${LLAMA_CPP_SPEC:-llama-cpp-python>=0.3.36,<0.4}"
CPU="$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | md5sum | cut -c1-8 || echo any)"
DIR="${RAINLOCAL_CI_CACHE:-$HOME/.cache/rainlocal-ci}/wheels-$CPU"
if compgen -G "$DIR/llama_cpp_python-*.whl" >/dev/null; then
    echo "$DIR"
    exit 0
fi
mkdir -p "$DIR.tmp"
# shellcheck source=/dev/null
source "$(dirname "$0")/native-flags.sh"
nice -n 10 python -m pip wheel "$SPEC" --no-deps --no-cache-dir -w "$DIR.tmp" >&2
rm -rf "$DIR"
mv "$DIR.tmp" "$DIR"
echo "$DIR"
