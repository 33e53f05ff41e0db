"""The project's few domain exceptions.

Every layer raises these; only the CLI turns them into a one-line message and an exit code
(see ``rainlocal.cli.main``), so no other module prints or exits.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class RainlocalError(Exception):
    """A failure the user can understand from one line; exit code 1 unless a subclass says otherwise."""

    exit_code = EXIT_RUNTIME


class UsageError(RainlocalError):
    """The command line or its input was wrong (exit code 2)."""

    exit_code = EXIT_USAGE


class ConfigError(RainlocalError):
    """A user configuration file (config.toml, models.toml, an objective) is broken."""


class ModelError(RainlocalError):
    """A model file is missing, not GGUF, truncated, or cannot be loaded."""


class UnknownModelError(UsageError):
    """An alias that is neither in the catalogue nor an existing path."""


class DownloadError(RainlocalError):
    """A download failed or its checksum did not match; nothing was left in place."""


class ContextOverflowError(RainlocalError):
    """A prompt (or prompt plus answer) does not fit in the context window."""


class EngineError(RainlocalError):
    """llama.cpp refused an operation (decode failure, no KV slot, unsupported model)."""


class PromptTooLongError(UsageError):
    """The prompt alone does not fit the context window (exit code 2; the message gives both sizes)."""


class ServerUnreachableError(EngineError):
    """``--engine URL`` names no reachable, ready llama.cpp server (checked before any work starts)."""


class ServerGoneError(EngineError):
    """The inference server of ``--engine URL`` went away or stopped answering mid-answer."""


class JudgeError(RainlocalError):
    """The model cannot serve as a judge for this objective (e.g. no single-token option letter)."""


class EvalJudgeError(RainlocalError):
    """The evaluation judge failed (HTTP error, unreadable reply, model unusable as a judge)."""


class Interrupted(RainlocalError):
    """The user asked to stop a long run (an evaluation); what was finished is saved (exit code 130)."""

    exit_code = EXIT_INTERRUPTED
