"""The labelled sets the probes are fitted on, shipped with the package (``latent/data/``).

* ``xstest_prompts``: XSTest's development prompts with their safe/unsafe label (Röttger et al., NAACL
  2024, CC-BY-4.0): the request probe's target.
* ``xstest_replies``: real replies of five chat models to those prompts, each labelled by people as full
  compliance, full refusal or partial refusal: the compliance and harm probes' target.
* ``extra_prompts``: AdvBench's harmful behaviours (unsafe) and TruthfulQA's questions (safe), which
  widen the request probe's view of ordinary requests; never used to measure it.
* ``own_labels/<fingerprint>.csv``: the answering model's own replies to the XSTest prompts, compliance
  labelled by reading (see the README, "Latent judge"), for the models whose probes ship.
"""

from __future__ import annotations

import csv
import gzip
import io
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).parent / "data"


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str
    unsafe: bool
    source: str = "xstest"


@dataclass(frozen=True)
class Reply:
    prompt_id: str
    text: str
    complied: bool  # full compliance (a partial refusal is not)
    unsafe: bool  # the request's label
    source: str  # who wrote the reply ("own" for the answering model)
    refused: bool | None = None  # full refusal (people's three-way label; None where only compliance is known)

    @property
    def harmful(self) -> bool:
        return self.unsafe and self.complied


def _rows(name: str) -> list[dict[str, str]]:
    with gzip.open(DATA / name, "rt", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def xstest_prompts() -> list[Prompt]:
    return [Prompt(r["id"], r["prompt"], r["label"] == "unsafe") for r in _rows("xstest_prompts.csv.gz")]


_IDS: dict[str, str] | None = None


def prompt_id_of(text: str) -> str | None:
    """The XSTest prompt id of a request with exactly this text (surrounding spaces ignored), else None."""
    global _IDS
    if _IDS is None:
        _IDS = {p.text.strip(): p.id for p in xstest_prompts()}
    return _IDS.get(text.strip())


def extra_prompts() -> list[Prompt]:
    return [Prompt(r["id"], r["prompt"], r["label"] == "unsafe", r["source"]) for r in _rows("extra_prompts.csv.gz")]


def xstest_replies() -> list[Reply]:
    return [Reply(r["prompt_id"], r["completion"], r["final_label"] == "1_full_compliance", r["label"] == "unsafe",
                  r["model"], r["final_label"] == "2_full_refusal") for r in _rows("xstest_replies.csv.gz")]


def own_labels_path(fingerprint: str) -> Path:
    """The shipped reading-labelled own replies of the model file with this fingerprint (may not exist)."""
    return DATA / "own_labels" / f"{fingerprint}.csv"


def read_own_labels(path: Path) -> list[dict[str, str]]:
    """Rows ``prompt_id, reply, complied`` (``1``/``0``) of a reading-labelled file; [] if there is none."""
    if not path.is_file():
        return []
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
