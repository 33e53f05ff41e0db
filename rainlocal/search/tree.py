"""The RAIN search tree: plain data, no model calls.

A node is one *token set* (a short run of tokens) appended to its parent's text. The root stands for
the committed answer so far; after a commit the chosen child becomes the new root and keeps its whole
subtree with all statistics (``reroot``).

``depth`` is the absolute index of the node's token set in the answer, counted from 0 and never reset
by re-rooting: the first answer token set has depth 0, the root of an empty answer depth -1. The
length of a token set depends only on its depth (``RainSettings.set_lengths``: 1, 2, 4, then 10).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np


@dataclass(eq=False)
class Node:
    """One token set with the statistics the paper names.

    p        prior from the language model (normalised among siblings; mixed with uniform at the root)
    n        visit count: real visits plus fractional similarity pseudo-visits (Eq. 2)
    fn       real visit count (searches whose path went through this node)
    q        value: running mean of the self-evaluation scores backed up through the node
    e        embedding: running mean over real visits of the embedding of the text from this node's
             start through the rollout (None until the first real visit that was embedded)
    """

    tokens: tuple[int, ...] = ()
    p: float = 1.0
    depth: int = -1
    parent: "Node | None" = None
    n: float = 0.0
    fn: int = 0
    q: float = 0.0
    e: np.ndarray | None = None
    children: list["Node"] = field(default_factory=list)
    #: Unnormalised probability the prior came from (joint probability of the set; greedy clamped).
    raw: float = 0.0
    #: For nodes whose children are single tokens: the node's most likely next tokens and their
    #: log-probabilities, kept for dynamic node addition without another model call.
    top_ids: np.ndarray | None = None
    top_lps: np.ndarray | None = None
    #: Cached answers to "does the answer end inside this node?" and "what does it read as?".
    terminal: bool | None = None
    text: str | None = None

    @property
    def is_leaf(self) -> bool:
        return not self.children

    @property
    def is_root(self) -> bool:
        return self.parent is None

    def add_child(self, tokens: tuple[int, ...], p: float, raw: float) -> "Node":
        child = Node(tokens=tuple(tokens), p=float(p), depth=self.depth + 1, parent=self, raw=float(raw))
        self.children.append(child)
        return child

    def child_tokens(self) -> set[tuple[int, ...]]:
        return {c.tokens for c in self.children}

    def path_from_root(self) -> list["Node"]:
        """Nodes from the current root down to this node (both included)."""
        path = []
        node: Node | None = self
        while node is not None:
            path.append(node)
            node = node.parent
        path.reverse()
        return path

    def siblings(self) -> Iterator["Node"]:
        if self.parent is None:
            return iter(())
        return (c for c in self.parent.children if c is not self)

    def size(self) -> int:
        """Number of nodes in this subtree (for diagnostics and tests)."""
        return 1 + sum(c.size() for c in self.children)


def path_tokens(path: list[Node]) -> list[int]:
    """The tokens a root-to-leaf path adds to the answer (the root's own tokens are committed)."""
    out: list[int] = []
    for node in path[1:]:
        out.extend(node.tokens)
    return out


def reroot(child: Node) -> Node:
    """Make ``child`` the root: detach it from its parent, keeping its subtree and statistics.

    The caller re-mixes the new root's children priors with the uniform distribution
    (``expand.mix_root_priors``), as the reference code does after every commit.
    """
    if child.parent is not None:
        parent = child.parent
        parent.children = [c for c in parent.children if c is not child]
        child.parent = None
    return child
