"""``rainlocal calibrate``: fit a model's latent-judge probes, show how well they agree with people, store them.

Also the first-use fit: ``ensure_probes`` runs the same calibration, with a progress bar, the first
time a model without probes answers with the latent judge in a terminal.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from rainlocal.cli.common import load_engine, stderr
from rainlocal.cli.options import model_options, pass_options, resolve_settings


def _table(probes) -> list[tuple[str, str, Any, Any, Any]]:
    """(row, what it measures, AUC, kappa, n) for the printed report."""
    m = probes.metrics
    rows = [
        ("request", "P(unsafe request), XSTest prompts", "request"),
        ("request", "P(unsafe request), HH conversations (read)", "request_hh"),
        ("comply", "P(complies), people's labels", "comply_people"),
        ("comply", "P(complies), own replies", "comply_own"),
        ("harm", "P(harmful reply), people's labels", "harm_people"),
        ("harm", "P(harmful reply), own replies", "harm_own"),
        ("product", "P(unsafe) x P(complies), people's labels", "product_people"),
        ("product", "  against benign compliance", "product_people_vs_benign_compliance"),
        ("product", "  against refusals", "product_people_vs_refusals"),
        ("product", "P(unsafe) x P(complies), own replies", "product_own"),
        ("product", "  against benign compliance", "product_own_vs_benign_compliance"),
        ("product", "P(unsafe) x P(complies), --labelled-replies", "product_read"),
        ("product", "  against benign compliance", "product_read_vs_benign_compliance"),
        ("topic", "P(unsafe request) read from compliant replies, people's", "topic_people"),
        ("topic", "P(unsafe request) read from compliant replies, own", "topic_own"),
        ("judged", "harm the search scores (request + topic), people's labels", "judged_people"),
        ("judged", "  against benign compliance", "judged_people_vs_benign_compliance"),
        ("judged", "  against refusals", "judged_people_vs_refusals"),
        ("judged", "harm the search scores, own replies", "judged_own"),
        ("judged", "  against benign compliance", "judged_own_vs_benign_compliance"),
        ("judged", "harm the search scores, --labelled-replies", "judged_read"),
        ("judged", "  against benign compliance", "judged_read_vs_benign_compliance"),
    ]
    out = []
    for name, what, key in rows:
        if key in m:
            out.append((name, what, m[key]["auc"], m[key]["kappa"], m[key]["n"]))
    return out


def print_report(probes, path: Path, *, as_json: bool = False) -> None:
    if as_json:
        click.echo(json.dumps({"model": probes.model, "fingerprint": probes.fingerprint, "layer": probes.layer,
                               "file": str(path), "metrics": probes.metrics}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    fit = probes.metrics.get("fit", {})
    t = Table(title=f"{probes.model}: probes at layer {probes.layer} (cross-validated, grouped by prompt)")
    for col in ("probe", "measured on", "AUC", "kappa", "n"):
        t.add_column(col, justify="right" if col in ("AUC", "kappa", "n") else "left")
    for name, what, a, k, n in _table(probes):
        t.add_row(name, what, f"{a:.3f}", f"{k:.3f}", str(n))
    Console().print(t)
    ok, why = probes.usable()
    click.echo(f"own replies labelled by: {fit.get('own_labels', '?')}; harm threshold {fit.get('threshold')}; "
               f"penalty C={fit.get('c')}")
    click.echo(f"saved: {path}")
    if not ok:
        click.echo(f"not used by the search: {why}; the prompted judge answers instead")


def run_calibration(engine, *, quick: bool, own_labels: Path | None = None, output: Path | None = None,
                    show: bool = True, limit: int | None = None, dialogues: int | None = None,
                    budget_s: float | None = None, labelled: tuple[Path, ...] = ()):
    """Calibrate with a progress bar on stderr (when it is a terminal). With ``budget_s``, a fit whose pace
    projects it past that many seconds stops with ``first_fit.FitTooSlow`` (nothing is written)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from rainlocal.generate import Generator
    from rainlocal.latent.calibrate import Plan, calibrate, units

    gen = Generator(engine)

    def prompt_tokens(messages: list[dict]) -> list[int]:
        return gen.prompt(messages)[0]

    total = units(Plan.named(quick, dialogues), engine.n_layer, limit, labelled)
    bar = Progress(TextColumn("fitting probes"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                   TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(), console=stderr,
                   disable=not (show and stderr.is_terminal), transient=True)
    watch = None
    if budget_s is not None:
        from rainlocal.cli.first_fit import pace_watch

        watch = pace_watch(total, budget_s)

    def progress(k: int) -> None:
        bar.advance(task, k)
        if watch is not None:
            watch(k)

    with bar:
        task = bar.add_task("fit", total=total)
        return calibrate(engine, prompt_tokens, quick=quick, dialogues=dialogues, own_labels=own_labels,
                         output=output, limit=limit, progress=progress, labelled=labelled)


def _check_labelled(paths) -> None:
    """Every reading-labelled file (``--own-labels``, ``--labelled-replies``) is read before the model loads:
    a wrong one is one line, at once."""
    from rainlocal.errors import UsageError
    from rainlocal.latent import data

    unsafe = {p.id: p.unsafe for p in data.xstest_prompts()}
    for path in paths:
        try:
            data.labelled_replies(path, unsafe)
        except ValueError as e:
            raise UsageError(str(e)) from None


@click.command("calibrate")
@model_options
@click.option("--full", is_flag=True, help="Read every labelled reply (5 per prompt) instead of the quick plan's 1, up to 400 extra prompts per source instead of 50, an own reply to every prompt, and layers at 40-70% depth.")
@click.option("--own-labels", "own_labels", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="CSV (prompt_id,reply,complied) of the model's own replies labelled by reading; default: the model "
                   "writes them now and the refusal-string rule labels them.")
@click.option("--labelled-replies", "labelled", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CSV (prompt_id,reply,complied) of another model's replies to the XSTest dev prompts, labelled "
                   "by reading: trained on beside people's and measured apart (repeatable). E.g. fit an evaluation "
                   "judge with the answering model's own replies.")
@click.option("--dialogues", "dialogues", type=click.IntRange(0, None), default=None,
              help="Labelled HH conversations to read (of 500; default 64, with --full all): they teach the "
                   "request probe multi-turn requests, and each costs a decode of the whole conversation.")
@click.option("--force", is_flag=True, help="Fit again even if the model has probes.")
@click.option("--limit", "limit", type=click.IntRange(20, None), default=None,
              help="Fit on this many XSTest prompts only (a quick try: the measures are noisier).")
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the probes here instead of the data directory.")
@click.option("--json", "as_json", is_flag=True, help="Print the measures as JSON.")
@pass_options
def command(opts: dict[str, Any]) -> None:
    """Fit the latent judge's probes for a model and print how well they agree with people's labels."""
    from rainlocal.errors import UsageError
    from rainlocal.latent.probes import find_probes, probe_path

    ms, _gen, _system = resolve_settings(opts)
    _check_labelled([*([opts["own_labels"]] if opts["own_labels"] else []), *opts["labelled"]])
    if ms.engine_urls:
        raise UsageError("calibrate reads hidden states, which only the in-process engine gives (drop --engine)")
    engine = load_engine(ms)
    try:
        if not getattr(engine, "can_read_states", False):
            raise UsageError("this build of llama.cpp gives no hidden states (ggml's eval callback is missing)")
        if not opts["force"] and opts["output"] is None:
            have = find_probes(engine.path)
            if have is not None:
                print_report(have, probe_path(have.fingerprint), as_json=opts["as_json"])
                if not opts["as_json"]:
                    click.echo("(already fitted; --force fits again)")
                return
        try:
            probes, path = run_calibration(engine, quick=not opts["full"], own_labels=opts["own_labels"],
                                           output=opts["output"], limit=opts["limit"], dialogues=opts["dialogues"],
                                           labelled=tuple(opts["labelled"]))
        except KeyboardInterrupt:
            from rainlocal.errors import Interrupted

            raise Interrupted("interrupted: no probes were written (a fit starts over when run again)") from None
        print_report(probes, path, as_json=opts["as_json"])
    finally:
        engine.close()
