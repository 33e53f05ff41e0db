"""The probes of a model that has none are fitted on its first latent answer only where that fits the
first-use budget; otherwise (or on Ctrl-C) one line says how to fit them and the answer still comes,
from the prompted judge. The pace rule on a scripted clock; the rest in a real terminal (pexpect) with a
real model that has no probes (SmolLM2-135M with one weight byte changed: another file to the probes)."""

import os
import shutil
import signal
import sys
from pathlib import Path

import pexpect
import pytest

from rainlocal.cli.first_fit import WATCH_S, FitTooSlow, budget_s, pace_watch


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_a_fit_is_not_judged_before_the_watch_ends():
    clock = Clock()
    advance = pace_watch(total=1000, budget=600, clock=clock)
    clock.t = WATCH_S - 1
    advance(1)  # 1 of 1000 units in 19 s projects far past the budget, but it is too early to say


def test_a_fit_projected_past_the_budget_stops():
    clock = Clock()
    advance = pace_watch(total=1000, budget=600, clock=clock)
    clock.t = WATCH_S + 1
    with pytest.raises(FitTooSlow) as err:
        advance(10)  # 10 units in 21 s: 2100 s for all
    assert err.value.projected_s == pytest.approx((WATCH_S + 1) * 100)


def test_a_fit_on_pace_for_the_budget_goes_on():
    clock = Clock()
    advance = pace_watch(total=1000, budget=600, clock=clock)
    for step in range(1, 11):
        clock.t = 50.0 * step
        advance(100)  # 500 s for all: within 600


def test_a_budget_shorter_than_the_watch_is_judged_when_it_is_spent():
    clock = Clock()
    advance = pace_watch(total=1000, budget=1, clock=clock)
    clock.t = 1.5
    with pytest.raises(FitTooSlow):
        advance(5)


def test_the_budget_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("RAINLOCAL_FIT_BUDGET", "90")
    assert budget_s() == 90
    monkeypatch.setenv("RAINLOCAL_FIT_BUDGET", "not a number")
    assert budget_s() == 600
    monkeypatch.setenv("RAINLOCAL_FIT_BUDGET", "0")
    assert budget_s() == 0


# ---- in a real terminal -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def unprobed_model(model_path, tmp_path_factory) -> Path:
    """SmolLM2 with one byte of its last tensors' data changed: it loads and answers as before, but its
    content fingerprint is another file's, so no shipped probes are found for it."""
    from rainlocal.gguf_info import content_fingerprint
    from rainlocal.latent.probes import find_probes

    path = tmp_path_factory.mktemp("unprobed") / "smollm2-variant.gguf"
    shutil.copyfile(model_path, path)
    with open(path, "r+b") as f:
        f.seek(path.stat().st_size - (512 << 10))
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0x01]))
    assert content_fingerprint(path) != content_fingerprint(model_path)
    assert find_probes(path) is None
    return path


def _spawn(model: Path, home: Path, budget: str | None) -> pexpect.spawn:
    env = {k: v for k, v in os.environ.items() if k != "RAINLOCAL_FIT_BUDGET"}
    env["RAINLOCAL_HOME"] = str(home)
    if budget is not None:
        env["RAINLOCAL_FIT_BUDGET"] = budget
    return pexpect.spawn(sys.executable, ["-m", "rainlocal", "run", "-m", str(model), "-n", "8", "Hello there"],
                         env=env, encoding="utf-8", timeout=600, dimensions=(50, 250))


def _finish(child: pexpect.spawn) -> tuple[str, int]:
    child.expect(pexpect.EOF)
    child.close()
    return child.before or "", child.exitstatus


def _probe_files(home: Path) -> list[Path]:
    return list(home.rglob("probes/*.npz"))


@pytest.mark.slow
def test_a_fit_past_the_budget_stops_says_how_and_the_answer_still_comes(unprobed_model, tmp_path):
    home = tmp_path / "home"
    child = _spawn(unprobed_model, home, "1")
    child.expect("fitting them once")
    child.expect(r"would take about .* more than the first-use budget")
    child.expect(r"rainlocal calibrate -m ")
    child.expect("the prompted judge answers instead")
    rest, status = _finish(child)
    assert status == 0
    assert rest.strip(), "an answer follows the note"
    assert not _probe_files(home), "nothing is written for a fit that stopped"

    # the next answer does not spend its watch again: the projection was remembered
    child = _spawn(unprobed_model, home, "1")
    child.expect(r"no latent-judge probes; fitting them here takes about .* \(measured on first use\)")
    text, status = _finish(child)
    assert status == 0 and "fitting them once" not in text


@pytest.mark.slow
def test_ctrl_c_during_a_first_use_fit_stops_the_fit_not_the_answer(unprobed_model, tmp_path):
    home = tmp_path / "home"
    child = _spawn(unprobed_model, home, None)
    child.expect("fitting them once")
    child.expect("fitting probes")  # the progress bar is up: the fit is under way
    child.kill(signal.SIGINT)
    child.expect("fitting stopped")
    child.expect("the prompted judge answers instead")
    rest, status = _finish(child)
    assert status == 0
    assert rest.strip(), "an answer follows the note"
    assert not _probe_files(home)


@pytest.mark.slow
def test_ctrl_c_during_calibrate_says_nothing_was_written_and_exits_130(unprobed_model, tmp_path):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items()}
    env["RAINLOCAL_HOME"] = str(home)
    child = pexpect.spawn(sys.executable, ["-m", "rainlocal", "calibrate", "-m", str(unprobed_model)],
                          env=env, encoding="utf-8", timeout=600, dimensions=(50, 250))
    child.expect("fitting probes")
    child.kill(signal.SIGINT)
    child.expect("interrupted: no probes were written")
    _, status = _finish(child)
    assert status == 130
    assert not _probe_files(home)
