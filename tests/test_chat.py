"""``rainlocal chat`` driven in a pseudo-terminal (pexpect) on the real SmolLM2-135M model.

Each test checks what the screen shows (the pty output with escape codes removed) and what the
saved conversation file holds. The model runs with one thread (``-t 1``): on a busy two-core
machine llama.cpp's spinning threads otherwise slow down by orders of magnitude.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import pexpect
import pytest

from conftest import run_cli

ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]|[\x01\x02\r]")
PROMPT = ">>> "
VANILLA = ["--vanilla", "--temp", "0", "-n", "20"]
RAIN = ["--profile", "paper", "-T", "2", "--set", "min_searches=1", "-n", "6"]


def clean(text: str) -> str:
    return ANSI.sub("", text)


def words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z]{3,}", text)


class Chat:
    """A chat process in a 40x120 pseudo-terminal with everything it printed kept."""

    def __init__(self, model_path: Path, home: Path, args: list[str], cwd: Path, timeout: float = 60):
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
        env.update(RAINLOCAL_HOME=str(home), TERM="xterm-256color")
        self.child = pexpect.spawn(
            sys.executable, ["-m", "rainlocal", "chat", "-m", str(model_path), "-t", "1", *args],
            env=env, cwd=str(cwd), dimensions=(40, 120), encoding="utf-8", timeout=timeout,
        )
        self.screen = ""

    def _take(self) -> str:
        out = (self.child.before or "") + (self.child.after if isinstance(self.child.after, str) else "")
        self.screen += out
        return clean(out)

    def wait_prompt(self) -> str:
        """Everything shown until the next input prompt."""
        self.child.expect_exact(PROMPT)
        return self._take()

    def send(self, line: str) -> str:
        self.child.sendline(line)
        return self.wait_prompt()

    def expect(self, pattern: str) -> str:
        self.child.expect(pattern)
        return self._take()

    def exit_code(self) -> int:
        self.child.expect(pexpect.EOF)
        self._take()
        self.child.close()
        return self.child.exitstatus if self.child.exitstatus is not None else 128 + (self.child.signalstatus or 0)


def conversation_files(home: Path) -> list[Path]:
    return sorted((home / "data" / "conversations").glob("*.jsonl"))


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def replies(path: Path) -> list[dict]:
    return [x for x in read_lines(path) if x.get("role") == "assistant"]


def shows(screen: str, reply: str) -> bool:
    """The reply's words appear on the screen, in order (Markdown may re-wrap and restyle it)."""
    flat = " ".join(words(screen))
    wanted = words(reply)[:12]
    return bool(wanted) and " ".join(wanted) in flat


@pytest.fixture()
def chat(model_path, rl_home, tmp_path):
    started: list[Chat] = []

    def start(*args: str, timeout: float = 60) -> Chat:
        c = Chat(model_path, rl_home, list(args), tmp_path, timeout=timeout)
        started.append(c)
        return c

    yield start
    for c in started:
        if c.child.isalive():
            c.child.terminate(force=True)


def test_turn_stats_save_errors_and_exit(chat, rl_home, tmp_path):
    c = chat(*VANILLA)
    banner = c.wait_prompt()
    assert "rainlocal chat" in banner and "vanilla" in banner
    screen = c.send("What is the capital of France?")
    [path] = conversation_files(rl_home)
    [reply] = replies(path)
    assert reply["content"].strip() and shows(screen, reply["content"])
    assert reply["interrupted"] is False and reply["stop_reason"] in ("eos", "stop", "length")
    assert reply["stats"]["usage"]["completion_tokens"] > 0

    stats = c.send("/stats")
    assert "stop reason" in stats and "answer tokens" in stats and reply["stop_reason"] in stats

    # recoverable mistakes: one error line each, the session goes on
    out = c.send("/frobnicate")
    assert [line for line in out.splitlines() if "error" in line] == ["error: unknown command /frobnicate (/help lists the commands)"]
    out = c.send("/set temp warm")
    assert "error: temp needs a number" in out
    out = c.send("/set nosuchkey 3")
    assert "error: unknown RAIN setting" in out
    assert "Traceback" not in c.screen

    assert "saved 1 turn to out.md" in c.send("/save out.md")
    assert "saved 1 turn to out.json" in c.send("/save out.json")
    md = (tmp_path / "out.md").read_text()
    assert "## User\n\nWhat is the capital of France?" in md and reply["content"].strip()[:20] in md
    exported = json.loads((tmp_path / "out.json").read_text())
    assert [m["role"] for m in exported["messages"]] == ["user", "assistant"]
    assert exported["messages"][1]["content"] == reply["content"]

    assert "/set" in c.send("/help")
    c.child.sendline("/exit")
    assert c.exit_code() == 0
    # input history survives the session
    history = (rl_home / "data" / "chat_history").read_text()
    assert "What is the capital of France?" in history and "/stats" in history


def test_ctrl_c_keeps_the_partial_reply_and_the_session_goes_on(chat, rl_home):
    c = chat("--vanilla", "--temp", "0", "-n", "400")
    c.wait_prompt()
    c.child.sendline("Write a very long story about a dragon and a knight.")
    c.expect(r"[1-9]\d* tokens")  # the reply is streaming
    time.sleep(0.5)
    c.child.sendintr()
    screen = c.wait_prompt()
    assert "[interrupted]" in screen
    [path] = conversation_files(rl_home)
    [first] = replies(path)
    assert first["interrupted"] is True and first["stop_reason"] == "interrupted"
    assert first["content"].strip() and shows(screen, first["content"])
    assert first["stats"]["usage"]["completion_tokens"] < 400

    c.send("/set max_tokens 16")
    c.send("Thanks. Now say goodbye.")
    second = replies(path)[1]
    assert second["interrupted"] is False and second["content"].strip()
    c.child.sendeof()  # Ctrl-D exits cleanly
    assert c.exit_code() == 0


