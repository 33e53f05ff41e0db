"""The conversation store (one JSONL file per conversation) and ``rainlocal history``; no model needed."""

from __future__ import annotations

import json
import os
import time

import pytest

from conftest import run_cli
from rainlocal import conversations
from rainlocal.conversations import Conversation
from rainlocal.errors import RainlocalError, UsageError


def reply(text: str, **extra) -> dict:
    return {"content": text, "stop_reason": "eos", "interrupted": False, "stats": {"searches": 3}, **extra}


def make(cid: str, turns: list[tuple[str, str]], *, system: str | None = None, mtime: float | None = None) -> Conversation:
    conv = Conversation(id=cid, model="tiny.gguf", settings={"mode": "rain", "objective": "harmless"}, system=system)
    for user, answer in turns:
        conv.add_turn(user, reply(answer))
    if mtime is not None:
        os.utime(conv.path, (mtime, mtime))
    return conv


def test_a_turn_is_on_disk_when_add_turn_returns(rl_home):
    conv = Conversation(id="c1", model="tiny.gguf", system="Be brief.")
    assert not conv.persisted  # nothing is written before the first turn
    conv.add_turn("Hi", reply("Hello!"))
    lines = [json.loads(x) for x in conv.path.read_text().splitlines()]
    assert conv.path.parent == rl_home / "data" / "conversations"
    assert lines[0]["type"] == "header" and lines[0]["id"] == "c1" and lines[0]["system"] == "Be brief."
    assert [(x["role"], x["content"]) for x in lines[1:]] == [("user", "Hi"), ("assistant", "Hello!")]
    assert lines[2]["stats"] == {"searches": 3} and lines[2]["interrupted"] is False


def test_load_round_trips_regen_system_changes_and_interruptions(rl_home):
    conv = make("c2", [("Hi", "Hello!")], system="Be brief.")
    conv.add_turn(None, reply("Hey there!", regenerated=True))
    conv.set_system("Be verbose.")
    conv.add_turn("Tell me more", reply("Well", interrupted=True, stop_reason="interrupted"))
    back = conversations.load(conv.path)
    assert back.system == "Be verbose." and back.initial_system == "Be brief."
    assert back.context() == [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey there!"},
        {"role": "user", "content": "Tell me more"}, {"role": "assistant", "content": "Well"},
    ]
    assert back.turns == 2 and back.last_assistant()["interrupted"] is True
    md = back.to_markdown()
    assert "Be brief." in md and "Be verbose." in md and "Hello!" not in md and "*(interrupted)*" in md
    assert md.index("## User\n\nHi") < md.index("Hey there!") < md.index("Tell me more")


def test_a_torn_last_line_is_ignored_and_cut_before_appending(rl_home):
    conv = make("c3", [("Hi", "Hello!")])
    with open(conv.path, "a") as f:
        f.write('{"type": "message", "role": "user", "cont')  # killed mid-write
    back = conversations.load(conv.path)
    assert back.turns == 1
    back.add_turn("Again", reply("Sure."))
    lines = [json.loads(x) for x in conv.path.read_text().splitlines()]  # every line parses
    assert [x.get("content") for x in lines[1:]] == ["Hi", "Hello!", "Again", "Sure."]


def test_a_broken_line_in_the_middle_is_an_error(rl_home):
    conv = make("c4", [("Hi", "Hello!")])
    text = conv.path.read_text().splitlines()
    conv.path.write_text("\n".join([text[0], "not json", *text[1:]]) + "\n")
    with pytest.raises(RainlocalError, match=r"c4.jsonl:2"):
        conversations.load(conv.path)


def test_latest_and_find(rl_home):
    now = time.time()
    make("20240101-000000-aaaa", [("old", "x")], mtime=now - 100)
    make("20240102-000000-bbbb", [("new", "y")], mtime=now)
    make("20240102-000000-bbbc", [("newer id, older file", "z")], mtime=now - 50)
    assert conversations.latest().id == "20240102-000000-bbbb"
    assert conversations.find("last").id == "20240102-000000-bbbb"
    assert conversations.find("20240101").id == "20240101-000000-aaaa"
    with pytest.raises(UsageError, match="matches 2"):
        conversations.find("20240102-000000-bb")
    with pytest.raises(UsageError, match="no conversation"):
        conversations.find("nope")


def test_history_lists_most_recent_first(rl_home):
    now = time.time()
    make("20240101-000000-aaaa", [("First question", "x")], mtime=now - 100)
    make("20240102-000000-bbbb", [("Second question", "y"), ("and more", "z")], mtime=now)
    r = run_cli(["history"], env_home=rl_home)
    assert r.returncode == 0, r.stderr
    rows = r.stdout.splitlines()
    assert rows[0].split()[:3] == ["ID", "UPDATED", "TURNS"]
    assert rows[1].startswith("20240102-000000-bbbb") and "Second question" in rows[1] and " 2 " in rows[1]
    assert rows[2].startswith("20240101-000000-aaaa") and "First question" in rows[2]
    r = run_cli(["history", "--json", "-n", "1"], env_home=rl_home)
    [obj] = [json.loads(x) for x in r.stdout.splitlines()]
    assert obj["id"] == "20240102-000000-bbbb" and obj["turns"] == 2 and obj["model"] == "tiny.gguf"


def test_history_show_prints_one_conversation(rl_home):
    make("20240101-000000-aaaa", [("What is RAIN?", "A search.")], system="Be brief.")
    r = run_cli(["history", "show", "20240101"], env_home=rl_home)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("# Conversation 20240101-000000-aaaa")
    assert "## System\n\nBe brief." in r.stdout and "## User\n\nWhat is RAIN?" in r.stdout
    assert "## Assistant\n\nA search." in r.stdout
    r = run_cli(["history", "show", "last", "--json"], env_home=rl_home)
    obj = json.loads(r.stdout)
    assert [m["content"] for m in obj["messages"]] == ["What is RAIN?", "A search."]


def test_history_errors_are_one_line(rl_home):
    r = run_cli(["history"], env_home=rl_home)
    assert r.returncode == 0 and r.stdout == "" and "no saved conversations" in r.stderr
    r = run_cli(["history", "show", "nope"], env_home=rl_home)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "no conversation 'nope'" in r.stderr
    make("20240101-000000-aaaa", [("Hi", "Hello")])
    (rl_home / "data" / "conversations" / "broken.jsonl").write_text("garbage\n")
    r = run_cli(["history"], env_home=rl_home)
    assert r.returncode == 0 and "unreadable" in r.stdout and "20240101-000000-aaaa" in r.stdout
    r = run_cli(["history", "show", "broken"], env_home=rl_home)
    assert r.returncode == 1 and "Traceback" not in r.stderr and r.stderr.startswith("rainlocal: error:")


def test_a_conversation_exports_itself_by_file_extension(rl_home):
    conv = make("c9", [("Hi", "Hello!")])
    assert json.loads(conv.export(".json")) == conv.to_json()
    assert conv.export(".md") == conv.export(".MARKDOWN") == conv.to_markdown()
    assert "Hello!" in conv.export(".md")
    with pytest.raises(UsageError, match="'.pdf'"):
        conv.export(".pdf")
