"""``rainlocal run``: one answer (or a batch of answers) on stdout, nothing else.

Stdin and the argument combine (stdin text first, then the argument). RAIN by default,
``--vanilla`` for plain sampling. Batch mode (``--input/--output``) appends and flushes one JSON
line per finished answer and skips ids already answered, so an interrupted batch loses nothing and
repeats nothing.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from rainlocal.cli.common import Interrupts, load_generator, load_model, prepare_judge, stderr
from rainlocal.cli.options import generation_options, model_options, pass_options, resolve_settings
from rainlocal.engine.formats import build_messages
from rainlocal.errors import EXIT_INTERRUPTED, UsageError
from rainlocal.generate import Generator, GenerationSettings
from rainlocal.jsonl import append_records, conversation, read_jsonl, read_log
from rainlocal.ui.stream import log_event, stream_answer


@click.command("run")
@click.argument("prompt", required=False)
@model_options
@generation_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: reply, model, settings, usage, timings, stats.")
@click.option("--input", "input_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help='Batch mode: a JSONL file of {"id", "prompt"} or {"id", "messages"} lines.')
@click.option("--output", "output_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Batch mode: the JSONL file answers are appended to (ids already there are skipped).")
@pass_options
def run_command(opts: dict[str, Any]) -> None:
    """Answer PROMPT (and/or stdin) with the RAIN search; only the answer goes to stdout."""
    ms, gen, system = resolve_settings(opts)
    if opts["input_path"] or opts["output_path"]:
        if not (opts["input_path"] and opts["output_path"]):
            raise UsageError("batch mode needs both --input and --output")
        if opts["prompt"]:
            raise UsageError("give either a PROMPT or --input, not both")
        jobs = _read_batch(opts["input_path"])
        done_ids = _answered_ids(opts["output_path"])
        todo = [j for j in jobs if j["id"] not in done_ids]
        if not todo:
            stderr.print(f"all {len(jobs)} prompts already answered in {opts['output_path']}")
            return
        generator = load_generator(ms)
        prepare_judge(generator, gen)
        _run_batch(generator, gen, system, todo, opts["output_path"], len(jobs), ms)
        return

    prompt = _read_prompt(opts["prompt"])
    model = load_model(ms)
    generator = model.generator
    messages = build_messages(prompt, system)
    generator.prompt(messages)  # a prompt longer than the context fails here, before anything else is said
    prepare_judge(generator, gen)
    with Interrupts() as interrupts:
        log = sys.stderr if ms.verbose else None
        response = model.answer(messages, settings=gen, should_stop=lambda: interrupts.requested,
                                on_event=lambda ev: log_event(ev, log))
        for chunk in response:
            if not opts["as_json"]:
                sys.stdout.write(chunk)
                sys.stdout.flush()
        done = response.done
        if opts["as_json"]:
            record = {"prompt": prompt, **_record(done, generator, gen, ms)}
            click.echo(json.dumps(record, ensure_ascii=False))
        else:
            sys.stdout.write("\n")
            sys.stdout.flush()
        if done.stop_reason == "interrupted":
            stderr.print("(interrupted)", markup=False)
            sys.exit(EXIT_INTERRUPTED)


def _read_prompt(argument: str | None) -> str:
    parts: list[str] = []
    if not sys.stdin.isatty():
        data = sys.stdin.read()
        if data.strip():
            parts.append(data.strip("\n"))
    if argument and argument.strip():
        parts.append(argument)
    if not parts:
        raise UsageError("no prompt: give one as an argument or on stdin")
    return "\n\n".join(parts)


def _record(done, generator: Generator, gen: GenerationSettings, ms) -> dict[str, Any]:
    from rainlocal.catalog.resolve import model_label

    stats = dict(done.stats)
    usage = stats.pop("usage", {})
    timings = stats.pop("timings", {})
    return {
        "reply": done.text,
        "stop_reason": done.stop_reason,
        "model": model_label(ms.model, generator.engine.path),
        "judge_model": model_label(ms.judge, generator.judge_engine.path) if generator.judge_engine is not generator.engine else None,
        "settings": {**gen.as_dict(), "ctx_size": generator.engine.n_ctx, "chat_format": generator.formatter.name},
        "usage": usage,
        "timings": timings,
        "stats": stats,
    }


def _read_batch(path: Path) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    seen: set[str] = set()
    for lineno, obj in read_jsonl(path):
        where = f"{path}:{lineno}"
        if not isinstance(obj, dict) or "id" not in obj:
            raise UsageError(f'{where}: each line needs "id" and "prompt" or "messages"')
        key = str(obj["id"])
        if key in seen:
            raise UsageError(f"{where}: duplicate id {key!r}")
        seen.add(key)
        messages = conversation(obj, where)  # validates "prompt" or "messages"
        jobs.append({"id": key, "prompt": obj.get("prompt"), "system": obj.get("system"),
                     "messages": messages if "messages" in obj else None})
    if not jobs:
        raise UsageError(f"{path} holds no prompts")
    return jobs


def _answered_ids(path: Path) -> set[str]:
    """Ids already in the output; a torn last line (process killed mid-write) is cut off."""
    return {str(r["id"]) for r in read_log(path) if isinstance(r, dict) and "id" in r}


def _fresh_start(generator: Generator, gen: GenerationSettings) -> None:
    """Every batch answer starts from cleared caches (as eval's do), so a resumed batch gives the answers
    an uninterrupted one would: a cached prefix decoded in other batches differs by rounding noise,
    which changes sampled tokens."""
    if gen.mode == "rain":
        from rainlocal.evals.bestofn import fresh_start

        fresh_start(generator, gen)
    else:
        generator.engine.reset()


def _run_batch(generator: Generator, gen: GenerationSettings, system, todo, out_path: Path, total: int, ms) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    out_path.parent.mkdir(parents=True, exist_ok=True)
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=stderr, disable=not stderr.is_terminal,
    )
    answered = total - len(todo)
    with Interrupts() as interrupts, progress, open(out_path, "a", encoding="utf-8") as out:
        task = progress.add_task("answering", total=total, completed=answered)
        for job in todo:
            messages = job["messages"] or build_messages(job["prompt"], job["system"] or system)
            if job["messages"] and system and not any(m["role"] == "system" for m in messages):
                messages = [{"role": "system", "content": system}, *messages]
            _fresh_start(generator, gen)
            t0 = time.perf_counter()
            done = stream_answer(generator.stream(messages, gen, should_stop=lambda: interrupts.requested), None,
                                 sys.stderr if ms.verbose else None)
            if done.stop_reason == "interrupted":
                stderr.print(f"(interrupted) {answered} of {total} answered; rerun the same command to resume")
                sys.exit(EXIT_INTERRUPTED)
            record = {"id": job["id"], **_record(done, generator, gen, ms)}
            record["timings"]["wall_s"] = round(time.perf_counter() - t0, 4)
            append_records(out, [record])
            answered += 1
            progress.advance(task)
    if not stderr.is_terminal:
        stderr.print(f"answered {len(todo)} prompts ({total} in {out_path})")
