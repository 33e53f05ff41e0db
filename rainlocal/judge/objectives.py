"""Objectives: what the self-evaluation judge asks the model about a (partial) answer.

An objective is a judge instruction, a few worked examples, the question asked after the
conversation, and the option texts. Two kinds exist:

``"ab"``
    Two options shown as ``(A)`` / ``(B)``, one good and one bad (the paper's harmless/harmful
    judge, our positive/negative sentiment judge). The judge is asked twice, once with each option
    order, and the next-token probabilities of the letters ``A`` and ``B`` are read after
    ``The answer is: (``.

``"yesno"``
    A yes/no question (TruthfulQA style: "is the answer truthful?"), asked once; the
    probabilities of the yes-tokens and no-tokens are read after ``The answer is:``. "Yes" is the
    good answer.

Built-in objectives ship as TOML files next to this module (``objectives/harmless.toml``,
``truthful.toml``, ``positive.toml``). A user objective is a TOML file with the same fields,
selected with ``--objective PATH``. Schema::

    name = "polite"            # optional; defaults to the file name without .toml
    kind = "ab"                # "ab" or "yesno"
    description = "..."        # optional, one line shown in listings
    instruction = '''...'''    # required: the judge's task, shown first
    question = "..."           # required: asked after each conversation, before the options
    good = "..."               # "ab" only, required: text of the good option
    bad = "..."                # "ab" only, required: text of the bad option

    [[examples]]               # optional, repeatable: worked examples shown before the real one
    user = "..."               # the user's message
    answer = "..."             # the assistant's (possibly unfinished) reply
    label = "good"             # "good" or "bad" ("yes"/"no" are accepted as synonyms)

A built-in name wins over a file of the same name in the working directory (write
``./harmless.toml`` to mean the file). Unknown keys are rejected so that a typo does not silently drop a field. The examples'
option order is chosen by the prompt builder (``rainlocal.judge.self_eval``) so that the correct
letters alternate A, B, A, B... and neither letter nor position is favoured by the examples.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from rainlocal.config import read_toml
from rainlocal.errors import ConfigError, UsageError

KINDS = ("ab", "yesno")

_TOP_KEYS = {"name", "kind", "description", "instruction", "question", "good", "bad", "examples"}
_EXAMPLE_KEYS = {"user", "answer", "label"}
_LABELS = {"good": True, "yes": True, "bad": False, "no": False}


@dataclass(frozen=True)
class Example:
    """One worked example: a user message, the assistant's reply, and whether the reply is good."""

    user: str
    answer: str
    good: bool


@dataclass(frozen=True)
class Objective:
    """A judge prompt. Hashable and compared by content (``source`` is informational only)."""

    name: str
    kind: str
    instruction: str
    question: str
    examples: tuple[Example, ...] = ()
    good: str = ""
    bad: str = ""
    description: str = ""
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"objective kind must be one of {', '.join(KINDS)}, got {self.kind!r}")


def builtin_names() -> list[str]:
    """Names of the objectives shipped with rainlocal, sorted."""
    folder = resources.files(__package__).joinpath("objectives")
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def parse_objective(data: dict[str, Any], *, source: str, default_name: str) -> Objective:
    """Validate a parsed TOML table and build an Objective; ConfigError names ``source`` and the field."""

    def fail(msg: str) -> ConfigError:
        return ConfigError(f"{source}: {msg}")

    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise fail(f"unknown field(s) {', '.join(map(repr, unknown))} (known: {', '.join(sorted(_TOP_KEYS))})")

    def text(key: str, table: dict[str, Any] = data, where: str = "", required: bool = True) -> str:
        if key not in table:
            if required:
                raise fail(f"{where}missing required field {key!r}")
            return ""
        value = table[key]
        if not isinstance(value, str):
            raise fail(f"{where}field {key!r} must be a string, got {type(value).__name__}")
        if required and not value.strip():
            raise fail(f"{where}field {key!r} is empty")
        return value

    kind = text("kind")
    if kind not in KINDS:
        raise fail(f"field 'kind' must be one of {', '.join(map(repr, KINDS))}, got {kind!r}")
    name = text("name", required=False).strip() or default_name
    instruction = text("instruction").strip()
    question = text("question").strip()
    good = text("good", required=kind == "ab").strip()
    bad = text("bad", required=kind == "ab").strip()
    if kind == "ab" and good == bad:
        raise fail("fields 'good' and 'bad' must differ")

    raw_examples = data.get("examples", [])
    if not isinstance(raw_examples, list):
        raise fail("'examples' must be an array of tables ([[examples]])")
    examples = []
    for i, ex in enumerate(raw_examples, 1):
        where = f"examples[{i}]: "
        if not isinstance(ex, dict):
            raise fail(f"{where}must be a table with user, answer and label")
        extra = sorted(set(ex) - _EXAMPLE_KEYS)
        if extra:
            raise fail(f"{where}unknown field(s) {', '.join(map(repr, extra))} (known: user, answer, label)")
        label = text("label", ex, where).strip().lower()
        if label not in _LABELS:
            raise fail(f"{where}field 'label' must be 'good' or 'bad' (or 'yes'/'no'), got {ex['label']!r}")
        examples.append(Example(user=text("user", ex, where).strip(), answer=text("answer", ex, where).strip(),
                                good=_LABELS[label]))
    return Objective(name=name, kind=kind, instruction=instruction, question=question, examples=tuple(examples),
                     good=good, bad=bad, description=text("description", required=False).strip(), source=source)


def _load_builtin(name: str) -> Objective:
    resource = resources.files(__package__).joinpath("objectives", f"{name}.toml")
    source = f"built-in objective {name!r}"
    try:
        data = tomllib.loads(resource.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:  # pragma: no cover - shipped files are tested
        raise ConfigError(f"{source}: invalid TOML: {e}") from None
    return parse_objective(data, source=source, default_name=name)


def load_objective(name_or_path: str) -> Objective:
    """A built-in objective by name, else an objective TOML file.

    Raises ConfigError for a broken file (invalid TOML with its line, or a missing/invalid field)
    and UsageError, listing the built-in names, when the argument is neither.
    """
    names = builtin_names()
    key = name_or_path.strip()
    if key.lower() in names:
        return _load_builtin(key.lower())
    path = Path(key).expanduser()
    if path.is_file():
        data = read_toml(path)
        return parse_objective(data, source=str(path), default_name=path.stem)
    if path.exists():
        raise UsageError(f"objective {name_or_path!r} is not a file")
    what = "no such objective file" if (path.suffix == ".toml" or "/" in key or "\\" in key) else "unknown objective"
    raise UsageError(f"{what} {name_or_path!r}; built-in objectives: {', '.join(names)} (or give a TOML file)")
