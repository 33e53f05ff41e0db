"""``rainlocal chat``: a terminal conversation that shows the RAIN search at work.

In a terminal: the reply streams as RAIN commits token sets under a live status line, the finished
reply is rendered as Markdown, slash commands change the conversation and the settings, input
history persists across sessions. With stdin not a terminal, each input line is one user turn and
only the answers go to stdout. Either way every turn is saved (``rainlocal.conversations``) before
the next prompt, so ``--continue`` and ``rainlocal history`` see it.

Modules: ``command`` (the click command and resuming a conversation's settings), ``session`` (the
turn loop, terminal and piped), ``slash`` (the slash commands), ``reader`` (the terminal input reader).
"""

from rainlocal.cli.chat.command import command, resumed_settings
from rainlocal.cli.chat.slash import set_value

__all__ = ["command", "resumed_settings", "set_value"]
