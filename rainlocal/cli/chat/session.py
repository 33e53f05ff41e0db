"""One chat session: the conversation, the current settings and the last reply; each turn streams the
reply (terminal: a live view; piped: plain text on stdout) and is saved before the next prompt."""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Any

from rainlocal import paths
from rainlocal.cli.chat.reader import Exit, History, read_message
from rainlocal.cli.chat.slash import SlashCommands
from rainlocal.cli.common import Interrupts, stderr
from rainlocal.conversations import Conversation
from rainlocal.engine.formats import build_messages
from rainlocal.errors import EXIT_INTERRUPTED, RainlocalError, UsageError
from rainlocal.generate import GenerationSettings, Generator
from rainlocal.search.events import AnswerStream, Done
from rainlocal.ui.stream import log_event

class ChatSession(SlashCommands):
    """One chat: the conversation, the current settings, the last reply; terminal or piped."""

    def __init__(self, generator: Generator, gen: GenerationSettings, conv: Conversation, *,
                 verbose: bool = False, show_search: bool = False, model_spec: str | None = None):
        self.generator = generator
        self.model_spec = model_spec  # the -m the user gave (names ollama:/hf: models as given)
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
        from rainlocal.catalog.resolve import model_label

        return model_label(self.model_spec, self.generator.engine.path)

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
            log = sys.stderr if self.verbose else None
            with Interrupts() as interrupts:
                stream = AnswerStream(self.generator.stream(messages, gen, should_stop=lambda: interrupts.requested),
                                      on_event=lambda ev: log_event(ev, log))
                try:
                    for chunk in stream:
                        sys.stdout.write(chunk)
                        sys.stdout.flush()
                except KeyboardInterrupt:
                    with interrupts.shielded():
                        self._save(user, stream.partial(), self.settings_dict(gen), False)
                    raise
                done = stream.finish()
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
        history = History(paths.data_dir() / "chat_history")
        view.banner(self.model_name, self._mode_label(), self.conv.id, resumed)
        if resumed:
            n = self.conv.turns
            view.info(f"{n} earlier turn{'s' if n != 1 else ''}; the last one:")
            view.recap(self.conv.records)
        commands = self._commands()
        while True:
            try:
                text = read_message(history)
            except Exit:
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
                except Exit:
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
        log = sys.stderr if self.verbose else None
        for ev in events:
            log_event(ev, log)
            yield ev

    def _mode_label(self) -> str:
        if self.gen.mode == "vanilla":
            return f"vanilla sampling (temp {self.gen.sampling.temp:g})"
        if self.gen.rain.loop == "draft":
            return f"RAIN, {self.gen.profile} profile (objective {self.gen.objective}; drafts checked, searched where rejected)"
        return f"RAIN search, {self.gen.profile} profile (objective {self.gen.objective}, T={self.gen.rain.T})"
