"""``rainlocal bench``: speed of KV-cached vanilla, RAIN (and best-of-N) side by side, in one run.

The method is described in ``rainlocal.evals.bench`` and in the README ("Benchmarks"). A table goes
to stdout, or one JSON object with ``--json`` (for tracking over time); progress goes to stderr.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import click

from rainlocal.cli.common import Interrupts, load_generator, note_engine_limits, stderr
from rainlocal.cli.options import generation_options, model_options, pass_options, resolve_settings
from rainlocal.cli.strategies import build_strategies, strategy_options
from rainlocal.errors import UsageError


@click.command("bench")
@model_options
@generation_options
@strategy_options("vanilla,fast,paper")
@click.option("-p", "--prompts", "n_prompts", type=int, default=3, help="How many prompts (the first N of the data; default 3).")
@click.option("--data", "data", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Prompts: HH JSONL, or an AdvBench or XSTest CSV (default: the HH dev split in ../shared/data/).")
@click.option("--label", "label", type=click.Choice(["safe", "unsafe"]), default=None,
              help="XSTest files: only prompts with this label (a sample spread over the file's prompt types).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (for tracking over time).")
@pass_options
def command(opts: dict[str, Any]) -> None:
    """Measure RAIN's cost against KV-cached vanilla decoding on the same prompts."""
    from rainlocal.evals.bench import render_text, run_bench
    from rainlocal.evals.suites import load_prompts, resolve_data_path, spread_over_types

    if opts.get("vanilla"):
        raise UsageError("bench runs the strategies of --strategies; drop --vanilla")
    if opts["n_prompts"] < 1:
        raise UsageError("-p/--prompts must be at least 1")
    ms, gen, system = resolve_settings(opts)
    plan, best_of = build_strategies(opts, gen)
    names = list(plan)
    data_path = resolve_data_path("hh", opts["data"])
    items = spread_over_types(load_prompts(data_path, label=opts["label"]), opts["n_prompts"])
    prompts = []
    for it in items:
        msgs = [dict(m) for m in it.messages]
        if system and not any(m["role"] == "system" for m in msgs):
            msgs.insert(0, {"role": "system", "content": system})
        prompts.append((it.id, msgs))

    generator = load_generator(ms)
    if any(g.kind in ("rain", "best-of-n") for g in plan.values()):
        note_engine_limits(generator.engine)
    engine, judge = generator.engine, (generator.judge_engine if ms.judge else None)
    total = len(prompts) * len(names)
    count = [0]

    def on_answer(strategy: str, pid: str, wall: float) -> None:
        count[0] += 1
        stderr.print(f"[{count[0]}/{total}] {strategy} {pid}: {wall:.1f} s", markup=False, highlight=False, soft_wrap=True)

    t0 = time.perf_counter()
    with Interrupts() as interrupts:
        result = run_bench(generator, prompts, gen, strategies_settings=plan, best_of=best_of, best_of_max=opts["best_of_max"],
                           on_answer=on_answer, should_stop=lambda: interrupts.requested)
    result = {
        "model": engine.path.name,
        "self_eval_model": judge.path.name if judge is not None else None,
        "data": str(data_path),
        "prompts": [pid for pid, _ in prompts],
        "settings": {**{k: v for k, v in gen.as_dict().items() if k not in ("mode", "rain", "profile")},
                     "ctx_size": engine.n_ctx, "threads": engine.n_threads, "engine": getattr(engine, "url", "in-process"),
                     "best_of": opts["best_of"], "best_of_max": opts["best_of_max"], "label": opts["label"],
                     "strategies": {n: ({"profile": st.settings.profile, **st.settings.as_dict()["rain"]}
                                        if st.is_rain else st.kind) for n, st in plan.items()},
                     "safety_prompt": plan["system"].safety_prompt if "system" in plan else None},
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "processor": platform.processor() or platform.machine()},
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "total_s": round(time.perf_counter() - t0, 3),
        **result,
    }
    if opts["as_json"]:
        click.echo(json.dumps(result, ensure_ascii=False))
    else:
        profiles = ", ".join(f"{n}: T={st.settings.rain.T} score {st.settings.rain.score}"
                             for n, st in plan.items() if st.is_rain)
        click.echo(f"rainlocal bench: {engine.path.name}, {len(prompts)} prompts, max tokens "
                   f"{gen.sampling.max_tokens}, seed {gen.sampling.seed}; {profiles}\n")
        click.echo(render_text(result), nl=False)
