"""Constituency trees as attention inputs: parsing, validation, and the static incidence tensors.

Tree-structured attention with hierarchical accumulation (Nguyen, Joty, Hoi, Socher, ICLR 2020,
arXiv:2002.08046v1) reads a constituency tree as ``n`` leaves (the tokens) and ``m`` non-terminal
nodes. Everything the mechanism needs from the tree is integer or boolean, never differentiated,
and computed here once, on the host, by walking the tree (loops over nodes are fine here: this is
the data pipeline, not the hot path). The forward passes then use only array expressions.

Axes: B batch (trees), N leaves (padded), M nodes (padded).

Node order is bottom-up (post-order): every node comes after all of its descendants and the root
is last, as in the authors' pipeline (``reverse_node``; spec §2.1). The mathematics below does not
depend on the order (paths are read from the tree's parent links, not from prefix sums), but the
order is kept so that tensors line up with the authors' code.

Static tensors of a :class:`TreeBatch` (paper symbols in brackets; ``i`` a leaf, ``j, t`` nodes):

* ``membership[b, i, j]``  leaf i lies in node j's span, i.e. l_i ∈ R(x_j)
* ``subtree[b, j, t]``     node t is node j or one of its descendants, x_t ∈ R(x_j)
* ``path[b, i, j, t]``     node t is on the path from leaf i up to node j (both ends inclusive):
                           membership[i, j] and membership[i, t] and subtree[j, t]  [t ∈ V^i_j]
* ``path_len[b, i, j]``    |V^i_j| = Σ_t path[i, j, t]                (0 outside the span)
* ``span_len[b, j]``       |L ∩ R(x_j)|, the number of leaves of node j
* ``horizontal[b, i, j]``  |H^i_j| = 1-based position of leaf i inside node j's span (0 outside)
* ``depth1[b, j, ...]``    depth of node j plus one (root = 1), broadcast over leaves inside
                           the span: the authors' code's "vertical" index (spec §2.1, T1)
* ``leaf_valid[b, i]``, ``node_valid[b, j]``: padding masks.

Padded nodes contain no leaf (their membership column is all False), unlike the authors' code,
whose padded span [0, 0] nominally contains leaf 0 (harmless there, as every use is masked).

Bracket syntax: ``(LABEL child child ...)`` where a child is a token or a bracketed subtree,
e.g. ``(S (NP the cat) (VP sat))``. With ``collapse=True`` the authors' preprocessing is applied
(spec §2.1, T7): a pre-terminal (a node whose only child is one token) is dropped, and a unary
chain (a node whose only child is a node) is collapsed into its lowest node, keeping the lowest
label; if no node survives, one node spanning every leaf is made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

from ..validate import require_float, require_shape

__all__ = ["Tree", "TreeBatch", "parse_tree", "batch_trees", "tree_static", "require_tree_states"]


@dataclass(frozen=True)
class Tree:
    """One parsed tree: tokens, bottom-up node labels, parent links and inclusive leaf spans."""

    leaves: tuple[str, ...]  # (n,) tokens
    labels: tuple[str, ...]  # (m,) node labels, bottom-up (root last)
    parent: tuple[int, ...]  # (m,) parent node index, -1 for the root
    leaf_parent: tuple[int, ...]  # (n,) lowest node containing each leaf
    spans: tuple[tuple[int, int], ...]  # (m,) inclusive leaf span [s_j, e_j]

    @property
    def n(self) -> int:
        return len(self.leaves)

    @property
    def m(self) -> int:
        return len(self.labels)

    def ancestors(self, j: int) -> list[int]:
        """Node j and its ancestors, bottom-up."""
        chain = [j]
        while self.parent[chain[-1]] >= 0:
            chain.append(self.parent[chain[-1]])
        return chain


def _tokenize(text: str) -> list[str]:
    return text.replace("(", " ( ").replace(")", " ) ").split()


def _parse_nested(text: str) -> tuple[str, list]:
    """Bracket string -> (label, children) with children tokens (str) or nested tuples."""
    if not isinstance(text, str):
        raise TypeError(f"tree must be a bracketed string such as '(S (NP the cat) (VP sat))', got {type(text).__name__}")
    tokens = _tokenize(text)
    if not tokens:
        raise ValueError("tree is empty: expected a bracketed string such as '(S (NP the cat) (VP sat))'")
    if tokens.count("(") != tokens.count(")"):
        raise ValueError(f"tree has unbalanced brackets: {tokens.count('(')} '(' and {tokens.count(')')} ')' in {text!r}")
    if tokens[0] != "(":
        raise ValueError(f"tree must start with '(' (a labelled constituent), got {tokens[0]!r} in {text!r}")
    stack: list[tuple[str, list]] = []
    root = None
    k = 0
    while k < len(tokens):
        tok = tokens[k]
        if root is not None:
            raise ValueError(f"tree has text after the root constituent closes: {' '.join(tokens[k:])!r} in {text!r}")
        if tok == "(":
            if k + 1 >= len(tokens) or tokens[k + 1] in "()":
                raise ValueError(f"tree has a constituent without a label at token {k} in {text!r}")
            stack.append((tokens[k + 1], []))
            k += 2
            continue
        if tok == ")":
            if not stack:
                raise ValueError(f"tree has unbalanced brackets: ')' at token {k} closes nothing in {text!r}")
            label, children = stack.pop()
            if not children:
                raise ValueError(f"tree has an empty constituent ({label}) with no leaves in {text!r}")
            if stack:
                stack[-1][1].append((label, children))
            else:
                root = (label, children)
            k += 1
            continue
        if not stack:
            raise ValueError(f"tree has a token {tok!r} outside any constituent in {text!r}")
        stack[-1][1].append(tok)
        k += 1
    if stack or root is None:
        raise ValueError(f"tree has unbalanced brackets: {len(stack)} constituent(s) never closed in {text!r}")
    return root


def _collapse(node: Any) -> Any:
    """The authors' preprocessing: drop pre-terminals, collapse unary chains (lowest label survives)."""
    if isinstance(node, str):
        return node
    label, children = node
    children = [_collapse(c) for c in children]
    if len(children) == 1:
        return children[0]  # a token (pre-terminal dropped) or the lower node of a unary chain
    return (label, children)


