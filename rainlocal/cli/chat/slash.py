"""The chat's slash commands (/help, /set, /save, ...): a mixin of ``ChatSession``, and ``set_value``,
which applies one ``/set KEY VALUE`` with the same checks as the command line's flags."""

from __future__ import annotations

import shlex
from dataclasses import replace
from pathlib import Path
from typing import Callable

from rainlocal import conversations
from rainlocal.cli.chat.reader import Exit
from rainlocal.conversations import Conversation
from rainlocal.errors import RainlocalError, UsageError
from rainlocal.generate import GenerationSettings
from rainlocal.search.settings import RainSettings

HELP = """\
Commands
  /help                 this help
  /clear                start a new conversation (the current one stays saved)
  /system [TEXT|-]      show, set, or (with -) remove the system prompt
  /mode rain|vanilla    answer with the RAIN search or plain sampling
  /objective NAME       what RAIN's self-evaluation judges: harmless, truthful, positive, or a TOML file
  /set [KEY VALUE]      show settings, or change one: temp, top_p, top_k, seed, max_tokens,
                        or any RAIN constant (T, min_searches, T_m, V, c, gamma, score, ...)
  /search on|off        show the candidate branches while RAIN searches, and the rejected ones after
  /stats                search statistics of the last reply
  /save [FILE]          save the conversation: Markdown (.md) or JSON (.json); default ./rainlocal-ID.md
  /regen                answer the last message again (next seed)
  /exit                 quit (also /quit, Ctrl-D, or Ctrl-C at an empty prompt)
Input
  end a line with \\ to continue on the next line; \"\"\" opens and closes a multi-line block;
  start a message with // to send a text that begins with /
  Ctrl-C during a reply stops it and keeps what was committed; a second Ctrl-C quits
Saved conversations: rainlocal history · resume the last one: rainlocal chat --continue"""

SAMPLING_KEYS = {
    "temp": "temp", "temperature": "temp", "top_p": "top_p", "top-p": "top_p", "top_k": "top_k",
    "top-k": "top_k", "seed": "seed", "max_tokens": "max_tokens", "max-tokens": "max_tokens", "n": "max_tokens",
}


