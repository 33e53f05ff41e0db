"""``eval --jobs N``: N worker processes answer into one results file while this process shows progress.

Each worker is the same ``rainlocal eval`` command with ``--worker I/N`` and ``-t T/N`` (the
threads split between them; each loads its own models). Worker I does every N-th group of units
(``EvalPlan.units_of_worker``) and appends whole lines to the shared ``results.jsonl``
(``rainlocal.evals.records``); resuming works as for one process, since every worker skips what the
file already holds. This process reads new lines as they arrive for the per-strategy counts and the
ETA, forwards Ctrl-C, and reports a failed worker with the last line of its log
(``OUTPUT/worker-I.log``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rainlocal.errors import EXIT_INTERRUPTED, RainlocalError
from rainlocal.evals.progress import Progress
from rainlocal.evals.records import read_records
from rainlocal.evals.runner import RESULTS, EvalPlan, unit_key


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


def total_threads(threads: int | None) -> int:
    """The threads to split: ``-t``, else ``RAINLOCAL_THREADS``, else every core of the machine."""
    if threads:
        return int(threads)
    env = os.environ.get("RAINLOCAL_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return os.cpu_count() or 1


def _kind(rec: dict[str, Any]) -> str:
    return rec.get("system") or rec.get("kind", "")


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
        log = output / f"worker-{i}.log"
        logs.append(log)
        with open(log, "w", encoding="utf-8") as err:
            procs.append(subprocess.Popen(worker_argv(sys.argv[1:], i, n, per), stdout=subprocess.DEVNULL,
                                          stderr=err, env={**os.environ, "RAINLOCAL_THREADS": str(per)}))
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
