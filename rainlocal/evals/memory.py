"""Peak memory per strategy, not per process.

``ru_maxrss`` is the process's high-water mark since it started, so in a bench that runs vanilla
and then RAIN in one process, RAIN's figure would hide vanilla's and vice versa only in one
direction. On Linux the kernel resets the high-water mark on request (``5`` written to
``/proc/self/clear_refs``, "VmHWM" in ``/proc/self/status``); after a reset the peak is the most
the process held during the strategy (the loaded model included, as a user's process holds it).
Elsewhere the process peak is reported, and said to be one.
"""

from __future__ import annotations

import sys


def reset_peak() -> bool:
    """Start a new peak-RSS measurement; False when the platform cannot (the peak stays the process's)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float | None:
    """Peak resident memory in MB since the last ``reset_peak`` (or since the process started)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)
