"""``rainlocal serve``: the OpenAI API on a local port, answering with RAIN (or plain decoding per request).

The model is loaded and the settings resolved exactly as ``rainlocal run`` does (``load_generator``,
``resolve_settings``); the command line gives every request's defaults. The HTTP stack is an optional
extra, so this module imports it only when the command runs.
"""

from __future__ import annotations

import copy
import socket
from pathlib import Path
from typing import Any

import click

from rainlocal.cli.common import load_generator, stderr
from rainlocal.cli.options import generation_options, model_options, pass_options, resolve_settings
from rainlocal.errors import RainlocalError, UsageError


@click.command("serve")
@model_options
@generation_options
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 for every interface; set --api-key then).")
@click.option("--port", type=int, default=8080, show_default=True, help="Port to listen on.")
@click.option("--api-key", "api_key", envvar="RAINLOCAL_API_KEY", default=None,
              help="Require 'Authorization: Bearer KEY' on /v1 requests (or set RAINLOCAL_API_KEY).")
@click.option("--max-queue", "max_queue", type=int, default=8, show_default=True,
              help="Answers that may wait while one runs; more get HTTP 429.")
@pass_options
def command(opts: dict[str, Any]) -> None:
    """Serve the OpenAI API (/v1/chat/completions, /v1/completions, /v1/models, /health) with RAIN."""
    from rainlocal.server import INSTALL_HINT, missing_extra

    if missing_extra():
        raise RainlocalError(INSTALL_HINT)
    if opts["max_queue"] < 0:
        raise UsageError("--max-queue must be 0 or more")
    if not 0 <= opts["port"] <= 65535:
        raise UsageError("--port must be between 0 and 65535")

    import uvicorn

    from rainlocal.judge.objectives import builtin_names
    from rainlocal.server.app import create_app
    from rainlocal.server.translate import Defaults
    from rainlocal.server.worker import Worker

    ms, gen, system = resolve_settings(opts)
    objectives = tuple(dict.fromkeys([*builtin_names(), gen.objective]))
    sock = _listen(opts["host"], opts["port"])  # a taken port fails before the model loads
    generator = load_generator(ms)
    generator.objective(gen.objective)  # a bad --objective fails now, not at the first request
    model = _served_model(ms.model, generator.engine)
    worker = Worker(generator, opts["max_queue"])
    worker.prepare(gen)
    app = create_app(worker, Defaults(gen=gen, opts=opts, system=system, objectives=objectives), model,
                     opts["api_key"])
    host, port = sock.getsockname()[:2]
    stderr.print(f"rainlocal: serving {model.id} ({gen.mode}{', profile ' + gen.profile if gen.mode == 'rain' else ''}) "
                 f"on http://{_url_host(host)}:{port}/v1", markup=False, highlight=False, soft_wrap=True)
    if not opts["api_key"] and not _is_loopback(host):
        stderr.print(f"rainlocal: note: listening on {host} without --api-key: anyone who can reach this port "
                     "can use the model", markup=False, highlight=False, soft_wrap=True)
    config = uvicorn.Config(app, log_config=_log_config(), log_level="debug" if ms.verbose else "info",
                            timeout_graceful_shutdown=3)
    uvicorn.Server(config).run(sockets=[sock])


def _listen(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise UsageError(f"--host {host}: {e.strerror}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise RainlocalError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.set_inheritable(True)
    return sock


def _served_model(arg: str | None, engine) -> Any:
    """The model's id is the alias it was started with (``-m smollm2-135m``), the catalogue default's
    alias, or the file's name without ``.gguf``; requests may use any of these and the file name."""
    from rainlocal.catalog import load_catalog
    from rainlocal.catalog.resolve import _looks_like_path
    from rainlocal.server.app import ServedModel

    path = Path(getattr(engine, "path", "model"))
    names = {path.name, path.stem}
    if arg is None:
        model_id = load_catalog().default
    elif _looks_like_path(arg):
        model_id = path.stem
    else:
        model_id = arg
    created = int(path.stat().st_mtime) if path.is_file() else 0
    return ServedModel(model_id, names, created)


def _is_loopback(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _log_config() -> dict[str, Any]:
    """uvicorn's logging, with the access log on stderr too (stdout stays empty, as for every command)."""
    from uvicorn.config import LOGGING_CONFIG

    cfg = copy.deepcopy(LOGGING_CONFIG)
    cfg["handlers"]["access"]["stream"] = "ext://sys.stderr"
    return cfg
