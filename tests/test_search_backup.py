"""Backup: running means along the path, embeddings, and the Eq. 2 similarity update."""

import numpy as np
import pytest

from rainlocal.search.backup import backup, cosine, similarity_update, update_embedding, visit
from rainlocal.search.tree import Node


def _chain():
    root = Node()
    a = root.add_child((1,), 0.5, 0.5)
    b = a.add_child((2,), 1.0, 1.0)
    sib = root.add_child((3,), 0.5, 0.5)
    return root, a, b, sib


def test_backup_keeps_running_means_along_the_path():
    root, a, b, _ = _chain()
    backup([root, a, b], 1.0)
    backup([root, a], -1.0)
    backup([root, a, b], 0.5)
    assert (root.n, root.fn) == (3, 3) and root.q == pytest.approx(0.5 / 3)
    assert (a.n, a.fn) == (3, 3) and a.q == pytest.approx(0.5 / 3)
    assert (b.n, b.fn) == (2, 2) and b.q == pytest.approx(0.75)


def test_backup_leaves_nodes_off_the_path_alone():
    root, a, b, sib = _chain()
    backup([root, a, b], -1.0)
    assert (sib.n, sib.fn, sib.q) == (0, 0, 0.0)


def test_embedding_is_running_mean_over_real_visits():
    node = Node()
    for v in ([1.0, 0.0], [0.0, 1.0], [0.0, 1.0]):
        visit(node, 0.0)
        update_embedding(node, np.array(v))
    np.testing.assert_allclose(node.e, [1 / 3, 2 / 3])


def test_paper_worked_example_fresh_sibling_takes_half_a_visit():
    # gamma = 1, sim = 0.5, s = -1: a fresh sibling goes from q = 0, n = 0 to q = -0.5, n = 0.5.
    x = Node()
    similarity_update(x, 1.0 * 0.5, -1.0)
    assert x.q == pytest.approx(-0.5)
    assert x.n == pytest.approx(0.5)
    assert x.fn == 0


def test_worked_example_through_backup_with_embeddings():
    root = Node()
    y = root.add_child((1,), 0.5, 0.5)
    x = root.add_child((2,), 0.5, 0.5)
    x.e = np.array([0.5, np.sqrt(3) / 2])  # cos(e_x, e_y) = 0.5 with e_y = [1, 0]
    shared = backup([root, y], -1.0, [np.array([1.0, 0.0])], similarity=True, gamma=1.0, threshold=0.5)
    assert shared == 1
    assert (x.q, x.n, x.fn) == (pytest.approx(-0.5), pytest.approx(0.5), 0)
    assert (y.q, y.n, y.fn) == (-1.0, 1.0, 1)


def test_similarity_update_is_eq2_for_a_visited_sibling():
    x = Node(n=2.0, fn=2, q=0.5)
    w = 0.2 * 0.97
    similarity_update(x, w, 1.0)
    assert x.q == pytest.approx((0.5 * 2 + w * 1.0) / (2 + w))
    assert x.n == pytest.approx(2 + w)
    assert x.fn == 2


def test_similarity_skips_siblings_below_threshold_and_without_embedding():
    root = Node()
    y = root.add_child((1,), 0.3, 0.3)
    near = root.add_child((2,), 0.3, 0.3)
    far = root.add_child((3,), 0.3, 0.3)
    fresh = root.add_child((4,), 0.1, 0.1)
    for node in (near, far):
        node.n, node.fn, node.q = 1.0, 1, 1.0
    near.e = np.array([1.0, 0.1])
    far.e = np.array([0.0, 1.0])
    backup([root, y], -1.0, [np.array([1.0, 0.0])], similarity=True, gamma=0.2, threshold=0.95)
    sim = cosine(np.array([1.0, 0.0]), near.e)
    assert near.n == pytest.approx(1 + 0.2 * sim) and near.q < 1.0
    assert (far.n, far.q) == (1.0, 1.0)
    assert (fresh.n, fresh.q) == (0.0, 0.0)


def test_similarity_off_updates_embeddings_but_not_siblings():
    root = Node()
    y = root.add_child((1,), 0.5, 0.5)
    x = root.add_child((2,), 0.5, 0.5)
    x.n, x.fn, x.q, x.e = 1.0, 1, 1.0, np.array([1.0, 0.0])
    backup([root, y], -1.0, [np.array([1.0, 0.0])], similarity=False)
    assert (x.n, x.q) == (1.0, 1.0)
    np.testing.assert_allclose(y.e, [1.0, 0.0])
