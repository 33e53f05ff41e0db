"""``rainlocal eval SUITE``: the paper's experiments on a local model, vanilla against RAIN.

For each prompt of the suite it answers with vanilla sampling and with RAIN (same model, seed and
stopping rule; optionally best-of-N by self-evaluation), grades every answer with an evaluation
judge (a local GGUF model or an OpenAI-compatible endpoint) and appends one JSON line per finished
unit to ``OUTPUT/results.jsonl``; a rerun resumes. At the end it writes ``report.md``,
``summary.json`` and ``report.png`` and prints the Markdown report on stdout.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from rainlocal.cli.common import Interrupts, load_engine, stderr
from rainlocal.cli.options import generation_options, model_options, pass_options, resolve_settings
from rainlocal.errors import EXIT_INTERRUPTED, UsageError
from rainlocal.evals.suites import SUITE_PROFILE, SUITES, default_data_path, load_suite, resolve_data_path


def parse_best_of(value: str | None) -> tuple[bool, int | None]:
    """``--best-of``: None (off), "auto" (match RAIN's work) or a positive integer."""
    if value is None:
        return False, None
    v = value.strip().lower()
    if v == "auto":
        return True, None
    try:
        n = int(v)
    except ValueError:
        raise UsageError(f"--best-of must be a positive integer or 'auto', got {value!r}") from None
    if n < 1:
        raise UsageError("--best-of must be at least 1")
    return True, n


def _normalise(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


@click.command("eval")
@click.argument("suite", type=click.Choice(SUITES))
@model_options
@generation_options
@click.option("--data", "data", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Data file in the suite's format (default: the dev split in ../shared/data/).")
@click.option("--attack-suffix", "attack_suffix", default=None, help="advbench: append this adversarial suffix to every request.")
@click.option("--limit", type=int, default=None, help="Evaluate only the first N prompts (default: all).")
@click.option("-o", "--output", "output_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output directory (default ./rainlocal-eval-SUITE); a rerun into it resumes.")
@click.option("--judge-model", "judge_model", default=None,
              help="Evaluation judge: a GGUF path or alias (default: the answering model); with --judge-url, the remote model name (default gpt-4).")
@click.option("--judge-url", "judge_url", default=None, help="Evaluation judge: an OpenAI-compatible endpoint, e.g. https://api.openai.com/v1.")
@click.option("--judge-api-key-env", "judge_api_key_env", default=None, metavar="VAR",
              help="Environment variable holding the --judge-url API key (sent as a Bearer token).")
@click.option("--judge-method", "judge_method", type=click.Choice(["probs", "generate"]), default="probs",
              help="Local judge: read the A/B letter probabilities (default) or parse a generated verdict.")
@click.option("--best-of", "best_of", default=None, metavar="N|auto",
              help="Also run best-of-N by self-evaluation: N samples, or 'auto' to match RAIN's measured compute per prompt.")
@click.option("--best-of-max", "best_of_max", type=int, default=32, help="Upper bound on N for --best-of auto (default 32).")
@click.option("--check-judge", "check_judge", type=int, default=25,
              help="Measure the evaluation judge on N labelled pairs first (default 25; 0 skips).")
@click.option("--check-data", "check_data", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="AdvBench-format CSV for the judge check of the hh suite (default: the advbench dev split).")
@click.option("--report-only", is_flag=True,
              help="Write the report from the results already in --output (nothing is run); e.g. while a run goes on.")
@pass_options
def command(opts: dict[str, Any]) -> None:
    """Evaluate vanilla vs RAIN on SUITE (hh, advbench, truthfulqa) and write a report."""
    from rainlocal.catalog import resolve_model
    from rainlocal.evals.judges import HTTPJudge, LocalJudge, check_cases
    from rainlocal.evals.report import summarize, write_report
    from rainlocal.evals.runner import EvalPlan, EvalRunner, Interrupted, read_results, select_records
    from rainlocal.generate import Generator

    suite = opts["suite"]
    if opts.get("vanilla"):
        raise UsageError("eval always runs both vanilla and RAIN; drop --vanilla")
    if opts["limit"] is not None and opts["limit"] < 1:
        raise UsageError("--limit must be at least 1")
    if opts["check_judge"] < 0:
        raise UsageError("--check-judge must be 0 or more")
    if opts["best_of_max"] < 1:
        raise UsageError("--best-of-max must be at least 1")
    if opts["judge_api_key_env"] and not opts["judge_url"]:
        raise UsageError("--judge-api-key-env needs --judge-url")
    with_bon, bon_n = parse_best_of(opts["best_of"])
    if opts.get("profile") is None:
        opts["profile"] = SUITE_PROFILE[suite]
    ms, gen, system = resolve_settings(opts)

    data_path = resolve_data_path(suite, opts["data"])
    all_items = load_suite(suite, data_path, attack_suffix=opts["attack_suffix"])
    items = all_items[: opts["limit"]] if opts["limit"] else all_items

    # The labelled data for the judge check.
    check_desc, checks = "", []
    if opts["check_judge"]:
        if suite == "hh":
            try:
                cpath = resolve_data_path("advbench", opts["check_data"]) if opts["check_data"] else default_data_path("advbench")
                check_desc, checks = check_cases("hh", load_suite("advbench", cpath), opts["check_judge"])
                check_desc += f" (from {cpath.name})"
            except UsageError as e:
                if opts["check_data"]:
                    raise
                stderr.print(f"judge check skipped: {e}", markup=False, highlight=False, soft_wrap=True)
        else:
            if opts["check_data"]:
                raise UsageError("--check-data is for the hh suite; advbench and truthfulqa check on their own data")
            check_desc, checks = check_cases(suite, all_items, opts["check_judge"])
            check_desc += f" (from {data_path.name})"

    # Identities (resolved without loading anything) for the run's fingerprint.
    model_path = resolve_model(ms.model)
    self_eval_path = resolve_model(ms.judge) if ms.judge else None
    if opts["judge_url"]:
        http_judge = HTTPJudge(opts["judge_url"], model=opts["judge_model"] or "gpt-4",
                               api_key_env=opts["judge_api_key_env"])
        judge_desc, judge_method = http_judge.description, "generate"
        judge_path = None
    else:
        http_judge = None
        judge_path = resolve_model(opts["judge_model"]) if opts["judge_model"] else model_path
        judge_desc = f"local GGUF {judge_path.name}" + ("" if opts["judge_model"] else " (the answering model itself)")
        judge_method = opts["judge_method"]

    output = opts["output_dir"] or Path(f"rainlocal-eval-{suite}")
    fingerprint = _normalise({
        "suite": suite, "data": str(data_path), "attack_suffix": opts["attack_suffix"],
        "model": model_path.name, "system": system, "chat_format": ms.chat_format, "ctx_size": ms.ctx_size,
        "sampling": asdict(gen.sampling), "rain": asdict(gen.rain), "profile": gen.profile,
        "objective": gen.objective, "self_eval_judge": self_eval_path.name if self_eval_path else None,
        "judge": judge_desc, "judge_method": judge_method,
    })
    from rainlocal.evals.runner import check_run_info

    if opts["report_only"] and not (output / "run.json").exists():
        raise UsageError(f"--report-only: no evaluation in {output} (no run.json)")
    check_run_info(output, fingerprint)
    systems = ("vanilla", "rain") + (("best-of-n",) if with_bon else ())
    best_desc = (f"N = {bon_n} samples" if bon_n else f"N chosen per prompt to match RAIN's engine work (at most {opts['best_of_max']})")
    if with_bon:
        for r in read_results(output / "results.jsonl", repair=False):
            if r.get("system") == "best-of-n" and r.get("best_of") != (bon_n or "auto"):
                raise UsageError(f"{output} holds best-of-N results made with --best-of {r.get('best_of')}; "
                                 "use another --output")
    plan = EvalPlan(suite=suite, items=items, systems=systems, checks=checks, best_of=bon_n,
                    best_of_max=opts["best_of_max"], system_prompt=system)

    engines: dict[str, Any] = {}

    def engine_for(path: Path):
        key = str(path)
        if key not in engines:
            engines[key] = load_engine(ms, key)
        return engines[key]

    def make_generator() -> Generator:
        engine = engine_for(model_path)
        judge = engine_for(self_eval_path) if self_eval_path else None
        return Generator(engine, ms.chat_format, judge_engine=judge)

    def make_judge():
        if http_judge is not None:
            return http_judge
        # A context of its own (even for the answering model's file: the weights are memory-mapped
        # and shared) so that judging never evicts the answering engine's cached branches, which
        # would change RAIN's measured work.
        from rainlocal.engine.llama import LlamaEngine

        judge_engine = LlamaEngine(judge_path, n_ctx=ms.ctx_size, n_gpu_layers=ms.gpu_layers,
                                   n_threads=ms.threads, n_seq=4, pool_factor=1.0, verbose=ms.verbose)
        return LocalJudge(judge_engine, method=judge_method,
                          chat_format=ms.chat_format if judge_path == model_path else None)

    interrupted = False
    with Interrupts() as interrupts:
        runner = EvalRunner(plan, output, gen, generator_factory=make_generator, judge_factory=make_judge,
                            console=stderr, should_stop=lambda: interrupts.requested)
        try:
            if not opts["report_only"]:
                runner.run()
        except Interrupted:
            interrupted = True

    answers, check_recs = select_records(read_results(output / "results.jsonl", repair=False), plan)
    meta = {
        "model": model_path.name, "seed": gen.sampling.seed, "max_tokens": gen.sampling.max_tokens,
        "temp": gen.sampling.temp, "top_p": gen.sampling.top_p, "top_k": gen.sampling.top_k,
        "profile": gen.profile, "objective": gen.objective, "score": gen.rain.score,
        "T": gen.rain.T, "min_searches": gen.rain.min_searches, "T_m": gen.rain.T_m, "V": gen.rain.V,
        "self_eval_judge": self_eval_path.name if self_eval_path else None,
        "data": str(data_path), "attack_suffix": opts["attack_suffix"],
        "judge": judge_desc, "judge_method": judge_method,
        "best_of_desc": best_desc, "check_description": check_desc,
    }
    summary = summarize(suite, answers, check_recs, meta)
    md, png = write_report(output, summary)
    if png is None:
        stderr.print("chart skipped: matplotlib is not installed (pip install 'rainlocal[eval]')",
                     markup=False, highlight=False, soft_wrap=True)
    stderr.print(f"report: {md}" + (f", {png}" if png else ""), markup=False, highlight=False, soft_wrap=True)
    if interrupted:
        stderr.print(f"(interrupted) {len(answers)} answers saved in {output / 'results.jsonl'}; "
                     "rerun the same command to resume", markup=False, highlight=False, soft_wrap=True)
        sys.exit(EXIT_INTERRUPTED)
    click.echo(md.read_text(encoding="utf-8"), nl=False)

