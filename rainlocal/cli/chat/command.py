"""The ``chat`` command: options, resuming a saved conversation with its last reply's settings, and
starting the session (terminal or piped)."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from rainlocal import conversations
from rainlocal.cli.chat.session import ChatSession
from rainlocal.cli.common import load_generator, prepare_judge, stderr
from rainlocal.cli.options import generation_options, model_options, pass_options, resolve_settings
from rainlocal.conversations import Conversation
from rainlocal.errors import UsageError
from rainlocal.generate import GenerationSettings
from rainlocal.search.settings import RainSettings


@click.command("chat")
@model_options
@generation_options
@click.option("--continue", "resume_last", is_flag=True, help="Resume the last conversation.")
@click.option("--resume", "resume_id", metavar="ID", default=None, help="Resume the conversation ID (see rainlocal history).")
@click.option("--show-search", is_flag=True, help="Show the candidate branches while RAIN searches, and the rejected ones after each reply.")
@pass_options
def command(opts: dict[str, Any]) -> None:
    """Talk with a model in the terminal; every conversation is saved (see rainlocal history).

    With stdin not a terminal, each input line is one message and only the answers go to stdout."""
    ms, gen, system = resolve_settings(opts)
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    conv: Conversation | None = None
    if opts["resume_last"] and opts["resume_id"]:
        raise UsageError("give either --continue or --resume ID, not both")
    if opts["resume_id"]:
        conv = conversations.find(opts["resume_id"])
    elif opts["resume_last"]:
        conv = conversations.latest()
        if conv is None:
            stderr.print("no saved conversation to continue; starting a new one", markup=False)
    if conv is not None:
        if opts.get("model") is None and conv.model_path and Path(conv.model_path).is_file():
            ms.model = conv.model_path
        if opts.get("system") is None:
            system = conv.system
        gen = resumed_settings(gen, opts, _last_settings(conv))
    generator = load_generator(ms)
    prepare_judge(generator, gen)
    if conv is None:
        conv = Conversation(id=conversations.new_id(), system=system)
    elif system != conv.system:
        conv.set_system(system)
    session = ChatSession(generator, gen, conv, verbose=ms.verbose, show_search=bool(opts["show_search"]),
                          model_spec=ms.model)
    if interactive:
        session.interactive(resumed=conv.persisted)
    else:
        session.piped()


_RAIN_FLAGS = ("profile", "objective", "T", "T_m", "V", "c", "score", "rain_set")


def _last_settings(conv: Conversation) -> dict[str, Any]:
    for r in reversed(conv.records):
        if r.get("role") == "assistant" and isinstance(r.get("settings"), dict):
            return r["settings"]
    return conv.settings or {}


def resumed_settings(gen: GenerationSettings, opts: dict[str, Any], saved: dict[str, Any]) -> GenerationSettings:
    """A resumed conversation goes on with the settings of its last reply (mode, sampling, objective,
    RAIN constants, including what /mode and /set changed); options given on the command line win."""
    sampling = {k: saved[k] for k in ("temp", "top_p", "top_k", "seed", "max_tokens")
                if opts.get(k) is None and k in saved}
    try:
        gen = replace(gen, sampling=replace(gen.sampling, **{k: type(getattr(gen.sampling, k))(v)
                                                              for k, v in sampling.items()}))
    except (TypeError, ValueError):
        pass  # an unreadable saved value: keep the defaults
    if not opts.get("vanilla") and saved.get("mode") in ("rain", "vanilla"):
        gen = replace(gen, mode=saved["mode"])
    if isinstance(saved.get("rain"), dict) and not any(opts.get(k) for k in _RAIN_FLAGS):
        try:
            rain = RainSettings().with_overrides(saved["rain"])
        except ValueError:
            return gen
        gen = replace(gen, rain=rain, profile=str(saved.get("profile", gen.profile)),
                      objective=str(saved.get("objective", gen.objective)))
    return gen
