"""The ``rainlocal`` command: one place where domain errors become one-line messages and exit codes.

Exit codes: 0 success, 1 runtime error, 2 usage error, 130 interrupted.
"""

from __future__ import annotations

import os
import sys

import click

from rainlocal import __version__
from rainlocal.errors import EXIT_INTERRUPTED, EXIT_USAGE, RainlocalError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rainlocal")
def cli() -> None:
    """Safer answers from a frozen local GGUF model through RAIN inference-time search."""


def _register() -> None:
    # Each command group lives in its own module; importing them here keeps start-up cheap
    # (llama.cpp is imported only when a command actually loads a model).
    # An import that fails is a packaging bug: it must fail loudly, never drop a command silently.
    from rainlocal.cli import bench, calibrate, chat, eval, history, models, run, serve

    cli.add_command(models.models_group)
    cli.add_command(run.run_command)
    for module in (chat, history, eval, bench, serve, calibrate):
        cli.add_command(module.command)


def error(message: str) -> None:
    """Print one error line on stderr (the only way errors reach the user)."""
    click.echo(f"rainlocal: error: {message}", err=True)


def main(argv: list[str] | None = None) -> None:
    _register()
    try:
        cli.main(args=argv, prog_name="rainlocal", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.Abort:
        # click raises Abort on Ctrl-C inside prompts and on EOF in confirmation prompts.
        click.echo("", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code if e.exit_code is not None else EXIT_USAGE)
    except RainlocalError as e:
        error(str(e))
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        # The reader of our stdout went away (e.g. `| head`): not an error worth a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(1)
    else:
        sys.exit(0)
