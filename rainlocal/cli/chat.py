"""``rainlocal chat``: a terminal conversation that shows the RAIN search at work.

In a terminal: the reply streams as RAIN commits token sets under a live status line, the finished
reply is rendered as Markdown, slash commands change the conversation and the settings, input
history persists across sessions. With stdin not a terminal, each input line is one user turn and
only the answers go to stdout. Either way every turn is saved (``rainlocal.conversations``) before
the next prompt, so ``--continue`` and ``rainlocal history`` see it.
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import click

from rainlocal import conversations, paths
from rainlocal.cli.common import Interrupts, load_generator, prepare_judge, stderr
from rainlocal.cli.options import generation_options, model_options, pass_options, resolve_settings
from rainlocal.conversations import Conversation
from rainlocal.engine.formats import build_messages
from rainlocal.errors import EXIT_INTERRUPTED, RainlocalError, UsageError
from rainlocal.generate import GenerationSettings, Generator
from rainlocal.search.events import Commit, Done, Step
from rainlocal.search.settings import RainSettings
from rainlocal.ui.stream import format_step

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

PROMPT = ">>> "
CONTINUATION = "... "


class _Exit(Exception):
    """Leave the chat loop normally (exit code 0)."""


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
    session = ChatSession(generator, gen, conv, verbose=ms.verbose, show_search=bool(opts["show_search"]))
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


class ChatSession:
    """One chat: the conversation, the current settings, the last reply; terminal or piped."""

    def __init__(self, generator: Generator, gen: GenerationSettings, conv: Conversation, *,
                 verbose: bool = False, show_search: bool = False):
        self.generator = generator
        self.gen = gen
        self.conv = conv
        self.verbose = verbose
        self.show_search = show_search
        self.last: Done | None = None
        self.last_settings: dict[str, Any] = {}
        self.regens = 0
        self.view = None

    # ---- shared ----------------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self.generator.engine.path.name

    def settings_dict(self, gen: GenerationSettings | None = None) -> dict[str, Any]:
        g = gen or self.gen
        return {**g.as_dict(), "ctx_size": self.generator.engine.n_ctx, "chat_format": self.generator.formatter.name}

    def _save(self, user: str | None, done: Done, settings: dict[str, Any], regen: bool) -> None:
        if not self.conv.persisted:
            self.conv.model = self.model_name
            self.conv.model_path = str(self.generator.engine.path)
            self.conv.settings = self.settings_dict()
        record: dict[str, Any] = {
            "content": done.text,
            "stop_reason": done.stop_reason,
            "interrupted": done.stop_reason == "interrupted",
            "model": self.model_name,
            "settings": settings,
            "stats": done.stats,
        }
        if regen:
            record["regenerated"] = True
        self.conv.add_turn(None if regen else user, record)

    def _request(self, text: str | None, regen: bool) -> tuple[str, list[dict[str, str]], GenerationSettings]:
        """The user text, the earlier messages and the settings for the next reply."""
        gen = self.gen
        if regen:
            last_user = self.conv.last_user()
            if last_user is None or self.conv.last_assistant() is None:
                raise UsageError("nothing to regenerate yet")
            context = self.conv.context()
            # everything before the last user message
            idx = max(i for i, m in enumerate(context) if m["role"] == "user")
            self.regens += 1
            gen = replace(gen, sampling=replace(gen.sampling, seed=gen.sampling.seed + self.regens))
            return last_user["content"], context[:idx], gen
        self.regens = 0
        return text or "", self.conv.context(), gen

    def _fit(self, messages: list[dict[str, str]], gen: GenerationSettings, tell) -> list[dict[str, str]]:
        """The messages that fit the context with room for the answer; says when old turns are left
        out (they stay in the saved conversation)."""
        fitted, dropped = self.generator.fit(messages, gen.sampling.max_tokens)
        if dropped:
            tell(f"(the oldest {dropped} message{'s' if dropped != 1 else ''} no longer fit the "
                 f"{self.generator.engine.n_ctx}-token context and were left out of this reply's prompt)")
        return fitted

    # ---- piped stdin -------------------------------------------------------------------------------
    def piped(self) -> None:
        """Each input line is one message; answers go to stdout, separated by a blank line."""
        first = True
        for line in sys.stdin:
            text = line.rstrip("\r\n")
            if not text.strip():
                continue
            if not first:
                sys.stdout.write("\n")
            first = False
            user, context, gen = self._request(text, False)
            messages = self._fit(build_messages(user, self.conv.system, context), gen, lambda m: stderr.print(m, markup=False, highlight=False))
            collected = {"text": "", "tokens": []}
            done: Done | None = None
            log = sys.stderr if self.verbose else None
            with Interrupts() as interrupts:
                try:
                    for ev in self.generator.stream(messages, gen, should_stop=lambda: interrupts.requested):
                        if isinstance(ev, Commit):
                            collected["text"] += ev.text
                            collected["tokens"] += ev.tokens
                            if ev.text:
                                sys.stdout.write(ev.text)
                                sys.stdout.flush()
                        elif isinstance(ev, Step) and log is not None and ev.committed:
                            log.write(format_step(ev) + "\n")
                            log.flush()
                        elif isinstance(ev, Done):
                            done = ev
                except KeyboardInterrupt:
                    done = Done(tokens=collected["tokens"], text=collected["text"], stop_reason="interrupted")
                    with interrupts.shielded():
                        self._save(user, done, self.settings_dict(gen), False)
                    raise
                assert done is not None
                sys.stdout.write("\n")
                sys.stdout.flush()
                with interrupts.shielded():
                    self._save(user, done, self.settings_dict(gen), False)
            self.last = done
            if done.stop_reason == "interrupted":
                stderr.print("(interrupted)", markup=False)
                sys.exit(EXIT_INTERRUPTED)

    # ---- the terminal ------------------------------------------------------------------------------
    def interactive(self, *, resumed: bool) -> None:
        from rainlocal.ui.chat_view import ChatView

        self.view = view = ChatView(show_search=self.show_search)
        history = _History(paths.data_dir() / "chat_history")
        view.banner(self.model_name, self._mode_label(), self.conv.id, resumed)
        if resumed:
            n = self.conv.turns
            view.info(f"{n} earlier turn{'s' if n != 1 else ''}; the last one:")
            view.recap(self.conv.records)
        commands = self._commands()
        while True:
            try:
                text = _read_message(history)
            except _Exit:
                return
            if text is None:
                continue
            stripped = text.strip()
            if not stripped:
                continue
            if stripped.startswith("/") and not stripped.startswith("//"):
                name, _, arg = stripped[1:].partition(" ")
                handler = commands.get(name.lower())
                try:
                    if handler is None:
                        raise UsageError(f"unknown command /{name} (/help lists the commands)")
                    handler(arg.strip())
                except _Exit:
                    return
                except RainlocalError as e:
                    view.error(str(e))
                continue
            if stripped.startswith("//"):
                text = text.lstrip()[1:]
            try:
                self.turn(text)
            except RainlocalError as e:
                view.error(str(e))

    def turn(self, text: str | None, *, regen: bool = False) -> Done:
        """One reply in the terminal, saved when it ends (also when a second Ctrl-C ends the session)."""
        view = self.view
        user, context, gen = self._request(text, regen)
        messages = self._fit(build_messages(user, self.conv.system, context), gen, view.info)
        settings = self.settings_dict(gen)
        with Interrupts() as interrupts:
            try:
                done = view.reply(
                    self._logged(self.generator.stream(messages, gen, should_stop=lambda: interrupts.requested)),
                    stopping=lambda: interrupts.requested, searching=gen.mode == "rain",
                )
            except KeyboardInterrupt:
                st = view.state
                partial = Done(tokens=[], text=st.text if st else "", stop_reason="interrupted")
                view.partial(partial.text)
                with interrupts.shielded():
                    self._save(user, partial, settings, regen)
                raise
            with interrupts.shielded():  # a second Ctrl-C now exits 130 after the turn is saved
                self._save(user, done, settings, regen)
        self.last, self.last_settings = done, settings
        return done

    def _logged(self, events):
        for ev in events:
            if self.verbose and isinstance(ev, Step) and ev.committed:
                sys.stderr.write(format_step(ev) + "\n")
            yield ev

    def _mode_label(self) -> str:
        if self.gen.mode == "vanilla":
            return f"vanilla sampling (temp {self.gen.sampling.temp:g})"
        if self.gen.rain.loop == "draft":
            return f"RAIN, {self.gen.profile} profile (objective {self.gen.objective}; drafts checked, searched where rejected)"
        return f"RAIN search, {self.gen.profile} profile (objective {self.gen.objective}, T={self.gen.rain.T})"

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
        raise _Exit

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
        text = export(self.conv, target)
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


def export(conv: Conversation, target: Path) -> str:
    """The conversation as Markdown or JSON, chosen by the file's extension."""
    ext = target.suffix.lower()
    if ext == ".json":
        return json.dumps(conv.to_json(), ensure_ascii=False, indent=2) + "\n"
    if ext in (".md", ".markdown", ".txt", ""):
        return conv.to_markdown()
    raise UsageError(f"cannot save as {ext!r}: use a .md or .json file name")


