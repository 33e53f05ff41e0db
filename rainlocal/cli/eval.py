"""``rainlocal eval SUITE``: the paper's experiments on a local model, and the baselines users would
pick instead.

For each prompt of the suite it answers with every strategy of ``--strategies`` (vanilla, a safety
system prompt, self-check, RAIN in any profile, best-of-N; same model, seed and stopping rule),
grades every answer with an evaluation judge (a local GGUF model or an OpenAI-compatible endpoint)
and appends one JSON line per finished unit to ``OUTPUT/results.jsonl``; a rerun resumes. The judge
itself is first measured on labelled data. At the end it writes ``report.md``, ``summary.json`` and
``report.svg`` and prints the Markdown report on stdout. ``--jobs N`` answers with N processes.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from rainlocal.cli.common import Interrupts, load_engine, note_engine_limits, stderr
from rainlocal.cli.options import generation_options, model_options, pass_options, resolve_settings
from rainlocal.cli.strategies import build_strategies, parse_best_of, strategy_options
from rainlocal.errors import EXIT_INTERRUPTED, Interrupted, UsageError
from rainlocal.evals.checks import DEFAULT_HUMAN_CHECK
from rainlocal.evals.suites import SUITE_PROFILE, SUITES
from rainlocal.generate import GenerationSettings

__all__ = ["command", "parse_best_of"]

#: The criterion the harm checks ask, per suite (None: no harm check for the suite).
HARM_CRITERION = {"hh": "harmless", "advbench": "resisted", "xstest": "harmless", "truthfulqa": None}


def _normalise(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def _say(text: str) -> None:
    stderr.print(text, markup=False, highlight=False, soft_wrap=True)


def _parse_worker(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        i, n = (int(x) for x in value.split("/"))
    except ValueError:
        raise UsageError(f"--worker needs I/N, got {value!r}") from None
    if not 0 <= i < n:
        raise UsageError(f"--worker needs 0 <= I < N, got {value!r}")
    return i, n


def _checks(opts: dict[str, Any], suite: str, all_items, data_path: Path):
    """(description, cases) of the judge checks: written pairs, then replies labelled by people."""
    from rainlocal.evals.checks import check_cases, human_label_cases
    from rainlocal.evals.suites import default_data_path, load_suite, resolve_data_path

    descs, cases = [], []
    if opts["check_judge"]:
        if suite in ("hh", "xstest"):
            try:
                cpath = resolve_data_path("advbench", opts["check_data"]) if opts["check_data"] else default_data_path("advbench")
                d, c = check_cases(suite, load_suite("advbench", cpath), opts["check_judge"])
                descs.append(f"{d} (from {cpath.name})")
                cases += c
            except UsageError as e:
                if opts["check_data"]:
                    raise
                _say(f"judge check on written pairs skipped: {e}")
        else:
            if opts["check_data"]:
                raise UsageError("--check-data is for the hh and xstest suites; advbench and truthfulqa check on their own data")
            d, c = check_cases(suite, all_items, opts["check_judge"])
            descs.append(f"{d} (from {data_path.name})")
            cases += c
    criterion = HARM_CRITERION[suite]
    if opts["check_human"] and criterion:
        try:
            hpath = (resolve_data_path("xstest", opts["human_data"]) if opts["human_data"]
                     else default_data_path("xstest").with_name("xstest_completions_dev.csv"))
            if not hpath.is_file():
                raise UsageError(f"{hpath} not found; give the labelled replies with --human-data FILE")
            d, c = human_label_cases(hpath, opts["check_human"], harm_criterion=criterion)
            descs.append(d)
            cases += c
        except UsageError as e:
            if opts["human_data"]:
                raise
            _say(f"judge check on human labels skipped: {e}")
    return "; ".join(descs), cases


def _previous_judge_method(output: Path) -> str | None:
    """The evaluation judge's method of the run in ``output`` (None: no run there yet): resuming an
    evaluation keeps its judge unless ``--judge-method`` says otherwise."""
    try:
        return json.loads((output / "run.json").read_text(encoding="utf-8")).get("settings", {}).get("judge_method")
    except (OSError, ValueError, AttributeError):
        return None


def _probes_meta(probes) -> dict[str, Any]:
    """What a report says about the latent judge's probes: layer, folds, cross-validated agreement."""
    from rainlocal.latent.features import WINDOW
    from rainlocal.latent.fit import THRESHOLD

    keep = ("request", "request_hh", "comply", "product_people", "judged_people", "three_way_people")
    return {"model": probes.model, "layer": probes.layer, "folds": len(probes.fold_ids), "window": WINDOW,
            "threshold": THRESHOLD, "cv": {k: probes.metrics[k] for k in keep if k in probes.metrics}}


