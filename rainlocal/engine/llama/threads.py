"""How many CPU threads llama.cpp gets by default."""

from __future__ import annotations

import os


def default_threads() -> int:
    """``RAINLOCAL_THREADS`` when set (parallel jobs on few cores), else the physical cores."""
    env = os.environ.get("RAINLOCAL_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return physical_cores()


def physical_cores() -> int:
    """Physical cores on Linux (llama.cpp runs fastest with one thread per physical core)."""
    try:
        pairs = set()
        core = phys = None
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("physical id"):
                    phys = line.split(":")[1].strip()
                elif line.startswith("core id"):
                    core = line.split(":")[1].strip()
                elif not line.strip():
                    if core is not None:
                        pairs.add((phys, core))
                    core = phys = None
        if pairs:
            return max(1, min(len(pairs), os.cpu_count() or 1))
    except OSError:
        pass
    return max(1, os.cpu_count() or 1)
