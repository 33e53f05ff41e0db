"""One calibration of a model's probes, end to end: labelled sets -> states -> cross-validation -> file.

Used by ``rainlocal calibrate`` and by the first latent answer of a model without probes. The work is
counted in units of what it costs (``fit.UNIT_COST``) so a progress bar, and the first-use fit's
projection, can show it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from rainlocal.latent import data
from rainlocal.latent.data import Reply
from rainlocal.latent.features import WINDOW
from rainlocal.latent.fit import DEPTHS, PENALTIES, UNIT_COST, candidate_layers, choose, fit_final, read_tables
from rainlocal.latent.probes import ProbeSet, probe_path


@dataclass
class Plan:
    """How much of the labelled data a calibration reads (``quick``: the first-use budget).

    The quick plan is sized to fit a 0.5B model in about three minutes on two cores (measured 2026-12-06:
    of the 5 minutes the earlier quick plan took, half went to writing a 48-token own reply to every one
    of the 338 prompts, and most of the rest to reading states as deep as 70% of the layers, for 125
    long conversations among others). Every shipped probe chose 50-60% depth. The topic probe's openings
    brought it to 3 min 4 s, so the own replies were cut to 24 tokens: 2 min 50 s, the fit's figures the
    same within noise."""

    people_per_prompt: int  # human-labelled replies read per prompt (of 5)
    extra: int  # extra prompts per source of EXTRA_SOURCES (training only)
    own: bool  # the model's own replies
    dialogues: int = 0  # labelled HH conversations (of 500; long, so the quick plan reads a share)
    own_every: int = 1  # an own reply to every k-th XSTest prompt
    own_tokens: int = WINDOW  # the longest own reply written
    depths: tuple[float, ...] = DEPTHS  # layer depths tried
    drafts_every: int = 1  # the compliant openings of every k-th XSTest prompt and extra prompt read

    @classmethod
    def named(cls, quick: bool, dialogues: int | None = None) -> "Plan":
        plan = (cls(people_per_prompt=1, extra=50, own=True, dialogues=64, own_every=2, own_tokens=24,
                    depths=(0.5, 0.6), drafts_every=12) if quick else cls(5, 400, True, 500))
        if dialogues is not None:
            plan.dialogues = max(0, int(dialogues))
        return plan

    def layers(self, n_layer: int) -> list[int]:
        return candidate_layers(n_layer, self.depths)

    def drafts(self, prompts: list, extras: list) -> list[Reply]:
        """The compliant openings read for the topic probe: those of every ``drafts_every``-th XSTest prompt
        and extra prompt read."""
        k = max(self.drafts_every, 1)
        labels = {p.id: p.unsafe for p in list(prompts[::k]) + list(extras[::k])}
        return data.compliant_drafts(labels)

    def own_prompts(self, prompts: list) -> list:
        """The prompts the model answers itself: every ``own_every``-th, so both labels and every type stay."""
        return prompts[:: self.own_every] if self.own else []


def _people_replies(per_prompt: int) -> list[Reply]:
    """Up to ``per_prompt`` human-labelled replies per prompt, every harmful compliance kept (they are
    rare: 101 of 1,690), the rest drawn at random with a fixed seed."""
    rows = data.xstest_replies()
    if per_prompt >= 5:
        return rows
    by_prompt: dict[str, list[Reply]] = {}
    for r in rows:
        by_prompt.setdefault(r.prompt_id, []).append(r)
    rng = random.Random(0)
    out: list[Reply] = []
    for pid in sorted(by_prompt):
        group = by_prompt[pid]
        harmful = [r for r in group if r.harmful]
        rest = [r for r in group if not r.harmful]
        rng.shuffle(rest)
        out.extend((harmful + rest)[:max(per_prompt, len(harmful))])
    return out


#: Sources of the extra prompts (training only): unsafe instructions, safe questions, safe instructions.
EXTRA_SOURCES = ("advbench", "truthfulqa", "written")


def _extras(n: int) -> list:
    rows = data.extra_prompts()
    out = []
    for source in EXTRA_SOURCES:  # every k-th, so a share keeps every kind of request in the set
        out.extend(limited([p for p in rows if p.source == source], n))
    return out


def limited(prompts: list, limit: int | None) -> list:
    if not limit or limit >= len(prompts):
        return prompts
    step = len(prompts) / limit
    return [prompts[int(i * step)] for i in range(limit)]


def _dialogues(plan: Plan, limit: int | None) -> list:
    """The plan's share of the labelled conversations (every k-th, so both labels stay); ``limit`` cuts
    them in the same proportion as the XSTest prompts."""
    rows = data.hh_requests()
    n = min(plan.dialogues, len(rows))
    if limit:
        n = min(n, round(n * limit / len(data.xstest_prompts())))
    return limited(rows, n) if n else []


def units(plan: Plan, n_layer: int, limit: int | None = None, labelled: Sequence[Path] = ()) -> int:
    """The plan's work in progress units (``fit.UNIT_COST``: conversations, extra prompts and replies read,
    own replies written, cross-validated fits, each at what it costs); ``labelled``: replies of other
    models read beside them."""
    prompts = limited(data.xstest_prompts(), limit)
    ids = {p.id for p in prompts}
    people = sum(r.prompt_id in ids for r in _people_replies(plan.people_per_prompt))
    people += sum(len(data.labelled_replies(path, {p.id: p.unsafe for p in prompts})) for path in labelled)
    c = UNIT_COST
    extras = _extras(plan.extra)
    return (c["extra"] * len(extras) + c["dialogue"] * len(_dialogues(plan, limit))
            + c["reply"] * (people + len(plan.drafts(prompts, extras)))
            + c["own"] * len(plan.own_prompts(prompts)) + c["fit"] * len(plan.layers(n_layer)) * len(PENALTIES))


def calibrate(engine, prompt_tokens: Callable[[list[dict]], list[int]], *, quick: bool = True,
              dialogues: int | None = None,
              own_labels: Path | None = None, progress: Callable[[int], None] | None = None,
              output: Path | None = None, limit: int | None = None,
              labelled: Sequence[Path] = ()) -> tuple[ProbeSet, Path]:
    """Fit and save ``engine``'s probes; returns them and the file written.

    ``own_labels``: a CSV of the model's own replies labelled by reading (``prompt_id,reply,complied``);
    without it the model writes its replies now and the refusal-string rule labels them. ``limit``: only
    that many XSTest prompts (every k-th, so every prompt type stays), for a quick try. ``labelled``: CSVs
    of other models' replies labelled by reading (``data.labelled_replies``), trained on beside people's
    and measured apart (the ``read`` rows): the evaluation judge fitted with the answering model's own
    replies sees its style, cross-fitted by prompt like everything else."""
    from rainlocal.gguf_info import content_fingerprint

    plan = Plan.named(quick, dialogues)
    fp = content_fingerprint(engine.path)
    if own_labels is None and data.own_labels_path(fp).is_file():
        own_labels = data.own_labels_path(fp)  # a catalogue model's replies, labelled by reading
    prompts = limited(data.xstest_prompts(), limit)
    unsafe = {p.id: p.unsafe for p in prompts}
    replies = [r for r in _people_replies(plan.people_per_prompt) if r.prompt_id in unsafe]
    read = [r for path in labelled for r in data.labelled_replies(path, unsafe)]
    own_read = data.labelled_replies(own_labels, unsafe, "own") if (plan.own and own_labels) else []
    replies += own_read + read
    dialogues = _dialogues(plan, limit)
    extras = _extras(plan.extra)
    tables = read_tables(engine, prompt_tokens, prompts, extras, replies, plan.layers(engine.n_layer),
                         progress, write_own=[] if own_read else plan.own_prompts(prompts),
                         own_tokens=plan.own_tokens, dialogues=dialogues, drafts=plan.drafts(prompts, extras))
    best = choose(tables, progress=progress)
    probes = fit_final(tables, best, engine.path.name, fp)
    probes.metrics["fit"]["own_labels"] = "read" if (plan.own and own_read) else "refusal-string rule"
    if read:
        probes.metrics["fit"]["labelled_replies"] = {"files": [Path(p).name for p in labelled], "replies": len(read)}
    probes.metrics["fit"]["plan"] = "quick" if quick else "full"
    probes.metrics["fit"]["dialogues"] = len(dialogues)
    path = output if output is not None else probe_path(fp)
    probes.save(path)
    return probes, path
