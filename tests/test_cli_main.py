"""The command's registry and the one place domain errors live."""

from __future__ import annotations

import pytest

from conftest import run_cli


def test_every_command_is_registered(rl_home):
    r = run_cli(["--help"], env_home=rl_home, timeout=60)
    assert r.returncode == 0
    listed = {line.split()[0] for line in r.stdout.split("Commands:")[1].splitlines() if line.strip()}
    assert listed == {"bench", "calibrate", "chat", "eval", "history", "models", "run", "serve"}


def test_a_command_module_that_fails_to_import_fails_loudly(monkeypatch):
    """A broken import (say, a file missing from the package) must not silently drop the command."""
    import builtins

    from rainlocal.cli import main

    real_import = builtins.__import__

    def broken(name, *args, **kwargs):
        fromlist = (args[2] if len(args) > 2 else kwargs.get("fromlist")) or ()
        if name == "rainlocal.cli.history" or (name == "rainlocal.cli" and "history" in fromlist):
            raise ImportError("history is missing")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", broken)
    with pytest.raises(ImportError, match="history is missing"):
        main._register()


def test_domain_errors_live_in_errors():
    from rainlocal import errors
    from rainlocal.judge import JudgeError

    assert JudgeError is errors.JudgeError and issubclass(JudgeError, errors.RainlocalError)
