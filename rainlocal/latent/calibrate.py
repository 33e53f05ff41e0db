"""One calibration of a model's probes, end to end: labelled sets -> states -> cross-validation -> file.

Used by ``rainlocal calibrate`` and by the first latent answer of a model without probes. The work is
counted in units (one request or reply decoded, one reply written, one cross-validated fit) so a
progress bar can show it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from rainlocal.latent import data
from rainlocal.latent.data import Reply
from rainlocal.latent.fit import PENALTIES, candidate_layers, choose, fit_final, read_tables
from rainlocal.latent.probes import ProbeSet, probe_path


@dataclass
class Plan:
    """How much of the labelled data a calibration reads (``quick``: the first-use budget)."""

    people_per_prompt: int  # human-labelled replies read per prompt (of 5)
    extra: int  # extra prompts (AdvBench / TruthfulQA) per source
    own: bool  # the model's own replies
    dialogues: int = 0  # labelled HH conversations (of 500; long, so the quick plan reads a share)

    @classmethod
    def named(cls, quick: bool, dialogues: int | None = None) -> "Plan":
        plan = cls(people_per_prompt=1, extra=50, own=True, dialogues=125) if quick else cls(5, 400, True, 500)
        if dialogues is not None:
            plan.dialogues = max(0, int(dialogues))
        return plan


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


def _extras(n: int) -> list:
    rows = data.extra_prompts()
    out = []
    for source in ("advbench", "truthfulqa"):
        out.extend([p for p in rows if p.source == source][:n])
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


def units(plan: Plan, n_layers: int, limit: int | None = None) -> int:
    """Progress units: a reply, conversation or extra prompt decoded, an own reply written, a
    cross-validated fit."""
    ids = {p.id for p in limited(data.xstest_prompts(), limit)}
    people = sum(r.prompt_id in ids for r in _people_replies(plan.people_per_prompt))
    return (2 * plan.extra + len(_dialogues(plan, limit)) + people + len(ids) * plan.own
            + n_layers * len(PENALTIES))


def calibrate(engine, prompt_tokens: Callable[[list[dict]], list[int]], *, quick: bool = True,
              dialogues: int | None = None,
              own_labels: Path | None = None, progress: Callable[[int], None] | None = None,
              output: Path | None = None, limit: int | None = None) -> tuple[ProbeSet, Path]:
    """Fit and save ``engine``'s probes; returns them and the file written.

    ``own_labels``: a CSV of the model's own replies labelled by reading (``prompt_id,reply,complied``);
    without it the model writes its replies now and the refusal-string rule labels them. ``limit``: only
    that many XSTest prompts (every k-th, so every prompt type stays), for a quick try."""
    from rainlocal.gguf_info import content_fingerprint

    plan = Plan.named(quick, dialogues)
    fp = content_fingerprint(engine.path)
    if own_labels is None and data.own_labels_path(fp).is_file():
        own_labels = data.own_labels_path(fp)  # a catalogue model's replies, labelled by reading
    prompts = limited(data.xstest_prompts(), limit)
    unsafe = {p.id: p.unsafe for p in prompts}
    replies = [r for r in _people_replies(plan.people_per_prompt) if r.prompt_id in unsafe]
    labelled = data.read_own_labels(own_labels) if (plan.own and own_labels) else []
    if labelled:
        replies += [Reply(r["prompt_id"], r["reply"], r["complied"].strip() == "1", unsafe[r["prompt_id"]], "own")
                    for r in labelled if r["prompt_id"] in unsafe]
    dialogues = _dialogues(plan, limit)
    tables = read_tables(engine, prompt_tokens, prompts, _extras(plan.extra), replies,
                         candidate_layers(engine.n_layer), progress, write_own=plan.own and not labelled,
                         dialogues=dialogues)
    best = choose(tables, progress=progress)
    probes = fit_final(tables, best, engine.path.name, fp)
    probes.metrics["fit"]["own_labels"] = "read" if (plan.own and labelled) else "refusal-string rule"
    probes.metrics["fit"]["plan"] = "quick" if quick else "full"
    probes.metrics["fit"]["dialogues"] = len(dialogues)
    path = output if output is not None else probe_path(fp)
    probes.save(path)
    return probes, path