def set_value(gen: GenerationSettings, key: str, value: str) -> GenerationSettings:
    """``gen`` with one sampling or RAIN setting changed; a bad key or value raises UsageError."""
    if key.lower() in SAMPLING_KEYS:
        field_name = SAMPLING_KEYS[key.lower()]
        kind = float if field_name in ("temp", "top_p") else int
        try:
            v = kind(value)
        except ValueError:
            raise UsageError(f"{key} needs {'a number' if kind is float else 'an integer'}, got {value!r}") from None
        checks = {
            "temp": (v >= 0, "temp must be 0 or more"),
            "top_p": (0 < v <= 1, "top_p must be in (0, 1]"),
            "top_k": (v >= 0, "top_k must be 0 or more"),
            "max_tokens": (v >= 1, "max_tokens must be at least 1"),
        }
        ok, message = checks.get(field_name, (True, ""))
        if not ok:
            raise UsageError(message)
        return replace(gen, sampling=replace(gen.sampling, **{field_name: v}))
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


# ---- input ---------------------------------------------------------------------------------------------
class _History:
    """Input history in a file, read at start and appended after every line (readline when present)."""

    def __init__(self, path: Path):
        self.path = path
        try:
            import readline
        except ImportError:  # pragma: no cover - Windows without pyreadline
            self.readline = None
            return
        self.readline = readline
        try:
            readline.set_history_length(2000)
            if path.exists():
                readline.read_history_file(str(path))
        except OSError:
            pass

    def buffer(self) -> str:
        return self.readline.get_line_buffer() if self.readline is not None else ""

    def added(self, line: str) -> None:
        if self.readline is None or not line.strip():
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.path.exists():
                self.path.touch()
            self.readline.append_history_file(1, str(self.path))
        except (OSError, AttributeError):
            pass


