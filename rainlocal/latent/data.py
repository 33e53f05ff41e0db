"""The labelled sets the probes are fitted on, shipped with the package (``latent/data/``).

* ``xstest_prompts``: XSTest's development prompts with their safe/unsafe label (Röttger et al., NAACL
  2024, CC-BY-4.0): the request probe's target.
* ``xstest_replies``: real replies of five chat models to those prompts, each labelled by people as full
  compliance, full refusal or partial refusal: the compliance and harm probes' target.
* ``hh_requests``: 500 HH-RLHF red-team dialogues, the final request labelled unsafe or not by reading
  (``HH_LABELS.md``): the request probe's target on multi-turn conversations, measured cross-fitted by
  dialogue like the XSTest prompts (a probe fitted on one-line requests alone read them at chance).
* ``extra_prompts``: AdvBench's harmful behaviours (unsafe), TruthfulQA's questions (safe) and 340
  ordinary requests phrased like AdvBench's instructions (safe; ``benign_requests.csv.gz``, written from
  templates by ``scripts/benign_requests.py``), which widen the request probe's view of ordinary
  requests; never used to measure it. Without the third set every unsafe extra was an instruction and
  every safe one a question, and the probes read "Give me a recipe for banana bread." as unsafe.
* ``own_labels/<fingerprint>.csv``: the answering model's own replies to the XSTest prompts, compliance
  labelled by reading (see the README, "Latent judge"), for the models whose probes ship.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).parent / "data"


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str  # the (last) user message
    unsafe: bool
    source: str = "xstest"
    dialogue: str = ""  # a multi-turn conversation's messages as JSON ("": one user message, ``text``)

    @property
    def messages(self) -> list[dict[str, str]]:
        return json.loads(self.dialogue) if self.dialogue else [{"role": "user", "content": self.text}]

    @property
    def multi_turn(self) -> bool:
        return has_earlier_turns(self.messages)


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


def hh_requests() -> list[Prompt]:
    with gzip.open(DATA / "hh_requests.jsonl.gz", "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [Prompt(r["id"], r["messages"][-1]["content"], bool(r["unsafe"]), "hh", json.dumps(r["messages"]))
            for r in rows]


def has_earlier_turns(messages) -> bool:
    """Whether the request follows earlier turns of a conversation (read by the multi-turn request probe)."""
    return any(m.get("role") == "assistant" for m in messages)


def conversation_key(messages) -> str:
    """What identifies a labelled request: a lone user message by its text (spaces collapsed), a
    conversation by its turns."""
    msgs = [m for m in messages if m.get("role") != "system"]
    if len(msgs) == 1 and msgs[0].get("role") == "user":
        return " ".join(str(msgs[0].get("content", "")).split())
    return json.dumps([[m.get("role"), " ".join(str(m.get("content", "")).split())] for m in msgs])


_IDS: dict[str, str] | None = None


def prompt_id_of(request) -> str | None:
    """The id of the labelled prompt (XSTest or HH) that is exactly this request (a user message's text or a
    conversation's messages; spacing ignored), else None."""
    global _IDS
    if _IDS is None:
        _IDS = {conversation_key(p.messages): p.id for p in xstest_prompts() + hh_requests()}
    return _IDS.get(conversation_key([{"role": "user", "content": request}] if isinstance(request, str) else request))


def extra_prompts() -> list[Prompt]:
    return [Prompt(r["id"], r["prompt"], r["label"] == "unsafe", r["source"])
            for name in ("extra_prompts.csv.gz", "benign_requests.csv.gz") for r in _rows(name)]


def xstest_replies() -> list[Reply]:
    return [Reply(r["prompt_id"], r["completion"], r["final_label"] == "1_full_compliance", r["label"] == "unsafe",
                  r["model"], r["final_label"] == "2_full_refusal") for r in _rows("xstest_replies.csv.gz")]


def compliant_drafts(unsafe: dict[str, bool]) -> list[Reply]:
    """Compliant openings to the labelled prompts (``unsafe``: the prompts wanted, by id, with their labels):
    qwen2.5-coder-0.5b-instruct's sampled replies (40 tokens, temperature 0.8) begun with a compliant word
    ("Sure,", "Here", "To", "1."), kept where the refusal-string rule found no refusal. Why: the topic
    probe learns what a compliant answer to an unsafe request is *about* from them; people's labelled
    replies hold few harmful compliances, nearly all one model's, and a probe fitted on those alone read
    short written harmful replies as harmless (README, "Latent judge")."""
    return [Reply(r["prompt_id"], r["reply"], True, unsafe[r["prompt_id"]], "drafted")
            for r in _rows("compliant_drafts.csv.gz") if r["prompt_id"] in unsafe]


def own_labels_path(fingerprint: str) -> Path:
    """The shipped reading-labelled own replies of the model file with this fingerprint (may not exist)."""
    return DATA / "own_labels" / f"{fingerprint}.csv"


def labelled_replies(path: Path, unsafe: dict[str, bool], source: str = "read") -> list[Reply]:
    """A model's replies to the XSTest dev prompts, labelled by reading (``prompt_id,reply,complied``), as
    ``Reply`` rows of ``source`` (``"own"`` for the model being fitted, ``"read"`` for another's); replies to prompts outside ``unsafe`` (e.g. a ``--limit``) are left
    out. A file that is not such a CSV raises ``ValueError`` saying which row is wrong."""
    known = {p.id for p in xstest_prompts()}
    try:
        rows = read_own_labels(path)
    except (UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{path}: not a UTF-8 CSV of prompt_id,reply,complied ({e})") from None
    if not rows:
        raise ValueError(f"{path}: no labelled replies (a header prompt_id,reply,complied and one row per reply)")
    out = []
    for i, r in enumerate(rows, start=2):
        pid, text, c = r.get("prompt_id"), r.get("reply"), (r.get("complied") or "").strip()
        if pid is None or text is None or c not in ("0", "1") or pid not in known:
            raise ValueError(f"{path}: row {i} is not prompt_id,reply,complied (an XSTest dev prompt id, 0 or 1)")
        if pid in unsafe:
            out.append(Reply(pid, text, c == "1", unsafe[pid], source))
    return out


def read_own_labels(path: Path) -> list[dict[str, str]]:
    """Rows ``prompt_id, reply, complied`` (``1``/``0``) of a reading-labelled file; [] if there is none."""
    if not path.is_file():
        return []
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
