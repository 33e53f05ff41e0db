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

from rainlocal.cli.common import Interrupts, load_generator, stderr
from rainlocal.cli.options import generation_options, model_options, pass_options, resolve_settings
from rainlocal.errors import UsageError


@click.command("bench")
@model_options
@generation_options
@click.option("-p", "--prompts", "n_prompts", type=int, default=3, help="How many prompts (the first N of the data; default 3).")
@click.option("--data", "data", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Prompts: HH JSONL, or an AdvBench or XSTest CSV (default: the HH dev split in ../shared/data/).")
@click.option("--label", "label", type=click.Choice(["safe", "unsafe"]), default=None,
              help="XSTest files: only prompts with this label (a sample spread over the file's prompt types).")
@click.option("--strategies", "strategies", default="vanilla,fast,paper", show_default=True,
              help="Comma-separated strategies in run order: vanilla, a RAIN profile (fast, paper, harmless, "
                   "adversarial, truthful; 'rain' = --profile), best-of-n (needs --best-of).")
@click.option("--best-of", "best_of", default=None, metavar="N|auto",
              help="Also time best-of-N by self-evaluation: N samples, or 'auto' to match RAIN's work per prompt.")
@click.option("--best-of-max", "best_of_max", type=int, default=32, help="Upper bound on N for --best-of auto (default 32).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (for tracking over time).")
@pass_options
def command(opts: dict[str, Any]) -> None:
    """Measure RAIN's cost against KV-cached vanilla decoding on the same prompts."""
    from dataclasses import replace

    from rainlocal.cli.eval import parse_best_of
    from rainlocal.cli.options import rain_settings
    from rainlocal.evals.bench import render_text, run_bench
    from rainlocal.evals.suites import load_prompts, resolve_data_path, spread_over_types
    from rainlocal.search.settings import PROFILE_OBJECTIVE, PROFILES

    if opts.get("vanilla"):
        raise UsageError("bench runs the strategies of --strategies; drop --vanilla")
    if opts["n_prompts"] < 1:
        raise UsageError("-p/--prompts must be at least 1")
    if opts["best_of_max"] < 1:
        raise UsageError("--best-of-max must be at least 1")
    best_of = parse_best_of(opts["best_of"])
    ms, gen, system = resolve_settings(opts)
    names = [n.strip() for n in str(opts["strategies"]).split(",") if n.strip()]
    if not names or len(set(names)) != len(names):
        raise UsageError("--strategies needs distinct names, e.g. vanilla,fast,paper")
    plan = {}
    for name in names:
        if name == "vanilla":
            plan[name] = replace(gen, mode="vanilla")
        elif name == "rain":
            plan[name] = replace(gen, mode="rain")
        elif name in PROFILES:
            objective = opts.get("objective") or PROFILE_OBJECTIVE.get(name, gen.objective)
            plan[name] = replace(gen, mode="rain", profile=name, objective=objective, rain=rain_settings(opts, name))
        elif name == "best-of-n":
            if best_of[0] is False:
                raise UsageError("the best-of-n strategy needs --best-of N|auto")
        else:
            raise UsageError(f"unknown strategy {name!r} (known: vanilla, rain, {', '.join(PROFILES)}, best-of-n)")
    if best_of[0] and "best-of-n" not in names:
        names.append("best-of-n")
    data_path = resolve_data_path("hh", opts["data"])
    items = spread_over_types(load_prompts(data_path, label=opts["label"]), opts["n_prompts"])
    prompts = []
    for it in items:
        msgs = [dict(m) for m in it.messages]
        if system and not any(m["role"] == "system" for m in msgs):
            msgs.insert(0, {"role": "system", "content": system})
        prompts.append((it.id, msgs))

    generator = load_generator(ms)
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
                     "ctx_size": engine.n_ctx, "threads": engine.n_threads,
                     "best_of": opts["best_of"], "best_of_max": opts["best_of_max"], "label": opts["label"],
                     "strategies": {n: (g.as_dict().get("rain") and {"profile": g.profile, **g.as_dict()["rain"]}) or "vanilla"
                                    for n, g in plan.items()}},
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "processor": platform.processor() or platform.machine()},
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "total_s": round(time.perf_counter() - t0, 3),
        **result,
    }
    if opts["as_json"]:
        click.echo(json.dumps(result, ensure_ascii=False))
    else:
        profiles = ", ".join(f"{n}: T={g.rain.T} score {g.rain.score}" for n, g in plan.items() if g.mode == "rain")
        click.echo(f"rainlocal bench: {engine.path.name}, {len(prompts)} prompts, max tokens "
                   f"{gen.sampling.max_tokens}, seed {gen.sampling.seed}; {profiles}\n")
        click.echo(render_text(result), nl=False)
