"""``eval --jobs N``: N worker processes answer into one results file while this process shows progress.

Each worker is the same ``rainlocal eval`` command with ``--worker I/N`` and ``-t T/N`` (the
threads split between them; each loads its own models). Worker I does every N-th group of units
(``EvalPlan.units_of_worker``) and appends whole lines to the shared ``results.jsonl``
(``rainlocal.evals.records``); resuming works as for one process, since every worker skips what the
file already holds. This process reads new lines as they arrive for the per-strategy counts and the
ETA, forwards Ctrl-C, and reports a failed worker with the last line of its log
(``OUTPUT/worker-I.log``).

A worker must not outlive this process: killed with SIGKILL (``timeout -s KILL``, a supervisor), it
cannot stop its workers, which would go on answering as orphans. So every worker learns this
process's pid (``RAINLOCAL_EVAL_PARENT``) and ``stop_with_parent`` ends it soon after that process is
gone: on Linux the kernel sends it SIGTERM (``PR_SET_PDEATHSIG``), and everywhere a watchdog thread
sees its parent pid change (the orphan is re-parented). SIGTERM ends a worker as an interrupted run
(exit 130, no traceback); what it wrote stays, whole lines only, and a rerun resumes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from rainlocal.errors import EXIT_INTERRUPTED, RainlocalError
from rainlocal.evals.progress import Progress
from rainlocal.evals.records import WRITING, read_records
from rainlocal.evals.runner import RESULTS, EvalPlan, unit_key


#: The environment variable that gives a worker the pid of the ``eval --jobs`` process that started it.
PARENT_ENV = "RAINLOCAL_EVAL_PARENT"
#: How often the watchdog looks at the parent pid, and how long SIGTERM gets to end the worker before
#: the watchdog ends the process itself: the SIGTERM handler runs only when the main thread is back
#: from llama.cpp, which takes seconds for a long prompt on one busy core. Ending it hard loses only the
#: unit in progress, which is lost anyway (results and check caches are whole lines under ``WRITING``).
POLL_S = 0.5
GRACE_S = 1.5


def worker_argv(argv: list[str], worker: int, workers: int, threads: int) -> list[str]:
    """The worker's command line: ``argv`` (this command's arguments) without ``--jobs``, plus
    ``--worker I/N`` and ``-t`` (the last ``-t`` wins)."""
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--jobs", "-j"):
            skip = True
            continue
        if a.startswith("--jobs=") or (a.startswith("-j") and a[2:].isdigit()):
            continue
        out.append(a)
    return [sys.executable, "-m", "rainlocal", *out, "--worker", f"{worker}/{workers}", "-t", str(threads)]


def start_worker(argv: list[str], log: Path, threads: int) -> subprocess.Popen:
    """Start one worker: ``argv`` with stderr into ``log``, its threads in ``RAINLOCAL_THREADS`` and this
    process's pid in ``RAINLOCAL_EVAL_PARENT`` (for ``stop_with_parent``). Call it from the main thread:
    Linux sends the worker its death signal when the thread that started it ends."""
    env = {**os.environ, "RAINLOCAL_THREADS": str(threads), PARENT_ENV: str(os.getpid())}
    with open(log, "w", encoding="utf-8") as err:
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=env)


def stop_with_parent() -> None:
    """In a worker (main thread, before any work): end this process soon after the parent that
    ``start_worker`` named is gone. Nothing happens in a process started otherwise."""
    try:
        parent = int(os.environ.get(PARENT_ENV, ""))
    except ValueError:
        return
    signal.signal(signal.SIGTERM, _on_sigterm)
    if sys.platform.startswith("linux"):
        try:  # SIGTERM from the kernel the moment the parent dies
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, ctypes.c_ulong(signal.SIGTERM), ctypes.c_ulong(0),
                                                    ctypes.c_ulong(0), ctypes.c_ulong(0))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    # The watchdog's first look also catches a parent that died before the death signal was set.
    # (On Windows the parent pid never changes, so it never fires; the kernel signal is Linux-only.)
    threading.Thread(target=_watch, args=(parent,), name="parent-watchdog", daemon=True).start()


_stopping = False


def _on_sigterm(signum, frame) -> None:  # noqa: ANN001
    """SIGTERM ends a worker as a second Ctrl-C would: KeyboardInterrupt, which the CLI turns into
    exit 130 without a traceback. While a line is being written it waits for the write to end; a
    repeated SIGTERM is ignored, so it cannot disturb the exit."""
    global _stopping
    if _stopping:
        return
    if WRITING.locked():
        threading.Thread(target=_sigterm_after_write, daemon=True).start()
        return
    _stopping = True
    raise KeyboardInterrupt


def _sigterm_after_write() -> None:
    with WRITING:
        pass
    os.kill(os.getpid(), signal.SIGTERM)


def _watch(parent: int) -> None:
    """Poll the parent pid; once it changed (the worker was orphaned), SIGTERM this process and, if it is
    still alive after ``GRACE_S``, end it between two appends of a record."""
    while os.getppid() == parent:
        time.sleep(POLL_S)
    print(f"rainlocal: the eval process {parent} is gone: this worker stops", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(GRACE_S)
    WRITING.acquire(timeout=10)  # held by append_record while it writes a line; never released
    sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED)


def total_threads(threads: int | None) -> int:
    """The threads to split: ``-t``, else ``RAINLOCAL_THREADS``, else every core of the machine."""
    if threads:
        return int(threads)
    env = os.environ.get("RAINLOCAL_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return os.cpu_count() or 1


def _kind(rec: dict[str, Any]) -> str:
    """The progress kind of a written record, as ``Unit.progress_kind`` names it."""
    from rainlocal.evals.runner import progress_kind

    return progress_kind(rec.get("kind", ""), rec.get("system") or "")


class _Tail:
    """New complete lines of a growing file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def read(self) -> list[dict[str, Any]]:
        import json

        if not self.path.exists():
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        out = []
        for line in data[:end].splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


