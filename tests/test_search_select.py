"""Selection score (Eq. 1, reference-code form) and the commit / early-stop rules."""


import pytest

from rainlocal.search.select import (
    early_stop,
    exploration,
    most_visited,
    scaled_value,
    select_child,
    selection_score,
)
from rainlocal.search.tree import Node


def _parent(*children: dict, n: float = 0.0) -> Node:
    root = Node(n=n)
    for kw in children:
        c = root.add_child((len(root.children),), kw.pop("p", 0.1), 0.0)
        for k, v in kw.items():
            setattr(c, k, v)
    return root


def test_unvisited_child_value_term_is_zero_whatever_its_q():
    child = Node(q=0.9, n=0.0)
    assert scaled_value(child) == 0.0


def test_visited_child_value_is_scaled_from_minus_one_one_to_unit_interval():
    assert scaled_value(Node(q=-1.0, n=1)) == 0.0
    assert scaled_value(Node(q=0.0, n=2)) == 0.5
    assert scaled_value(Node(q=1.0, n=3)) == 1.0


def test_pseudo_visited_child_counts_as_visited():
    assert scaled_value(Node(q=-0.5, n=0.5, fn=0)) == pytest.approx(0.25)


def test_exploration_term_uses_prior_parent_n_and_child_n():
    child = Node(p=0.3, n=3)
    assert exploration(child, parent_n=16, c=2.0) == pytest.approx(2 * 0.3 * 4 / 4)
    assert selection_score(child, 16, 2.0) == pytest.approx(0.5 + 0.6)


def test_select_prefers_unvisited_high_prior_child_over_badly_scored_one():
    root = _parent(dict(p=0.6, n=1, fn=1, q=-1.0), dict(p=0.4), n=2)
    # visited: 0 + 2*0.6*sqrt(2)/2 = 0.85 ; unvisited: 0 + 2*0.4*sqrt(2) = 1.13
    assert select_child(root, 2.0) is root.children[1]


def test_select_exploits_a_well_scored_child():
    root = _parent(dict(p=0.2, n=4, fn=4, q=1.0), dict(p=0.8), n=5)
    # visited: 1 + 2*0.2*sqrt(5)/5 = 1.18 ; unvisited: 2*0.8*sqrt(5) = 3.58 -> exploration wins at c=2
    assert select_child(root, 2.0) is root.children[1]
    # with little exploration the good child wins
    assert select_child(root, 0.1) is root.children[0]


def test_select_breaks_ties_by_expansion_order():
    root = _parent(dict(p=0.5), dict(p=0.5), n=1)
    assert select_child(root, 2.0) is root.children[0]


def test_most_visited_breaks_ties_by_q():
    root = _parent(dict(n=5, fn=5, q=0.1), dict(n=7, fn=7, q=-0.2), dict(n=7, fn=6, q=0.4))
    assert most_visited(root) is root.children[2]


def test_most_visited_counts_pseudo_visits():
    root = _parent(dict(n=3.0, fn=3, q=0.1), dict(n=3.4, fn=2, q=0.0))
    assert most_visited(root) is root.children[1]


def test_early_stop_needs_more_than_T_m_real_visits_and_value_above_V():
    assert early_stop(_parent(dict(n=7, fn=7, q=0.9)), T_m=6, V=0.8)
    assert not early_stop(_parent(dict(n=6, fn=6, q=0.9)), T_m=6, V=0.8)  # fn == T_m is not enough
    assert not early_stop(_parent(dict(n=7, fn=7, q=0.8)), T_m=6, V=0.8)  # q == V is not enough
    assert not early_stop(_parent(dict(n=9, fn=5, q=1.0)), T_m=6, V=0.8)  # pseudo-visits do not count
    assert not early_stop(Node(), T_m=6, V=0.8)
