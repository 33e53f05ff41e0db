# Sourced by the CI build scripts: compiler flags for building llama.cpp natively on this CPU.
# -march=native turns on Intel AMX where the CPU reports it, and llama.cpp's AMX matrix kernels die with
# "Illegal instruction" under some hypervisors; an explicit -mno-amx-* wins over -march=native in GCC and
# Clang, so every other native kernel stays.
if grep -qm1 '^flags.* amx_tile' /proc/cpuinfo 2>/dev/null; then
    NO_AMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    export CFLAGS="${CFLAGS:-} $NO_AMX" CXXFLAGS="${CXXFLAGS:-} $NO_AMX"
fi