def parse_tree(text: str, *, collapse: bool = False) -> Tree:
    """Parse and validate a bracketed constituency tree; nodes are listed bottom-up (post-order)."""
    nested = _parse_nested(text)
    if collapse:
        collapsed = _collapse(nested)
        nested = collapsed if not isinstance(collapsed, str) else (nested[0], [collapsed])
    leaves: list[str] = []
    labels: list[str] = []
    spans: list[tuple[int, int]] = []
    parent: list[int] = []
    leaf_parent: list[int] = []

    def visit(node: tuple[str, list]) -> int:
        label, children = node
        start = len(leaves)
        own_leaves, child_nodes = [], []
        for child in children:
            if isinstance(child, str):
                own_leaves.append(len(leaves))
                leaves.append(child)
                leaf_parent.append(-1)
            else:
                child_nodes.append(visit(child))
        j = len(labels)
        labels.append(label)
        spans.append((start, len(leaves) - 1))
        parent.append(-1)
        for i in own_leaves:
            leaf_parent[i] = j
        for c in child_nodes:
            parent[c] = j
        return j

    visit(nested)
    if collapse and len(labels) == 0:  # pragma: no cover - visit always makes the root
        raise AssertionError("no node survived")
    return Tree(tuple(leaves), tuple(labels), tuple(parent), tuple(leaf_parent), tuple(spans))


def _check_tree(t: Tree, name: str) -> None:
    """A hand-made Tree must be a tree: consistent lengths, one root, no cycle, spans that match the leaves."""
    if t.n == 0 or t.m == 0:
        raise ValueError(f"{name} must have at least one leaf and one node, got n={t.n}, m={t.m}")
    if len(t.parent) != t.m or len(t.spans) != t.m or len(t.leaf_parent) != t.n:
        raise ValueError(f"{name}: labels, parent and spans must have length m={t.m} and leaf_parent length n={t.n}")
    if any(not -1 <= p < t.m for p in t.parent) or any(not 0 <= p < t.m for p in t.leaf_parent):
        raise ValueError(f"{name}: parent must lie in [-1, {t.m}) and leaf_parent in [0, {t.m})")
    if sum(p < 0 for p in t.parent) != 1:
        raise ValueError(f"{name} must have exactly one root (parent -1), got {sum(p < 0 for p in t.parent)}")
    for j in range(t.m):
        k, steps = j, 0
        while t.parent[k] >= 0:
            k, steps = t.parent[k], steps + 1
            if steps > t.m:
                raise ValueError(f"{name}: the parent links of node {j} form a cycle")
    for j in range(t.m):
        inside = [i for i in range(t.n) if j in t.ancestors(t.leaf_parent[i])]
        if not inside or (inside[0], inside[-1]) != tuple(t.spans[j]) or len(inside) != inside[-1] - inside[0] + 1:
            raise ValueError(f"{name}: node {j} ({t.labels[j]}) has span {t.spans[j]} but its leaves are {inside}")


