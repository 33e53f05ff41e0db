"""The HTTP side: Starlette routes for the OpenAI endpoints, the API key, and errors in OpenAI's shape.

Handlers only parse, validate and relay: the answer is made on the worker's engine thread, so the
event loop stays free for ``/health``, ``/v1/models`` and other clients while a RAIN search runs.
Streams send committed text as it is committed (server-sent events, ``data: [DONE]`` at the end).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from rainlocal.errors import PromptTooLongError, RainlocalError
from rainlocal.search.events import Commit, Done
from rainlocal.server.protocol import APIError, ChatRequest, CompletionRequest, parse
from rainlocal.server.shapes import Chunks, chat_completion, text_completion
from rainlocal.server.translate import Answer, Defaults, chat_answer, completion_answer
from rainlocal.server.worker import Failed, QueueFull, Ticket, Worker


class ServedModel:
    """The one model this server answers with: its id, and the names a request may call it by."""

    def __init__(self, model_id: str, aliases: set[str], created: int):
        self.id = model_id
        self.names = {model_id, *aliases}
        self.created = created

    def check(self, name: str | None) -> None:
        if name is not None and name not in self.names:
            raise APIError(404, f"unknown model {name!r}: this server answers with {self.id!r}",
                           param="model", code="model_not_found")

    def card(self) -> dict[str, Any]:
        return {"id": self.id, "object": "model", "created": self.created, "owned_by": "rainlocal"}


def create_app(worker: Worker, defaults: Defaults, model: ServedModel, api_key: str | None) -> Starlette:
    def authorize(request: Request) -> None:
        if not api_key:
            return
        header = request.headers.get("authorization", "")
        given = header[7:].strip() if header.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(given.encode(), api_key.encode()):
            raise APIError(401, "missing or wrong API key: send it as the header 'Authorization: Bearer KEY'",
                           code="invalid_api_key")

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "model": model.id, "queue": worker.status()})

    async def models(request: Request) -> JSONResponse:
        authorize(request)
        return JSONResponse({"object": "list", "data": [model.card()]})

    async def one_model(request: Request) -> JSONResponse:
        authorize(request)
        model.check(request.path_params["name"])
        return JSONResponse(model.card())

    async def chat(request: Request):
        return await answer(request, chat=True)

    async def completions(request: Request):
        return await answer(request, chat=False)

    async def answer(request: Request, *, chat: bool):
        authorize(request)
        req = parse(ChatRequest if chat else CompletionRequest, await request.body())
        model.check(req.model)
        plan = chat_answer(req, defaults) if chat else completion_answer(req, defaults)
        await run_in_threadpool(check_prompt, plan)
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        ticket = Ticket(id=rid, answer=plan, loop=asyncio.get_running_loop())
        try:
            worker.submit(ticket)
        except QueueFull:
            raise APIError(429, f"the server is busy: one answer is running and {worker.max_queue} are waiting "
                           "(--max-queue); retry later", code="queue_full", headers={"Retry-After": "1"}) from None
        created = int(time.time())
        if req.stream:
            chunks = Chunks(rid, created, model.id, chat=chat, include_usage=req.include_usage)
            return EventSourceResponse(stream(ticket, chunks), ping=15, sep="\n")
        done = await collect(request, ticket)
        shape = chat_completion if chat else text_completion
        return JSONResponse(shape(rid, created, model.id, done, plan.gen))

    def check_prompt(plan: Answer) -> None:
        """A prompt the context cannot hold, or one the chat template refuses, is the request's fault:
        a 400 now, before it waits in the queue (tokenizing needs only the vocabulary)."""
        try:
            worker.generator.prompt(plan.messages, raw=plan.raw)
        except PromptTooLongError as e:
            raise APIError(400, str(e).replace("raise -c/--ctx-size", "start the server with a larger -c"),
                           param="messages" if plan.raw is None else "prompt",
                           code="context_length_exceeded") from None
        except RainlocalError as e:
            raise APIError(400, str(e)) from None

    async def collect(request: Request, ticket: Ticket) -> Done:
        """Wait for the whole answer; a client that hangs up meanwhile cancels it."""
        watcher = asyncio.create_task(cancel_on_disconnect(request, ticket))
        done = False
        try:
            while True:
                item = await ticket.events.get()
                if isinstance(item, Failed):
                    done = True
                    raise APIError(item.status, item.message)
                if isinstance(item, Done):
                    done = True
                    return item
        finally:
            watcher.cancel()
            if not done:
                ticket.cancel.set()  # this handler was cancelled (server shutting down)

    async def stream(ticket: Ticket, chunks: Chunks) -> AsyncIterator[dict[str, str]]:
        """Server-sent events of one answer. sse-starlette cancels this generator when the client
        disconnects; ``finally`` then stops the search."""
        finished = False
        try:
            first = chunks.start()
            if first is not None:
                yield {"data": json.dumps(first)}
            while True:
                item = await ticket.events.get()
                if isinstance(item, Commit):
                    yield {"data": json.dumps(chunks.text(item.text), ensure_ascii=False)}
                elif isinstance(item, Failed):
                    yield {"data": json.dumps(APIError(item.status, item.message).body())}
                    break
                elif isinstance(item, Done):
                    yield {"data": json.dumps(chunks.finish(item, ticket.answer.gen), ensure_ascii=False)}
                    last = chunks.usage(item)
                    if last is not None:
                        yield {"data": json.dumps(last)}
                    break
            yield {"data": "[DONE]"}
            finished = True
        finally:
            if not finished:
                ticket.cancel.set()

    @asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        await run_in_threadpool(worker.close)

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{name:path}", one_model, methods=["GET"]),
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
    ]
    handlers = {APIError: api_error, HTTPException: http_error, Exception: internal_error}
    return Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)


async def cancel_on_disconnect(request: Request, ticket: Ticket) -> None:
    """Returns when the client hangs up (the body is already read, so the next message is the
    disconnect) and sets the answer's cancel flag."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            ticket.cancel.set()
            return


async def api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own refusals (no such route, wrong method) in OpenAI's shape."""
    assert isinstance(exc, HTTPException)
    message = {404: f"no such endpoint: {request.method} {request.url.path}",
               405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
    return JSONResponse(APIError(exc.status_code, message).body(), status_code=exc.status_code, headers=exc.headers)


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    """A bug: one line for the client (the traceback goes to the server's log only)."""
    return JSONResponse(APIError(500, f"internal error: {type(exc).__name__}: {exc}").body(), status_code=500)