def _colored(prompt: str) -> str:
    # \001 and \002 tell readline that the escape codes take no room on the line.
    return f"\001\033[1;32m\002{prompt}\001\033[0m\002"


def _read_message(history: _History) -> str | None:
    """One message from the terminal: a line, backslash-continued lines, or a \"\"\" block.

    Returns None when Ctrl-C discarded a half-typed message; raises _Exit on Ctrl-D or on Ctrl-C at
    an empty prompt."""
    lines: list[str] = []
    block = False
    prompt = PROMPT
    while True:
        try:
            line = input(_colored(prompt))
        except EOFError:
            print()
            if lines:
                return None
            raise _Exit from None
        except KeyboardInterrupt:
            typed = history.buffer()
            print()
            if lines or typed:
                return None
            raise _Exit from None
        history.added(line)
        if block:
            if line.rstrip().endswith('"""'):
                lines.append(line.rstrip()[:-3])
                return "\n".join(lines).strip("\n")
            lines.append(line)
            continue
        if not lines and line.lstrip().startswith('"""'):
            rest = line.lstrip()[3:]
            if rest.rstrip().endswith('"""') and rest.strip():
                return rest.rstrip()[:-3]
            block = True
            if rest:
                lines.append(rest)
            prompt = CONTINUATION
            continue
        if line.endswith("\\"):
            lines.append(line[:-1])
            prompt = CONTINUATION
            continue
        lines.append(line)
        return "\n".join(lines)