def run_workers(n: int, threads: int | None, plan: EvalPlan, output: Path, console) -> bool:
    """Run ``n`` workers to completion; True when they were interrupted. RainlocalError when one failed."""
    output.mkdir(parents=True, exist_ok=True)
    results = output / RESULTS
    have = {unit_key(r) for r in read_records(results)}
    units = plan.units()
    per = max(1, total_threads(threads) // n)
    console.print(f"{n} workers, {per} thread(s) each; logs in {output}/worker-*.log",
                  markup=False, highlight=False, soft_wrap=True)
    tail = _Tail(results)
    procs, logs = [], []
    for i in range(n):
        logs.append(output / f"worker-{i}.log")
        procs.append(start_worker(worker_argv(sys.argv[1:], i, n, per), logs[i], per))
    progress = Progress([u.progress_kind for u in units], [u.progress_kind for u in units if u.key in have],
                        console, parallel=n)
    forwarded = False
    try:
        with progress:
            while True:
                running = [p for p in procs if p.poll() is None]
                for r in tail.read():
                    progress.finish(_kind(r), float(r.get("elapsed_s") or 0.0), f"{r.get('id')} {_kind(r)}")
                if not running:
                    break
                time.sleep(0.5)
    except KeyboardInterrupt:
        forwarded = True
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait()
    codes = [p.wait() for p in procs]
    failed = [(i, c) for i, c in enumerate(codes) if c not in (0, EXIT_INTERRUPTED)]
    if failed:
        i, c = failed[0]
        lines = [x for x in logs[i].read_text(encoding="utf-8", errors="replace").splitlines() if x.strip()]
        raise RainlocalError(f"eval worker {i} failed (exit {c}): {lines[-1] if lines else 'no output'} (log: {logs[i]})")
    return forwarded or any(c == EXIT_INTERRUPTED for c in codes)