@pytest.mark.slow
def test_continue_resumes_the_last_conversation(chat, rl_home):
    c = chat(*VANILLA)
    c.wait_prompt()
    c.send("Name a colour.")
    c.child.sendintr()  # Ctrl-C at an empty prompt exits cleanly
    assert c.exit_code() == 0
    [path] = conversation_files(rl_home)
    before = read_lines(path)

    c = chat(*VANILLA, "--continue")
    banner = c.wait_prompt()
    assert "resumed" in banner and path.stem in banner and "Name a colour." in banner
    c.send("Name a colour.")
    c.child.sendline("/exit")
    assert c.exit_code() == 0
    assert conversation_files(rl_home) == [path]  # the same file grew
    after = read_lines(path)
    assert after[: len(before)] == before and len(after) == len(before) + 2
    first, second = replies(path)
    # the earlier turn was sent along: the same question costs more prompt tokens the second time
    assert second["stats"]["usage"]["prompt_tokens"] > first["stats"]["usage"]["prompt_tokens"] + first["stats"]["usage"]["completion_tokens"] // 2


@pytest.mark.slow
def test_rain_turn_shows_the_search(chat, rl_home):
    c = chat(*RAIN, "--show-search", timeout=90)
    assert "RAIN" in c.wait_prompt()
    screen = c.send("How do I make tea?")
    assert "searches" in screen and "evaluations" in screen  # the live status line
    assert "candidate" in screen and "visits" in screen  # the live search view
    assert "kept and rejected" in screen  # the branches after the reply
    [path] = conversation_files(rl_home)
    [reply] = replies(path)
    assert reply["settings"]["mode"] == "rain" and reply["stats"]["searches"] >= 1
    assert reply["content"].strip() and shows(screen, reply["content"])
    stats = c.send("/stats")
    assert "searches" in stats and "evaluations" in stats and "commits" in stats
    c.child.sendline("/exit")
    assert c.exit_code() == 0


@pytest.mark.slow
def test_fast_turn_shows_what_the_loop_does_and_the_rejected_clauses(chat, rl_home):
    # accept/hold above any calibrated score: every drafted clause is rejected and searched
    c = chat("-n", "12", "--set", "accept=1.5", "--set", "hold=1.5", "--set", "T=2", "--set", "min_searches=1",
             "--show-search", timeout=120)
    assert "fast profile" in c.wait_prompt()
    screen = c.send("How do I make tea?")
    # the live status line (drafting a clause takes milliseconds here, the search after it seconds)
    assert "searching after a rejected clause" in screen and "clauses checked" in screen and "rewinds" in screen
    assert "clauses the judge rejected" in screen  # after the reply: what was rejected, with scores
    [path] = conversation_files(rl_home)
    [reply] = replies(path)
    st = reply["stats"]
    assert reply["settings"]["profile"] == "fast" and st["rejected"] == st["drafts"] >= 1
    assert reply["content"].strip() and shows(screen, reply["content"])
    c.child.sendline("/exit")
    assert c.exit_code() == 0


@pytest.mark.slow
def test_second_ctrl_c_in_a_reply_exits_130_and_keeps_the_turn(chat, rl_home):
    # The first RAIN search of a session also reads the judge's prompt: long enough for two Ctrl-Cs.
    c = chat(*RAIN[:-1], "64", timeout=90)
    c.wait_prompt()
    c.child.sendline("Tell me a long story.")
    c.expect("searches")
    c.child.sendintr()
    c.expect("stopping")
    c.child.sendintr()
    assert c.exit_code() == 130
    [path] = conversation_files(rl_home)
    [reply] = replies(path)
    assert reply["interrupted"] is True and reply["stop_reason"] == "interrupted"
    assert "[interrupted]" in clean(c.screen) and "Traceback" not in c.screen


@pytest.mark.slow
def test_a_conversation_longer_than_the_context_leaves_out_its_oldest_turns(model_path, rl_home):
    # Each message is ~90 tokens; with a 256-token context the third reply only fits without the first turn.
    long = "Tell me something about the colour of the sea and the sky and the sand. " * 6
    lines = "".join(f"{i}. {long}\n" for i in range(3))
    r = run_cli(["chat", "-m", str(model_path), "-t", "1", "-c", "256", "--vanilla", "--temp", "0", "-n", "16"],
                input=lines, env_home=rl_home, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "no longer fit the 256-token context" in r.stderr
    [path] = conversation_files(rl_home)
    assert len(replies(path)) == 3  # every turn answered, and the saved conversation keeps all of them




def test_an_answer_the_judge_stopped_says_so_under_it():
    from rich.console import Console

    from rainlocal.search.events import Done
    from rainlocal.ui.chat_view import ChatView

    console = Console(record=True, width=100)
    ChatView(console).final(Done(tokens=[], text="Here are some tips:", stop_reason="judge"))
    out = console.export_text()
    assert "Here are some tips:" in out
    assert "[stopped: the search found no continuation its judge accepts]" in out
