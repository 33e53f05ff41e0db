"""The three evaluation suites and their data files.

``hh``          Anthropic HH-RLHF dialogues (JSONL: ``{"id", "messages": [...]}`` ending in a user turn);
                judged for harmlessness and helpfulness.
``advbench``    AdvBench harmful behaviours (CSV: ``id,goal,target``); attack success by refusal-string
                matching (Zou et al. 2023) and by the judge. ``--attack-suffix`` appends a suffix.
``truthfulqa``  TruthfulQA questions (CSV with ``Question``, ``Best Answer``, ``Correct Answers``,
                ``Incorrect Answers``; answers ``;``-separated); judged truthful and informative.
``xstest``      XSTest prompts (CSV: ``id,prompt,type,label``): ``safe`` prompts that only sound harmful
                (a good assistant complies) and ``unsafe`` contrast prompts (it refuses); classified as
                full compliance, partial or full refusal, and judged for harmlessness.

By default the suite's file is taken from the folder named by ``RAINLOCAL_DATA`` when that is set
(an installed rainlocal has no checkout beside it), else from the development splits in
``../shared/data/``, looked up relative to the current directory and to the rainlocal checkout;
``--data FILE`` takes any file in the same format.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rainlocal.errors import UsageError
from rainlocal.jsonl import conversation, read_jsonl

SUITES = ("hh", "advbench", "truthfulqa", "xstest")

#: Default file of each suite inside the shared data folder.
DEFAULT_FILES = {"hh": "hh_harmless_dev.jsonl", "advbench": "advbench_dev.csv", "truthfulqa": "truthfulqa_dev.csv",
                 "xstest": "xstest_dev.csv"}

#: The RAIN profile each suite's ``rain`` strategy runs with by default: what ``rainlocal run`` answers with
#: (the fast profile, its latent judge reading harm) where the suite measures harm, so a first evaluation
#: measures the product and takes minutes; TruthfulQA's is the paper's truthful experiment (the harm probes
#: do not read truthfulness). The paper's experiments stay one name away (``--profile harmless``, or the
#: strategies ``paper``, ``harmless``, ``adversarial``).
SUITE_PROFILE = {"hh": "fast", "advbench": "fast", "truthfulqa": "truthful", "xstest": "fast"}

SHARED_DATA = Path("..") / "shared" / "data"


@dataclass
class Item:
    """One prompt of a suite: the conversation to answer plus whatever the judges need."""

    id: str
    messages: list[dict[str, str]]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def user_text(self) -> str:
        return self.messages[-1]["content"]


def repo_root() -> Path:
    """The folder holding the ``rainlocal`` package (the checkout's root for an editable install)."""
    return Path(__file__).resolve().parents[2]


def default_data_path(suite: str, *, cwd: Path | None = None) -> Path:
    """The suite's default file (``$RAINLOCAL_DATA`` or ``../shared/data``); UsageError naming --data
    when it is absent."""
    name = DEFAULT_FILES[suite]
    folder = os.environ.get("RAINLOCAL_DATA")
    if folder:
        path = (Path(folder).expanduser() / name).resolve()
        if path.is_file():
            return path
        raise UsageError(f"no data for suite {suite!r}: {path} not found (RAINLOCAL_DATA={folder}); "
                         f"give the file with --data FILE")
    bases = [cwd or Path.cwd(), repo_root()]
    tried: list[str] = []
    for base in bases:
        path = (base / SHARED_DATA / name).resolve()
        if str(path) in tried:
            continue
        tried.append(str(path))
        if path.is_file():
            return path
    raise UsageError(
        f"no data for suite {suite!r}: {SHARED_DATA / name} not found relative to the current directory "
        f"or the rainlocal checkout; give the file with --data FILE or its folder with RAINLOCAL_DATA"
    )


def resolve_data_path(suite: str, data: str | Path | None) -> Path:
    if data is None:
        return default_data_path(suite)
    path = Path(data).expanduser()
    if not path.is_file():
        raise UsageError(f"--data: file not found: {path}")
    return path.resolve()


def load_suite(suite: str, path: Path, *, attack_suffix: str | None = None) -> list[Item]:
    """Every item of ``path`` in file order; UsageError (with file and line) on malformed data."""
    if suite not in SUITES:
        raise UsageError(f"unknown suite {suite!r} (known: {', '.join(SUITES)})")
    if attack_suffix and suite != "advbench":
        raise UsageError("--attack-suffix applies to the advbench suite only")
    try:
        if suite == "hh":
            items = _load_hh(path)
        elif suite == "advbench":
            items = _load_advbench(path, attack_suffix)
        elif suite == "xstest":
            items = _load_xstest(path)
        else:
            items = _load_truthfulqa(path)
    except UnicodeDecodeError as e:
        raise UsageError(f"{path}: not UTF-8 text ({e})") from None
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e}") from None
    if not items:
        raise UsageError(f"{path} holds no {suite} items")
    seen: set[str] = set()
    for it in items:
        if it.id in seen:
            raise UsageError(f"{path}: duplicate id {it.id!r}")
        seen.add(it.id)
    return items


def _load_hh(path: Path) -> list[Item]:
    items: list[Item] = []
    for lineno, obj in read_jsonl(path):
        msgs = conversation(obj, f"{path}:{lineno}")
        if msgs[-1]["role"] != "user":
            raise UsageError(f"{path}:{lineno}: the conversation must end with a user turn")
        items.append(Item(id=str(obj.get("id", f"hh-{lineno - 1:04d}")), messages=msgs))
    return items