def _self_eval_strategy(strategies: dict[str, Any]) -> str | None:
    """Whose self-evaluation the report checks on the labelled cases: the first RAIN strategy's judge (the
    one its answers were searched with), else the run's settings when self-check or best-of-N judge
    answers with them, else nobody's (no strategy judges itself: no self-evaluation checks)."""
    for name, st in strategies.items():
        if st.is_rain:
            return name
    if any(st.kind in ("self-check", "best-of-n") for st in strategies.values()):
        return ""
    return None


def _rain_meta(settings: GenerationSettings) -> dict[str, Any]:
    """The RAIN constants a report states for one set of settings."""
    r = settings.rain
    return {"profile": settings.profile, "objective": settings.objective, "score": r.score, "T": r.T,
            "min_searches": r.min_searches, "T_m": r.T_m, "V": r.V}

@click.command("eval")
@click.argument("suite", type=click.Choice(SUITES))
@model_options
@generation_options
@strategy_options("vanilla,rain")
@click.option("--data", "data", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Data file in the suite's format (default: the dev split in ../shared/data/).")
@click.option("--attack-suffix", "attack_suffix", default=None, help="advbench: append this adversarial suffix to every request.")
@click.option("--limit", type=int, default=None,
              help="Evaluate a fixed seeded sample of N prompts covering every prompt type and label (default: all).")
@click.option("--samples", type=int, default=1, show_default=True,
              help="Answer each prompt N times with each strategy (seeds SEED..SEED+N-1) and compare strategies prompt "
                   "by prompt over the samples: measures the strategy, not one seed's draws. A rerun with a larger N "
                   "adds samples to the run.")
@click.option("-o", "--output", "output_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output directory (default ./rainlocal-eval-SUITE); a rerun into it resumes.")
@click.option("--judge-model", "judge_model", default=None,
              help="Evaluation judge: a GGUF path or alias (default: qwen2.5-coder-1.5b for the latent judge, the "
                   "answering model for a prompted one); with --judge-url, the remote model name (default gpt-4).")
@click.option("--judge-url", "judge_url", default=None, help="Evaluation judge: an OpenAI-compatible endpoint, e.g. https://api.openai.com/v1.")
@click.option("--judge-api-key-env", "judge_api_key_env", default=None, metavar="VAR",
              help="Environment variable holding the --judge-url API key (sent as a Bearer token).")
@click.option("--judge-method", "judge_method", type=click.Choice(["latent", "probs", "generate"]), default=None,
              help="Local judge: latent (the judge model's probes read its hidden states; the default when its "
                   "probes are usable), probs (letter probabilities of a prompted judge; the default otherwise) "
                   "or generate (a generated verdict).")
@click.option("--check-judge", "check_judge", type=int, default=25,
              help="Measure the evaluation judge on N written pairs first (default 25; 0 skips).")
@click.option("--check-data", "check_data", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="AdvBench-format CSV for the written pairs of the hh and xstest suites (default: the advbench dev split).")
@click.option("--check-human", "check_human", type=int, default=DEFAULT_HUMAN_CHECK, show_default=True,
              help="Measure the judge on a seeded sample of N human-labelled harm cases and N refusal cases (0 skips).")
@click.option("--human-data", "human_data", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="XSTest completions CSV with human labels (default: ../shared/data/xstest_completions_dev.csv).")
@click.option("-j", "--jobs", "jobs", type=int, default=1,
              help="Answer with N worker processes (each its own model, the threads split between them).")
@click.option("--worker", "worker", default=None, hidden=True)
@click.option("--rejudge", is_flag=True,
              help="Grade the answers already in --output again with this command's evaluation judge (the answers "
                   "are kept; every other setting must be the run's own), then go on as usual.")
@click.option("--recheck", is_flag=True,
              help="Read every check case on this machine, even those whose results ship with the package for "
                   "this judge (by default a sample is read here and compared with them first).")
@click.option("--report-only", is_flag=True,
              help="Write the report from the results already in --output (nothing is run); e.g. while a run goes on.")
@pass_options
def command(opts: dict[str, Any]) -> None:
    """Evaluate strategies (vanilla, system, self-check, RAIN, best-of-N) on SUITE and write a report."""
    from rainlocal.catalog import resolve_model
    from rainlocal.evals.checks import CheckCache
    from rainlocal.evals.criteria import question_fingerprint
    from rainlocal.evals.judges import HTTPJudge
    from rainlocal.evals.report import summarize, write_report
    from rainlocal.evals.runner import EvalPlan, EvalRunner, check_run_info, read_results, select_records
    from rainlocal.evals.suites import load_suite, resolve_data_path, sample_items
    from rainlocal.gguf_info import file_identity
    from rainlocal.paths import cache_dir

    suite = opts["suite"]
    if opts.get("vanilla"):
        raise UsageError("eval runs the strategies of --strategies; drop --vanilla")
    for key, flag, low in (("limit", "--limit", 1), ("check_judge", "--check-judge", 0),
                           ("check_human", "--check-human", 0), ("jobs", "--jobs", 1), ("samples", "--samples", 1)):
        if opts[key] is not None and opts[key] < low:
            raise UsageError(f"{flag} must be at least {low}")
    if opts["judge_api_key_env"] and not opts["judge_url"]:
        raise UsageError("--judge-api-key-env needs --judge-url")
    worker = _parse_worker(opts["worker"])
    if worker is not None:  # a worker of --jobs ends when its parent eval is killed, even with SIGKILL
        from rainlocal.cli.eval_jobs import stop_with_parent

        stop_with_parent()
    if opts.get("profile") is None:
        opts["profile"] = SUITE_PROFILE[suite]
    ms, gen, system = resolve_settings(opts)
    strategies, (_, bon_n) = build_strategies(opts, gen)

    data_path = resolve_data_path(suite, opts["data"])
    all_items = load_suite(suite, data_path, attack_suffix=opts["attack_suffix"])
    items = sample_items(all_items, opts["limit"]) if opts["limit"] else all_items
    check_desc, checks = _checks(opts, suite, all_items, data_path)

    # Identities (resolved without loading anything) for the run's fingerprint and the check caches.
    if ms.engine_urls:
        # The answering model is the server's: connect now (a wrong URL fails before any work).
        servers = [load_engine(ms, url) for url in ms.engine_urls]
        server = servers[0]
        note_engine_limits(server)
        model_path = server.path
        if any(s.path.name != model_path.name for s in servers):
            raise UsageError("the --engine servers hold different models: "
                             + ", ".join(f"{s.url}: {s.path.name}" for s in servers))
    else:
        server, servers = None, []
        model_path = resolve_model(ms.model)
    self_eval_path = resolve_model(ms.judge) if ms.judge else None
    output = opts["output_dir"] or Path(f"rainlocal-eval-{suite}")
    choice = None
    if opts["judge_url"]:
        if opts["judge_method"] == "latent":
            raise UsageError("--judge-method latent reads a local model's hidden states: drop --judge-url")
        http_judge = HTTPJudge(opts["judge_url"], model=opts["judge_model"] or "gpt-4",
                               api_key_env=opts["judge_api_key_env"])
        judge_desc, judge_method, judge_path, judge_id = http_judge.description, "generate", None, http_judge.description
    else:
        from rainlocal.evals.latent_judge import choose_judge

        http_judge = None
        choice = choose_judge(opts["judge_method"], opts["judge_model"], model_path, resolve=resolve_model,
                              local=len(servers) <= 1,
                              previous=None if opts["rejudge"] else _previous_judge_method(output),
                              searching=[self_eval_path] if self_eval_path else [])
        if choice.note:
            _say(choice.note)
        judge_path, judge_desc, judge_method = choice.path, choice.desc, choice.method
        judge_id = file_identity(judge_path)
    fingerprint = _normalise({
        "suite": suite, "data": str(data_path), "attack_suffix": opts["attack_suffix"],
        "model": model_path.name, "system": system, "chat_format": ms.chat_format, "ctx_size": ms.ctx_size,
        "sampling": asdict(gen.sampling), "rain": asdict(gen.rain), "profile": gen.profile,
        "objective": gen.objective, "self_eval_judge": self_eval_path.name if self_eval_path else None,
        "judge": judge_desc, "judge_method": judge_method, "judge_probes": choice.probes_id if choice else None,
    })
    if opts["report_only"] and not (output / "run.json").exists():
        raise UsageError(f"--report-only: no evaluation in {output} (no run.json)")
    rejudging = opts["rejudge"] and worker is None and not opts["report_only"]
    if rejudging:
        from rainlocal.evals.rejudge import switch_run_judge

        old_settings = switch_run_judge(output, fingerprint, write=False)  # run.json changes once it is done
    else:
        check_run_info(output, fingerprint)
    best_desc = (f"N = {bon_n} samples" if bon_n else f"N chosen per prompt to match the engine work of the RAIN "
                 f"strategy before it (at most {opts['best_of_max']})")
    if "best-of-n" in strategies:
        for r in read_results(output / "results.jsonl", repair=False):
            if r.get("system") == "best-of-n" and r.get("best_of") != (bon_n or "auto"):
                raise UsageError(f"{output} holds best-of-N results made with --best-of {r.get('best_of')}; "
                                 "use another --output")
    if "system" in strategies:  # the safety prompt decides only the system strategy's answers
        for r in read_results(output / "results.jsonl", repair=False):
            if r.get("kind") == "answer" and r.get("system") == "system" \
                    and r.get("safety_prompt") != strategies["system"].safety_prompt:
                raise UsageError(f"{output} holds system-prompt answers made with another --safety-prompt; "
                                 "use another --output")
    self_eval = _self_eval_strategy(strategies)
    plan = EvalPlan(suite=suite, items=items, strategies=strategies, checks=checks, best_of=bon_n,
                    best_of_max=opts["best_of_max"], system_prompt=system, self_eval=self_eval,
                    samples=opts["samples"])
    eval_settings = plan.self_eval_settings(gen)

    engines: dict[str, Any] = {}

    def engine_for(path: Path):
        if server is not None and path == model_path:
            return server
        if str(path) not in engines:
            engines[str(path)] = load_engine(ms, str(path))
        return engines[str(path)]

    def make_generator():
        from rainlocal.generate import Generator

        judge = engine_for(self_eval_path) if self_eval_path else None
        return Generator(engine_for(model_path), ms.chat_format, judge_engine=judge)

    def make_judge():
        if http_judge is not None:
            return http_judge
        # A context of its own (even for the answering model's file: the weights are memory-mapped
        # and shared) so that judging never evicts the answering engine's cached branches, which
        # would change RAIN's measured work.
        from rainlocal.engine.llama import LlamaEngine
        from rainlocal.evals.judges import LocalJudge

        if server is not None and judge_path == model_path and judge_method != "latent":
            # The answering model is on the server: the evaluation judge shares it (and its prompt cache).
            return LocalJudge(server, method=judge_method, chat_format=ms.chat_format)
        # Slots and KV room to hold each question's conversation part (3 for hh) beside the 7 prompts
        # about one reply (LocalJudge keeps the former across the replies to one conversation).
        judge_engine = LlamaEngine(judge_path, n_ctx=ms.ctx_size, n_gpu_layers=ms.gpu_layers,
                                   n_threads=ms.threads, n_seq=16, pool_factor=2.0, verbose=ms.verbose)
        chat_format = ms.chat_format if judge_path == model_path else None
        if judge_method == "latent":
            from rainlocal.evals.latent_judge import LatentJudge

            # Criteria the probes cannot read (helpful, truthful, ...) go to the prompted judge on the same model.
            return LatentJudge(judge_engine, choice.probes,
                               fallback=LocalJudge(judge_engine, method="probs", chat_format=chat_format))
        return LocalJudge(judge_engine, method=judge_method, chat_format=chat_format)

    made: list[Any] = []

    def shared_judge():  # one evaluation judge per process (the rejudge's is the runner's)
        if not made:
            made.append(make_judge())
        return made[0]

    caches = cache_dir() / "eval-checks"
    judge_ident = {"judge": judge_id, "method": judge_method, "questions": question_fingerprint(),
                   "chat_format": ms.chat_format if judge_path == model_path else None}
    if judge_method == "latent":
        from rainlocal.latent.features import WINDOW
        from rainlocal.latent.fit import THRESHOLD

        judge_ident.update(probes=choice.probes_id, window=WINDOW, threshold=THRESHOLD)
    from rainlocal.gguf_info import content_fingerprint

    # The same identities with the model named by its content: results shipped for the catalogue's files
    # (``evals.shipped``) are found by them, then verified on a sample read here before any is used.
    portable = http_judge is None
    judge_cache = CheckCache(caches, judge_ident, portable={**judge_ident, "judge": content_fingerprint(judge_path)}
                             if portable and judge_path is not None else None)
    from rainlocal.judge.objectives import load_objective

    self_eval_ident = {"self_eval": file_identity(self_eval_path or model_path),
                       "objective": repr(load_objective(eval_settings.objective)), "score": eval_settings.rain.score,
                       "chat_format": ms.chat_format}
    if eval_settings.rain.score == "latent" and server is None:
        from rainlocal.evals.latent_judge import probes_file

        self_eval_ident["probes"] = probes_file(self_eval_path or model_path)[1]
    self_eval_cache = CheckCache(caches, self_eval_ident, portable=(
        {**self_eval_ident, "self_eval": content_fingerprint(self_eval_path or model_path)}
        if portable and server is None else None))

    interrupted = False
    if rejudging:
        interrupted = _rejudge(output, plan, shared_judge, old_settings)
        if not interrupted:
            switch_run_judge(output, fingerprint, write=True)
    if interrupted:
        pass
    elif not opts["report_only"] and server is not None and len(servers) > 1:
        if self_eval_path or judge_path != model_path:
            raise UsageError("with several --engine servers the judges are the servers' model "
                             "(or --judge-url): drop --judge / --judge-model")
        with Interrupts() as interrupts:
            try:
                _spread(plan, output, gen, servers, ms.chat_format, judge_method, http_judge, interrupts)
            except Interrupted:
                interrupted = True
    elif opts["jobs"] > 1 and worker is None and not opts["report_only"]:
        from rainlocal.cli.eval_jobs import run_workers

        interrupted = run_workers(opts["jobs"], ms.threads, plan, output, stderr)
    else:
        with Interrupts() as interrupts:
            runner = EvalRunner(plan, output, gen, generator_factory=make_generator, judge_factory=shared_judge,
                                console=stderr, should_stop=lambda: interrupts.requested,
                                judge_cache=judge_cache, self_eval_cache=self_eval_cache, worker=worker or (0, 1),
                                use_shipped=not opts["recheck"])
            try:
                if not opts["report_only"]:
                    runner.run()
            except Interrupted:
                interrupted = True
    if worker is not None:  # a worker of --jobs: the parent writes the report
        if interrupted:
            sys.exit(EXIT_INTERRUPTED)
        return

    answers, check_recs = select_records(read_results(output / "results.jsonl", repair=False), plan)
    meta = {
        "model": model_path.name, "seed": gen.sampling.seed, "max_tokens": gen.sampling.max_tokens,
        "temp": gen.sampling.temp, "top_p": gen.sampling.top_p, "top_k": gen.sampling.top_k,
        **_rain_meta(gen),
        "self_eval_judge": self_eval_path.name if self_eval_path else None,
        "data": str(data_path), "attack_suffix": opts["attack_suffix"], "limit": opts["limit"], "samples": opts["samples"],
        "judge": judge_desc, "judge_method": judge_method, "strategies": list(strategies),
        "judge_probes": _probes_meta(choice.probes) if choice and choice.probes is not None else None,
        "safety_prompt": strategies["system"].safety_prompt if "system" in strategies else None,
        "best_of_desc": best_desc, "check_description": check_desc,
        "rain_strategies": {n: _rain_meta(st.settings) for n, st in strategies.items() if st.is_rain},
        "self_eval_strategy": self_eval,
    }
    summary = summarize(suite, answers, check_recs, meta, order=list(strategies))
    md, chart = write_report(output, summary)
    _say(f"report: {md}" + (f", {chart}" if chart else ""))
    if interrupted:
        _say(f"(interrupted) {len(answers)} answers saved in {output / 'results.jsonl'}; rerun the same command to resume")
        sys.exit(EXIT_INTERRUPTED)
    click.echo(md.read_text(encoding="utf-8"), nl=False)



def _rejudge(output: Path, plan, make_judge, old_settings: dict[str, Any]) -> bool:
    """``--rejudge``: the plan's answers in ``output`` graded again by the judge ``make_judge`` builds
    (``evals.rejudge``); True when interrupted (nothing was changed then)."""
    from rainlocal.evals.rejudge import keepable, rejudge
    from rainlocal.evals.runner import RESULTS, messages_for, select_records

    items = {it.id: it for it in plan.items}
    judge = make_judge()
    with Interrupts() as interrupts:
        try:
            done = rejudge(output / RESULTS, plan.suite, lambda recs: select_records(recs, plan)[0], judge,
                           lambda r: (messages_for(items[r["id"]], plan.system_prompt), items[r["id"]].extra),
                           keep=keepable(old_settings, judge), console=stderr,
                           should_stop=lambda: interrupts.requested)
        except Interrupted:
            _say("(interrupted) the rejudge changed nothing; rerun the same command to do it again")
            return True
    _say(f"rejudged {done['answers']} answers" + (f", kept the {', '.join(done['kept'])} verdicts" if done["kept"] else "")
         + f"; {done['dropped_checks']} checks of the old judge dropped")
    return False


def _spread(plan, output: Path, gen, servers: list, chat_format, judge_method, http_judge, interrupts) -> None:
    """An evaluation over several inference servers: one runner per server, each on every n-th group of
    units (as ``--jobs`` workers split them), in threads writing one results file under a lock. A failure
    on one server stops the others after their current unit; what was finished is kept (a rerun resumes)."""
    import threading

    from rainlocal.evals.judges import LocalJudge
    from rainlocal.evals.runner import EvalRunner, Interrupted
    from rainlocal.generate import Generator

    lock = threading.Lock()
    failed: list[BaseException] = []

    def stop() -> bool:
        return interrupts.requested or bool(failed)

    def work(i: int, srv) -> None:
        runner = EvalRunner(plan, output, gen, generator_factory=lambda: Generator(srv, chat_format),
                            judge_factory=lambda: http_judge or LocalJudge(srv, method=judge_method, chat_format=chat_format),
                            console=stderr, should_stop=stop, worker=(i, len(servers)), write_lock=lock)
        try:
            runner.run()
        except Interrupted:
            pass
        except BaseException as e:  # noqa: BLE001 - handed to the main thread, which reports it
            failed.append(e)

    threads = [threading.Thread(target=work, args=(i, s), daemon=True) for i, s in enumerate(servers)]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(timeout=0.5)
    if failed:
        raise failed[0]
    if interrupts.requested:
        raise Interrupted("interrupted")
