"""The self-evaluation prompt's text: the fixed prefix (instruction and worked examples), the judged
conversation's head, and the question-and-options tail after the judged answer, in the paper's layout
(question after the conversation) and the ``single`` layout (question first). ``self_eval`` turns
these texts into token pieces and scores; they live apart so the text can be read (and changed) on
its own."""

from __future__ import annotations

from typing import Any, Sequence

from rainlocal.judge.objectives import Objective
from rainlocal.judge.transcript import ASSISTANT_LABEL, transcript_lines

#: Text right before the letter (ab) and before the yes/no word (yesno).
AB_CUE = "The answer is: ("
YESNO_CUE = "The answer is:"

#: Conversation markers used in the examples and in the judged conversation.
CONV_LABEL = "Conversation:\n"


def render_tail(objective: Objective, good_first: bool = True) -> str:
    """Question, options and cue after the judged answer (``good_first`` is ignored for yesno)."""
    if objective.kind == "yesno":
        return f"\n\n{objective.question}\n{YESNO_CUE}"
    a, b = (objective.good, objective.bad) if good_first else (objective.bad, objective.good)
    return f"\n\n{objective.question}\n(A) {a}\n(B) {b}\n{AB_CUE}"


def render_head(messages: Sequence[dict[str, Any]]) -> str:
    """The conversation up to the assistant label; system messages are not shown to the judge."""
    return "\n".join([CONV_LABEL.rstrip("\n"), *transcript_lines(messages), ASSISTANT_LABEL])


def render_prefix(objective: Objective) -> str:
    """Instruction plus the worked examples, ending in a blank line (the fixed, shared part)."""
    parts = [objective.instruction.strip(), "\n\n"]
    for i, ex in enumerate(objective.examples):
        head = render_head([{"role": "user", "content": ex.user}])
        if objective.kind == "yesno":
            answer = " Yes" if ex.good else " No"
            tail = render_tail(objective)
        else:
            letter = "A" if i % 2 == 0 else "B"  # alternate the correct letter
            good_first = ex.good == (letter == "A")
            tail = render_tail(objective, good_first)
            answer = letter + ")"
        parts.append(f"{head} {ex.answer.strip()}{tail}{answer}\n\n")
    return "".join(parts)


def render_prefix_single(objective: Objective) -> str:
    """The ``single`` layout's fixed part: instruction, question and options (good option first), then
    the worked examples, each answered right after its conversation.

    Why: with the question before the conversation, an evaluation decodes only the judged text and a
    short cue (about 6 tokens) instead of the question and options after it (about 37 tokens, twice);
    the judged text extends a cached sequence. One option order only: the fast profile measures every
    score against a refusal and a compliance judged the same way (``search.fast.Calibrated``), which
    cancels the position bias the paper's two orders average out."""
    if objective.kind == "yesno":
        head = f"{objective.instruction.strip()}\n\n{objective.question}\n\n"
    else:
        head = f"{objective.instruction.strip()}\n\n{objective.question}\n(A) {objective.good}\n(B) {objective.bad}\n\n"
    parts = [head]
    for ex in objective.examples:
        conv = render_head([{"role": "user", "content": ex.user}])
        if objective.kind == "yesno":
            answer = " Yes" if ex.good else " No"
        else:
            answer = ("A" if ex.good else "B") + ")"
        parts.append(f"{conv} {ex.answer.strip()}{render_tail_single(objective)}{answer}\n\n")
    return "".join(parts)


def render_tail_single(objective: Objective) -> str:
    return "\n" + (YESNO_CUE if objective.kind == "yesno" else AB_CUE)


def render_prompt(objective: Objective, messages: Sequence[dict[str, Any]], answer_text: str,
                  good_first: bool = True) -> str:
    """The whole judge text for one order, for logs and docs (the evaluator works on token pieces)."""
    answer = answer_text.strip()
    return (render_prefix(objective) + render_head(messages) + (" " + answer if answer else "")
            + render_tail(objective, good_first))
