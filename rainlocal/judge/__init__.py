"""The self-evaluation judge: objectives (judge prompts) and the evaluator the RAIN search calls.

``load_objective(name_or_path)`` gives a built-in objective (harmless, truthful, positive) or a
user TOML file; ``SelfEvaluator(engine, objective, messages, mode="vote"|"soft").score(text)``
scores a partial answer in [-1, 1].
"""

from rainlocal.judge.objectives import Example, Objective, builtin_names, load_objective, parse_objective
from rainlocal.judge.self_eval import JudgeError, SelfEvaluator, letter_ids, render_prompt

__all__ = [
    "Example",
    "JudgeError",
    "Objective",
    "SelfEvaluator",
    "builtin_names",
    "letter_ids",
    "load_objective",
    "parse_objective",
    "render_prompt",
]
