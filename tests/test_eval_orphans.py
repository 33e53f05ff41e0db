"""``eval --jobs N`` workers end when their parent is killed with SIGKILL (which it cannot forward).

Real processes throughout: a parent that starts workers with the real ``start_worker`` (a small
script, then the real ``rainlocal eval --jobs 2`` on SmolLM2), SIGKILLed alone (not its process
group), while its workers run the real ``stop_with_parent``. The workers must be gone within seconds
and the results file must hold whole lines only. Linux: the processes are found through /proc.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import own_cwd, shared_data

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds processes through /proc")

#: The parent of the model-free tests: two workers started as ``eval --jobs`` starts them, then idle.
PARENT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from rainlocal.cli.eval_jobs import start_worker

    out = Path(sys.argv[1])
    for i in range(2):
        start_worker([sys.executable, "-c", sys.argv[2], str(out), sys.argv[3]], out / f"worker-{i}.log", 1)
    time.sleep(600)
""")

#: A worker: ``stop_with_parent`` as the real one calls it, then work until stopped. ``append``:
#: records back to back into results.jsonl (the SIGTERM path); ``append-no-death-signal``: the same
#: with the Linux death signal switched off again (the watchdog alone); ``stuck``: a long C call that
#: never lets the SIGTERM handler run (the watchdog's own exit).
WORKER = textwrap.dedent("""
    import ctypes, hashlib, os, sys
    from pathlib import Path
    from rainlocal.cli.eval_jobs import stop_with_parent
    from rainlocal.evals.records import append_record

    out, mode = Path(sys.argv[1]), sys.argv[2]
    stop_with_parent()
    if mode == "append-no-death-signal":
        ctypes.CDLL(None).prctl(1, ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
    print("ready", file=sys.stderr, flush=True)
    try:
        if mode == "stuck":
            hashlib.pbkdf2_hmac("sha256", b"x", b"y", 2 ** 31 - 1)  # half an hour in C
        i = 0
        while True:
            append_record(out / "results.jsonl", {"pid": os.getpid(), "i": i, "pad": "x" * 50000})
            i += 1
    except KeyboardInterrupt:
        (out / f"stopped-{os.getpid()}").write_text("KeyboardInterrupt")
        sys.exit(130)
""")


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, None when there is none."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2:].split()  # after the command name, which may hold spaces
    return fields[0], int(fields[1])


def _alive(pid: int) -> bool:
    s = _stat(pid)
    return s is not None and s[0] not in ("Z", "X")  # a zombie has ended (no reaper may collect it here)


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            s = _stat(int(d.name))
            if s is not None and s[1] == pid and _alive(int(d.name)):
                out.append(int(d.name))
    return sorted(out)


def _wait(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def _kill_parent_and_time_workers(parent: subprocess.Popen, workers: list[int]) -> float:
    """SIGKILL the parent alone; the seconds until every worker has ended."""
    assert all(_alive(w) for w in workers)
    t0 = time.monotonic()
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    _wait(lambda: not any(_alive(w) for w in workers), 15, f"the workers {workers} to end")
    return time.monotonic() - t0


def _whole_lines(path: Path) -> list[dict]:
    data = path.read_bytes()
    assert data.endswith(b"\n"), "the last line is torn"
    return [json.loads(line) for line in data.splitlines()]  # every line is whole JSON


def _end_group(p: subprocess.Popen) -> None:
    """Whatever the test's outcome, leave no process of it behind."""
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait()


@pytest.mark.parametrize("mode", ["append", "append-no-death-signal", "stuck"])
def test_workers_end_soon_after_their_parent_is_killed(tmp_path, mode):
    from rainlocal.cli.eval_jobs import GRACE_S

    p = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path), WORKER, mode], cwd=own_cwd(),
                         start_new_session=True)
    try:
        workers = _wait(lambda: len(_children(p.pid)) == 2 and _children(p.pid), 30, "two workers")
        logs = [tmp_path / f"worker-{i}.log" for i in range(2)]
        _wait(lambda: all(log.exists() and "ready" in log.read_text() for log in logs), 30, "the workers' start")
        if mode != "stuck":
            _wait(lambda: (tmp_path / "results.jsonl").exists(), 30, "the first record")
        took = _kill_parent_and_time_workers(p, workers)
    finally:
        _end_group(p)
    stopped = sorted(f.name for f in tmp_path.glob("stopped-*"))
    if mode == "stuck":  # SIGTERM cannot get in: the watchdog ends the process after its grace
        assert GRACE_S <= took < GRACE_S + 2 and stopped == []
        assert all("is gone: this worker stops" in log.read_text() for log in logs)
    else:  # SIGTERM (from the kernel, or from the watchdog within its poll) ends the work in Python
        assert took < 3, took
        assert stopped == sorted(f"stopped-{w}" for w in workers)
        recs = _whole_lines(tmp_path / "results.jsonl")
        assert {r["pid"] for r in recs} == set(workers)
    assert not any("Traceback" in log.read_text() for log in logs)


@pytest.mark.slow
def test_eval_jobs_2_workers_end_when_the_eval_is_killed_and_a_rerun_resumes(model_path, rl_home, tmp_path):
    from rainlocal.cli.eval_jobs import GRACE_S

    data = tmp_path / "hh.jsonl"
    data.write_text("".join(json.dumps({"id": f"p{i}", "messages": [{"role": "user", "content": f"Name a colour, {i}."}]})
                            + "\n" for i in range(12)), encoding="utf-8")
    out = tmp_path / "out"
    args = [sys.executable, "-m", "rainlocal", "eval", "hh", "-m", str(model_path), "--data", str(data),
            "-t", "1", "-n", "4", "--strategies", "vanilla", "--check-judge", "0", "--check-human", "0",
            "--jobs", "2", "-o", str(out)]
    env = {**os.environ, "RAINLOCAL_HOME": str(rl_home)}
    if shared_data() is not None:
        env.setdefault("RAINLOCAL_DATA", str(shared_data()))
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=own_cwd(),
                         start_new_session=True)
    try:
        workers = _wait(lambda: len(_children(p.pid)) == 2 and _children(p.pid), 60, "two workers")
        results = out / "results.jsonl"
        _wait(lambda: results.exists() and results.read_bytes().count(b"\n") >= 1, 600, "the first answer")
        took = _kill_parent_and_time_workers(p, workers)
    finally:
        _end_group(p)
    assert took < GRACE_S + 2, took  # SIGTERM ends a worker when llama.cpp returns, else the watchdog does
    first = _whole_lines(results)
    assert 1 <= len(first) < 12  # stopped mid-run
    for i in range(2):
        log = (out / f"worker-{i}.log").read_text()
        assert "Traceback" not in log, log

    r = subprocess.run(args, capture_output=True, text=True, env=env, cwd=own_cwd(), timeout=900)
    assert r.returncode == 0, r.stderr
    recs = _whole_lines(results)
    assert recs[: len(first)] == first
    assert sorted(x["id"] for x in recs) == sorted(f"p{i}" for i in range(12))  # each prompt once
