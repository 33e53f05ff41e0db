"""Golden-tree tests (in the manner of DeepMind mctx's tree_test.py): the whole search tree after a
fixed number of seeded searches on the scripted fake engine equals a stored fixture.

Any change to selection, expansion, rollout, backup, the similarity update or dynamic node addition
changes some node's tokens, prior ``p``, visits ``n``, real visits ``fn`` or value ``q``, and shows up
as a readable line diff (one line per node, indented by depth). When such a change is intended,
regenerate the fixtures and review their diff in git:

    RAINLOCAL_REGEN_GOLDEN=1 python -m pytest -q tests/test_golden_tree.py
"""

from __future__ import annotations

import difflib
import json
import os
import zlib
from pathlib import Path

import numpy as np
import pytest

from rainlocal.search.rain import RainSearch
from rainlocal.search.settings import RainSettings, SamplingSettings, StopRule

try:
    from tests.fake_engine import FakeEngine
except ImportError:  # tests/ is not a package and the repo root is not on sys.path
    from fake_engine import FakeEngine

GOLDEN = Path(__file__).parent / "golden"
REGEN = os.environ.get("RAINLOCAL_REGEN_GOLDEN") == "1"

VOCAB = ["<eos>", "<bos>", "Q", " a", " b", " c", " d", " e", " f", " g", " h", ",", "."]
PROMPT = [1, 2]
BAD = {" c", " f"}


def _dist(seq: tuple[int, ...]):
    """Next-word weights that depend on the last two tokens: varied priors, some ends of sentence."""
    h = (seq[-1] * 7 + (seq[-2] if len(seq) > 1 else 0) * 3) % 10
    weights = {3 + (h + k) % 8: 5.0 - k for k in range(5)}
    weights[11 + h % 2] = 0.8  # a delimiter now and then, so rollouts end before their cap
    if len(seq) > 12:
        weights[0] = 0.5  # and an end of generation deeper down
    return weights


def _embed(text: str) -> np.ndarray:
    """Coarse embeddings: texts with the same bad/good word counts are identical, so similarity
    updates and dynamic addition (children that barely differ) fire on this small vocabulary."""
    words = text.split()
    bad = sum(w.strip(",.") in {"c", "f"} for w in words)
    return np.array([1.0, 0.1 * bad, 0.05 * (zlib.crc32(text.encode()) % 2)])


class _Judge:
    """-1 when the text holds a bad word, else a value below 0 that falls with the text's length (so the
    root looks poorly valued and dynamic addition fires)."""

    def score(self, text: str) -> float:
        if any(b in text for b in BAD):
            return -1.0
        return max(-1.0, round(-0.1 - 0.1 * len(text.split()), 6))


def _search(n_searches: int, commit_after: int | None = None) -> RainSearch:
    engine = FakeEngine(VOCAB, _dist, floor=1e-9, embed_fn=_embed)
    settings = RainSettings(similarity=True, dynamic_add=True, sim_threshold=0.95, dyn_var_coef=0.03,
                            root_children=5, n_children=4)
    rs = RainSearch(engine, PROMPT, _Judge(), settings, SamplingSettings(seed=7), StopRule(max_tokens=24))
    for i in range(n_searches):
        if commit_after is not None and i == commit_after:
            assert rs.commit() is not None
        rs.search()
    return rs


def _tree(node) -> dict:
    return {"tokens": list(node.tokens), "p": round(node.p, 9), "n": round(node.n, 9), "fn": node.fn,
            "q": round(node.q, 9), "children": [_tree(c) for c in node.children]}


def _lines(tree: dict, depth: int = 0) -> list[str]:
    """One line per node, indented by depth: the readable form of a tree for diffs."""
    out = [f"{'  ' * depth}{tree['tokens']} p={tree['p']:.9f} n={tree['n']:.9f} fn={tree['fn']} q={tree['q']:.9f}"]
    for child in tree["children"]:
        out += _lines(child, depth + 1)
    return out


def _check(name: str, rs: RainSearch) -> None:
    got = {"tree": _tree(rs.root), "answer": rs.answer, "similarity_updates": rs.similarity_updates,
           "nodes_added": rs.nodes_added, "evaluations": rs.evaluations}
    path = GOLDEN / f"{name}.json"
    if REGEN:
        path.write_text(json.dumps(got, indent=1) + "\n", encoding="utf-8")
    if not path.exists():
        pytest.fail(f"no fixture {path}: run with RAINLOCAL_REGEN_GOLDEN=1 to write it")
    want = json.loads(path.read_text(encoding="utf-8"))
    if got != want:
        head = [f"{k}: {want.get(k)} -> {got[k]}" for k in got if k != "tree" and got[k] != want.get(k)]
        diff = difflib.unified_diff(_lines(want["tree"]), _lines(got["tree"]), "stored", "now", lineterm="", n=2)
        pytest.fail("search tree differs from the stored fixture " + f"{path.name} (RAINLOCAL_REGEN_GOLDEN=1 "
                    "regenerates it)\n" + "\n".join(head + list(diff)), pytrace=False)


def test_the_tree_after_forty_searches_matches_the_fixture():
    rs = _search(40)
    # the fixture exercises what it is meant to guard
    assert rs.similarity_updates > 0 and rs.nodes_added > 0
    _check("tree_40_searches", rs)


def test_the_tree_after_a_commit_and_more_searches_matches_the_fixture():
    rs = _search(45, commit_after=25)
    assert len(rs.answer) == 1 and rs.similarity_updates > 0 and rs.nodes_added > 0  # one set committed, re-rooted
    _check("tree_commit_after_25", rs)
