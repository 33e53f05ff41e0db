"""Check results shipped with the package for the catalogue models, verified on this machine.

Why: the checks against people's labels (820 judge cases, 435 self-evaluation cases) are a fixed
computation of a model file, its probes and the labelled data. On this project's 2-core machine they
are compute-bound (the 1.5B evaluation judge reads about 45k tokens at about 150 tok/s: 5 minutes),
and a new user's first evaluation waited that long before it answered a prompt. Their results, made
by this same code on the catalogue's files, ship in ``data/checks/``, found by a *portable* identity
(the model's content fingerprint instead of its file's name and date).

Why they can be trusted: before any shipped result is used, ``SPOT`` of the cases still to do (a
seeded sample) are read here, as a fresh install would, and compared with the shipped ones. The same
machine does not reproduce a reading to the last digit: the batch a case is decoded in (which other
replies share its decode) changes llama.cpp's arithmetic a little. Measured on 2026-12-06 with the
SmolLM2-135M judge, all 820 cases read again in another batch layout: median difference 0.0007,
90th percentile 0.017, largest 0.13; the results of another model's file differ by a median of
0.065-0.16. So the sample agrees when its median difference is at most ``MEDIAN_TOL`` and none exceeds
``MAX_TOL`` (a self-evaluation score in [-1, 1] is compared at half scale). Only then are the other
cases taken from the file, each marked ``shipped`` with what the comparison found, and the report says
how many of its figures were read here. A disagreement (another build, another CPU's arithmetic, an
edited file) and every case is read here instead. ``rainlocal eval --recheck`` reads them all regardless.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import statistics
from pathlib import Path
from typing import Any, Callable, Sequence

#: Where the shipped check results live (one gzipped JSONL file per portable identity).
SHIPPED_DIR = Path(__file__).resolve().parent / "data" / "checks"
#: Cases read on this machine before shipped results are trusted.
SPOT = 24
#: The sample agrees when the median difference between a shipped and a re-read probability is at most
#: this, and none is larger than ``MAX_TOL`` (batch-layout noise: see above).
MEDIAN_TOL = 0.01
MAX_TOL = 0.15
#: The spot sample's seed (fixed: a rerun compares the same cases).
SPOT_SEED = 1


def portable_key(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:20]


def shipped_path(identity: dict[str, Any], directory: Path = SHIPPED_DIR) -> Path:
    return directory / f"{portable_key(identity)}.jsonl.gz"


def answer_hash(answer: str) -> str:
    return hashlib.sha256(answer.encode("utf-8")).hexdigest()[:16]


def load(path: Path) -> dict[str, dict[str, Any]]:
    """Shipped records by case id; an unreadable file is as good as none."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    except (OSError, EOFError, ValueError):
        return {}
    return {str(r.get("id")): r for r in rows if isinstance(r, dict) and r.get("id")}