def _csv_rows(path: Path, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            raise UsageError(f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(header) or 'none'})")
        return [(i, row) for i, row in enumerate(reader)]


def _load_advbench(path: Path, suffix: str | None) -> list[Item]:
    items = []
    for i, row in _csv_rows(path, ("goal", "target")):
        goal = (row.get("goal") or "").strip()
        if not goal:
            continue
        prompt = f"{goal} {suffix.strip()}" if suffix and suffix.strip() else goal
        items.append(Item(id=(row.get("id") or f"adv-{i:03d}").strip(), messages=[{"role": "user", "content": prompt}],
                          extra={"goal": goal, "target": (row.get("target") or "").strip()}))
    return items


def _load_xstest(path: Path) -> list[Item]:
    items = []
    for i, row in _csv_rows(path, ("prompt", "type", "label")):
        prompt = (row.get("prompt") or "").strip()
        if not prompt:
            continue
        items.append(Item(id=(row.get("id") or f"xs-{i:03d}").strip(), messages=[{"role": "user", "content": prompt}],
                          extra={"type": (row.get("type") or "").strip(), "label": (row.get("label") or "").strip()}))
    return items


def prompt_file_kind(path: Path) -> str:
    """Which loader reads ``path``: hh (JSONL), or by the CSV header advbench, xstest or truthfulqa."""
    if path.suffix.lower() in (".jsonl", ".json"):
        return "hh"
    try:
        with open(path, encoding="utf-8", newline="") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {path}: {e}") from None
    if "goal" in header:
        return "advbench"
    if "prompt" in header and "label" in header:
        return "xstest"
    if "Question" in header:
        return "truthfulqa"
    raise UsageError(f"{path}: not a prompt file rainlocal knows (HH JSONL, or an AdvBench, XSTest or "
                     f"TruthfulQA CSV); found columns: {', '.join(header) or 'none'}")


def load_prompts(path: Path, *, label: str | None = None) -> list[Item]:
    """Every prompt of any known prompt file (``label`` keeps only XSTest rows with that label)."""
    kind = prompt_file_kind(path)
    if kind == "xstest":
        try:
            items = _load_xstest(path)
        except UnicodeDecodeError as e:
            raise UsageError(f"{path}: not UTF-8 text ({e})") from None
    else:
        items = load_suite(kind, path)
    if label is not None:
        if kind != "xstest":
            raise UsageError("--label applies to XSTest files only")
        items = [it for it in items if it.extra.get("label") == label]
        if not items:
            raise UsageError(f"{path} holds no prompts labelled {label!r}")
    return items


def spread_over_types(items: list[Item], n: int) -> list[Item]:
    """``n`` items taken round-robin over their ``type`` (file order within a type), so a small sample
    covers every kind of prompt of a file sorted by type; items without types: the first ``n``."""
    types: dict[str, list[Item]] = {}
    for it in items:
        types.setdefault(str(it.extra.get("type", "")), []).append(it)
    if len(types) <= 1:
        return items[:n]
    out: list[Item] = []
    depth = 0
    while len(out) < n and any(depth < len(v) for v in types.values()):
        for group in types.values():
            if depth < len(group) and len(out) < n:
                out.append(group[depth])
        depth += 1
    return out


def sample_items(items: list[Item], n: int, seed: int = 0) -> list[Item]:
    """``--limit N``: a fixed seeded sample of ``n`` items that covers every stratum (an XSTest
    (label, type) pair; files without types have one stratum), never just the first rows of a file
    sorted by type. Strata are visited in a seeded order with the labels alternating, one item each
    (seeded within a stratum) per round, so N >= 2 covers both labels and N of at least the number of
    strata covers all of them; the result keeps file order."""
    import random
    from itertools import zip_longest

    if n >= len(items):
        return list(items)
    rng = random.Random(seed)
    groups: dict[tuple[str, str], list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault((str(it.extra.get("label", "")), str(it.extra.get("type", ""))), []).append(i)
    for g in groups.values():
        rng.shuffle(g)
    by_label: dict[str, list[tuple[str, str]]] = {}
    for k in sorted(groups):
        by_label.setdefault(k[0], []).append(k)
    for ks in by_label.values():
        rng.shuffle(ks)
    keys = [k for round_ in zip_longest(*by_label.values()) for k in round_ if k is not None]  # labels alternate
    picked: list[int] = []
    depth = 0
    while len(picked) < n:
        for k in keys:
            if depth < len(groups[k]) and len(picked) < n:
                picked.append(groups[k][depth])
        depth += 1
    return [items[i] for i in sorted(picked)]


def _split_answers(text: str | None) -> list[str]:
    return [a.strip() for a in (text or "").split(";") if a.strip()]


def _load_truthfulqa(path: Path) -> list[Item]:
    items = []
    for i, row in _csv_rows(path, ("Question", "Best Answer", "Correct Answers", "Incorrect Answers")):
        q = (row.get("Question") or "").strip()
        if not q:
            continue
        best = (row.get("Best Answer") or "").strip()
        correct = _split_answers(row.get("Correct Answers"))
        if best and best not in correct:
            correct.insert(0, best)
        items.append(Item(id=(row.get("id") or f"tqa-{i:03d}").strip(), messages=[{"role": "user", "content": q}],
                          extra={"best": best, "correct": correct, "incorrect": _split_answers(row.get("Incorrect Answers")),
                                 "category": (row.get("Category") or "").strip()}))
    return items
