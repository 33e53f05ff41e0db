"""llama.cpp's log, routed through a Python callback: silent unless -v, errors kept for messages."""

from __future__ import annotations

import ctypes
import os

_LOG_STATE: dict = {"verbose": False, "errors": [], "callback": None}


def install_log_callback(verbose: bool) -> None:
    """Route llama.cpp logs through our callback: silent unless -v, errors kept for messages.

    llama-cpp-python 0.3.36 maps ggml log levels with an outdated table under verbose=False
    (warnings printed, errors swallowed), so we install our own and keep a reference to it.
    """
    import llama_cpp

    _LOG_STATE["verbose"] = verbose
    if _LOG_STATE["callback"] is not None:
        return

    @llama_cpp.llama_log_callback
    def _log(level, text, user_data):  # noqa: ANN001 - ctypes callback
        msg = text.decode("utf-8", errors="replace") if text else ""
        # ggml levels: 0 none, 1 debug, 2 info, 3 warn, 4 error, 5 cont
        if level == 4:
            _LOG_STATE["errors"].append(msg.strip())
            del _LOG_STATE["errors"][:-20]
        if _LOG_STATE["verbose"]:
            os.write(2, msg.encode("utf-8", errors="replace"))

    _LOG_STATE["callback"] = _log
    llama_cpp.llama_log_set(_log, ctypes.c_void_p(0))


def last_llama_error() -> str:
    errs = [e for e in _LOG_STATE["errors"] if e]
    return errs[-1] if errs else ""


def log_errors() -> list[str]:
    """The last llama.cpp error lines (cleared before a load, so a failure names its own cause)."""
    return _LOG_STATE["errors"]