class SlashCommands:
    """The slash commands of a ``ChatSession`` (which provides conv, gen, generator, view, last, turn)."""

    # ---- slash commands ------------------------------------------------------------------------------
    def _commands(self) -> dict[str, Callable[[str], None]]:
        return {
            "help": self.cmd_help, "?": self.cmd_help, "clear": self.cmd_clear, "system": self.cmd_system,
            "mode": self.cmd_mode, "objective": self.cmd_objective, "set": self.cmd_set, "stats": self.cmd_stats,
            "save": self.cmd_save, "regen": self.cmd_regen, "search": self.cmd_search,
            "exit": self.cmd_exit, "quit": self.cmd_exit, "bye": self.cmd_exit,
        }

    def cmd_help(self, arg: str) -> None:
        self.view.console.print(HELP, markup=False, highlight=False)

    def cmd_exit(self, arg: str) -> None:
        raise Exit

    def cmd_clear(self, arg: str) -> None:
        old = self.conv
        self.conv = Conversation(id=conversations.new_id(), system=old.system)
        self.last = None
        note = f"new conversation {self.conv.id}"
        if old.persisted:
            note += f" (conversation {old.id} is saved)"
        self.view.note(note)

    def cmd_system(self, arg: str) -> None:
        if not arg:
            self.view.note(f"system prompt: {self.conv.system}" if self.conv.system else "no system prompt")
            return
        text = None if arg == "-" else arg
        self.conv.set_system(text)
        self.view.note("system prompt removed" if text is None else "system prompt set")

    def cmd_mode(self, arg: str) -> None:
        if arg not in ("rain", "vanilla"):
            raise UsageError("/mode needs rain or vanilla")
        self.gen = replace(self.gen, mode=arg)
        self.view.note(f"mode: {self._mode_label()}")

    def cmd_objective(self, arg: str) -> None:
        if not arg:
            self.view.note(f"objective: {self.gen.objective}")
            return
        self.generator.objective(arg)  # loads and checks it (ConfigError/UsageError on a bad one)
        self.gen = replace(self.gen, objective=arg)
        note = f"objective: {arg}"
        if self.gen.mode != "rain":
            note += " (used in rain mode: /mode rain)"
        self.view.note(note)

    def cmd_set(self, arg: str) -> None:
        if not arg:
            self._show_settings()
            return
        if "=" in arg.split(" ", 1)[0]:
            key, _, value = arg.partition("=")
        else:
            key, _, value = arg.partition(" ")
        key, value = key.strip(), value.strip()
        if not value:
            raise UsageError(f"/set {key} needs a value (/set KEY VALUE)")
        if key == "mode":
            return self.cmd_mode(value)
        if key == "objective":
            return self.cmd_objective(value)
        self.gen = set_value(self.gen, key, value)
        self.view.note(f"{key} = {value}")

    def _show_settings(self) -> None:
        g = self.gen
        s = g.sampling
        lines = [f"mode {g.mode} · objective {g.objective} · profile {g.profile}",
                 f"temp {s.temp:g} · top_p {s.top_p:g} · top_k {s.top_k} · seed {s.seed} · max_tokens {s.max_tokens}",
                 "rain " + " · ".join(f"{k} {v}" for k, v in g.rain.__dict__.items())]
        for line in lines:
            self.view.info(line)

    def cmd_stats(self, arg: str) -> None:
        if self.last is None:
            self.view.note("no reply yet in this conversation")
            return
        self.view.stats(self.last, self.last_settings)

    def cmd_save(self, arg: str) -> None:
        if not self.conv.records:
            raise UsageError("nothing to save yet")
        try:
            parts = shlex.split(arg) if arg else []
        except ValueError:
            parts = [arg]
        target = Path(parts[0] if parts else f"rainlocal-{self.conv.id}.md").expanduser()
        text = self.conv.export(target.suffix)
        try:
            target.write_text(text, encoding="utf-8")
        except OSError as e:
            raise RainlocalError(f"cannot write {target}: {e.strerror or e}") from None
        turns = self.conv.turns
        self.view.note(f"saved {turns} turn{'s' if turns != 1 else ''} to {target}")

    def cmd_regen(self, arg: str) -> None:
        self.turn(None, regen=True)

    def cmd_search(self, arg: str) -> None:
        if arg not in ("on", "off", ""):
            raise UsageError("/search needs on or off")
        self.show_search = self.view.show_search = (arg == "on") if arg else not self.show_search
        self.view.note(f"search view {'on' if self.show_search else 'off'}")


def set_value(gen: GenerationSettings, key: str, value: str) -> GenerationSettings:
    """``gen`` with one sampling or RAIN setting changed; a bad key or value raises UsageError."""
    if key.lower() in SAMPLING_KEYS:
        field_name = SAMPLING_KEYS[key.lower()]
        kind = float if field_name in ("temp", "top_p") else int
        try:
            v = kind(value)
        except ValueError:
            raise UsageError(f"{key} needs {'a number' if kind is float else 'an integer'}, got {value!r}") from None
        sampling = replace(gen.sampling, **{field_name: v})
        bad = sampling.problem()
        if bad:
            raise UsageError(" ".join(bad))
        return replace(gen, sampling=sampling)
    known = RainSettings.__dataclass_fields__
    name = key if key in known else key.replace("-", "_")
    if name not in known:
        lowered = {k.lower(): k for k in known}
        name = lowered.get(name.lower(), name)
    try:
        rain = gen.rain.with_overrides({name: value})
    except ValueError as e:
        raise UsageError(str(e)) from None
    return replace(gen, rain=rain)