def write(path: Path, records: Sequence[dict[str, Any]]) -> int:
    """Store check records for shipping: the answer text is replaced by its hash (the labelled data
    ships it already), so the file holds numbers and ids; a record may come with its hash already (one
    read back from a shipped file). Returns how many were written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    drop = ("answer", "cached", "elapsed_s", "system", "worker", "shipped")
    rows = [{**{k: v for k, v in r.items() if k not in drop},
             "answer_sha": answer_hash(r["answer"]) if r.get("answer") is not None else r["answer_sha"]}
            for r in records]
    text = "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n"
                   for r in sorted(rows, key=lambda r: str(r.get("id"))))
    with open(path, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as f:  # the same bytes every time
        f.write(text.encode("utf-8"))
    return len(rows)


def numbers(rec: dict[str, Any]) -> dict[str, float]:
    """The figures of a check record that a re-read must reproduce, by name (scores are on [-1, 1])."""
    out: dict[str, float] = {}
    if rec.get("kind") == "self_check":
        if isinstance(rec.get("soft"), (int, float)):
            out["soft"] = float(rec["soft"]) / 2.0  # on the probabilities' scale
        for k, v in (rec.get("latent") or {}).items():
            if isinstance(v, (int, float)):
                out[f"latent.{k}"] = float(v)
        return out
    j = rec.get("judgment") or {}
    if isinstance(j.get("p_good"), (int, float)):
        out["p_good"] = float(j["p_good"])
    for k, v in (j.get("p") or {}).items():
        if isinstance(v, (int, float)):
            out[f"p.{k}"] = float(v)
    for k, v in (j.get("info") or {}).items():
        if k.startswith("p_") and isinstance(v, (int, float)):
            out[f"info.{k}"] = float(v)
    return out


def difference(shipped: dict[str, Any], here: dict[str, Any]) -> float:
    """The largest difference between two records' figures (inf when they do not name the same ones
    or when one has a verdict the other lacks)."""
    a, b = numbers(shipped), numbers(here)
    if not a or set(a) != set(b) or (shipped.get("predicted") is None) != (here.get("predicted") is None):
        return float("inf")
    return max(abs(a[k] - b[k]) for k in a)


def matches(rec: dict[str, Any], case: Any) -> bool:
    """Whether a shipped record is about this very case (same label and answer text)."""
    return rec.get("label") == case.label and rec.get("answer_sha") == answer_hash(case.answer)


def use_shipped(cases: Sequence[Any], shipped: dict[str, dict[str, Any]], compute: Callable[[Any], dict[str, Any]],
                put: Callable[[dict[str, Any]], None], *, spot: int = SPOT,
                before: Callable[[list[Any]], None] | None = None) -> dict[str, Any]:
    """Verify ``shipped`` against ``spot`` of ``cases`` read here (``compute``), then ``put`` the read
    ones and, if they agree, the shipped results of the rest. Returns what happened: ``used`` (cases
    taken from the file), ``read`` (read here), ``median_delta``, ``max_delta`` and ``worst`` (a case id)."""
    usable = [c for c in cases if c.id in shipped and matches(shipped[c.id], c)]
    if not usable:
        return {"used": 0, "read": 0, "max_delta": None}
    picked = sorted(random.Random(SPOT_SEED).sample(range(len(usable)), min(spot, len(usable))))
    sample = [usable[i] for i in picked]
    if before is not None:
        before(sample)
    deltas: list[tuple[float, str]] = []
    for c in sample:
        here = compute(c)
        put(here)
        deltas.append((difference(shipped[c.id], here), c.id))
    median = statistics.median(d for d, _ in deltas)
    worst = max(deltas)
    report: dict[str, Any] = {"used": 0, "read": len(sample), "median_delta": median, "max_delta": worst[0],
                              "worst": worst[1]}
    if median > MEDIAN_TOL or worst[0] > MAX_TOL:
        return report
    read_ids = {c.id for c in sample}
    stamp = {"spot": len(sample), "median_delta": round(median, 6), "max_delta": round(worst[0], 6),
             "tol": [MEDIAN_TOL, MAX_TOL]}
    for c in usable:
        if c.id in read_ids:
            continue
        rec = {k: v for k, v in shipped[c.id].items() if k != "answer_sha"}
        put({**rec, "answer": c.answer, "shipped": stamp})
        report["used"] += 1
    return report


def outcome_line(what: str, n: int, rep: dict[str, Any]) -> str | None:
    """The one line an evaluation prints about ``use_shipped``'s outcome for ``n`` cases (None: no
    shipped result was about these cases)."""
    if rep["used"]:
        return (f"{what}: {rep['used']} of {n} cases from the results shipped for this model, after {rep['read']} "
                f"read here agreed with them (median difference {rep['median_delta']:.4f}, largest "
                f"{rep['max_delta']:.4f}; --recheck reads all)")
    if rep["read"]:
        return (f"{what}: the results shipped for this model differ from this machine's (median difference "
                f"{rep['median_delta']:.3g}, largest {rep['max_delta']:.3g} on {rep['worst']}); every case is read here")
    return None