class TreeBatch(NamedTuple):
    """Static incidence tensors of a padded batch of trees (see the module docstring)."""

    leaf_valid: Any  # (B, N) bool
    node_valid: Any  # (B, M) bool
    membership: Any  # (B, N, M) bool
    subtree: Any  # (B, M, M) bool, [j, t]: t in the subtree of j
    path: Any  # (B, N, M, M) bool, [i, j, t]: t on the path leaf i -> node j
    path_len: Any  # (B, N, M) int64
    span_len: Any  # (B, M) int64
    horizontal: Any  # (B, N, M) int64
    depth1: Any  # (B, N, M) int64


def batch_trees(trees: Sequence[Tree | str], *, xp, collapse: bool = False) -> TreeBatch:
    """Pad a list of trees (parsed or bracket strings) into one :class:`TreeBatch` on ``xp``."""
    if len(trees) == 0:
        raise ValueError("trees must hold at least one tree")
    trees = [parse_tree(t, collapse=collapse) if isinstance(t, str) else t for t in trees]
    for k, t in enumerate(trees):
        if not isinstance(t, Tree):
            raise TypeError(f"trees[{k}] must be a Tree or a bracket string, got {type(t).__name__}")
        _check_tree(t, f"trees[{k}]")
    n = max(t.n for t in trees)
    m = max(t.m for t in trees)
    fields: dict[str, list] = {f: [] for f in TreeBatch._fields}
    for t in trees:
        anc = [set(t.ancestors(j)) for j in range(t.m)]  # anc[t] = t and its ancestors
        leaf_anc = [anc[t.leaf_parent[i]] for i in range(t.n)]
        depth1 = [len(anc[j]) for j in range(t.m)]
        mem = [[i < t.n and j < t.m and j in leaf_anc[i] for j in range(m)] for i in range(n)]
        sub = [[j < t.m and k < t.m and j in anc[k] for k in range(m)] for j in range(m)]
        path = [[[mem[i][j] and mem[i][k] and sub[j][k] for k in range(m)] for j in range(m)] for i in range(n)]
        fields["leaf_valid"].append([i < t.n for i in range(n)])
        fields["node_valid"].append([j < t.m for j in range(m)])
        fields["membership"].append(mem)
        fields["subtree"].append(sub)
        fields["path"].append(path)
        fields["path_len"].append([[sum(path[i][j]) for j in range(m)] for i in range(n)])
        fields["span_len"].append([sum(mem[i][j] for i in range(n)) for j in range(m)])
        fields["horizontal"].append([[sum(mem[r][j] for r in range(i + 1)) if mem[i][j] else 0 for j in range(m)]
                                     for i in range(n)])
        fields["depth1"].append([[depth1[j] if mem[i][j] else 0 for j in range(m)] for i in range(n)])
    bools = ("leaf_valid", "node_valid", "membership", "subtree", "path")
    return TreeBatch(**{f: xp.asarray(v, dtype=xp.bool if f in bools else xp.int64) for f, v in fields.items()})


def tree_static(tree: TreeBatch) -> dict[str, Any]:
    """The batch's arrays as ``Case.static`` entries (``tree.<field>``), so fixtures can store them."""
    return {f"tree.{k}": v for k, v in tree._asdict().items()}


def tree_from_static(static: dict[str, Any]) -> TreeBatch:
    """Inverse of :func:`tree_static`."""
    return TreeBatch(**{k: static[f"tree.{k}"] for k in TreeBatch._fields})


def require_tree_states(x_leaves: Any, x_nodes: Any, tree: TreeBatch, n_heads: int) -> tuple[int, int, int, int]:
    """Leaf states (B, N, D) and node states (B, M, D) must fit ``tree`` and split into ``n_heads``.

    Returns (B, N, M, D).
    """
    b, n, m = tree.membership.shape
    require_float("x_leaves", x_leaves)
    require_float("x_nodes", x_nodes)
    require_shape("x_leaves", x_leaves, ["batch", "leaves", "d_model"], [b, n, None])
    d = x_leaves.shape[2]
    require_shape("x_nodes", x_nodes, ["batch", "nodes", "d_model"], [b, m, d])
    if d % n_heads:
        raise ValueError(f"d_model={d} must be divisible by n_heads={n_heads}")
    return b, n, m, d
