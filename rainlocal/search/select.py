"""Selection (paper Eq. 1, in the reference code's form) and the commit / early-stop rules.

Score of a child during selection::

    qh + c * p * sqrt(parent.n) / (1 + child.n)

with ``qh = (q + 1) / 2`` (the value scaled from [-1, 1] to [0, 1]) for a child with ``n > 0`` and
``qh = 0`` for an unvisited child (pessimistic: an unexplored token set has to earn its place through
its prior). The paper writes the sum of the siblings' ``n`` and the raw ``q``; the reference code uses
``parent.n`` and the scaled value, which is what this module does.
"""

from __future__ import annotations

import math

from rainlocal.search.tree import Node


def scaled_value(child: Node) -> float:
    """``qh``: the child's value in [0, 1], or 0 for a child nobody has visited (n == 0)."""
    if child.n <= 0:
        return 0.0
    return (child.q + 1.0) / 2.0


def exploration(child: Node, parent_n: float, c: float) -> float:
    """The exploration bonus ``c * p * sqrt(parent.n) / (1 + child.n)``."""
    return c * child.p * math.sqrt(max(parent_n, 0.0)) / (1.0 + child.n)


def selection_score(child: Node, parent_n: float, c: float) -> float:
    """Eq. 1 as in the reference code."""
    return scaled_value(child) + exploration(child, parent_n, c)


def select_child(node: Node, c: float) -> Node:
    """The child with the highest selection score (first in expansion order on ties)."""
    if not node.children:
        raise ValueError("select_child on a leaf")
    best = node.children[0]
    best_score = selection_score(best, node.n, c)
    for child in node.children[1:]:
        s = selection_score(child, node.n, c)
        if s > best_score:
            best, best_score = child, s
    return best


def most_visited(node: Node) -> Node | None:
    """The child to commit: most visits ``n``; ties broken by higher ``q``, then expansion order."""
    best: Node | None = None
    for child in node.children:
        if best is None or child.n > best.n or (child.n == best.n and child.q > best.q):
            best = child
    return best


def best_valued(node: Node, floor: float = -1.0) -> Node | None:
    """The fast profile's commit: the most visited child whose value passes ``floor`` (ties: higher q);
    when none does, the visited child with the highest value.

    With a budget of a few searches, visit counts mostly follow the prior and say nothing about the judge;
    among acceptable children the prior still picks the likeliest text. No child visited: the most visited."""
    ok = [c for c in node.children if c.fn >= 1 and c.q >= floor]
    if ok:
        return max(ok, key=lambda c: (c.n, c.q))
    visited = [c for c in node.children if c.fn >= 1]
    if visited:
        return max(visited, key=lambda c: (c.q, c.n))
    return most_visited(node)


def chosen(node: Node, rule: str = "visits", floor: float = -1.0) -> Node | None:
    """The child a commit takes: ``visits`` (paper: most visited) or ``value`` (``best_valued``)."""
    return best_valued(node, floor) if rule == "value" else most_visited(node)


def early_stop(node: Node, T_m: int, V: float, rule: str = "visits", floor: float = -1.0) -> bool:
    """True when the child a commit would take has more than ``T_m`` real visits and value above ``V``."""
    best = chosen(node, rule, floor)
    return best is not None and best.fn > T_m and best.q > V
