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

from ..validate import require_bool, require_finite, require_float, require_int, require_shape

__all__ = ["Tree", "TreeBatch", "parse_tree", "batch_trees", "tree_static", "require_tree", "require_tree_states"]


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


def _post_order(root: tuple[str, list]) -> list[tuple[str, list]]:
    """Every node of a nested tree, children before parents, left to right (iterative: no depth limit)."""
    order: list[tuple[str, list]] = []
    stack: list[tuple[tuple[str, list], bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        stack.append((node, True))
        stack.extend((child, False) for child in reversed(node[1]) if not isinstance(child, str))
    return order


def _collapse(root: tuple[str, list]) -> Any:
    """The authors' preprocessing: drop pre-terminals, collapse unary chains (lowest label survives)."""
    done: dict[int, Any] = {}  # id(node) -> its collapsed form (a token or a (label, children) node)
    for node in _post_order(root):
        label, children = node
        kept = [c if isinstance(c, str) else done[id(c)] for c in children]
        done[id(node)] = kept[0] if len(kept) == 1 else (label, kept)  # a token or the lower node of a chain
    return done[id(root)]


def parse_tree(text: str, *, collapse: bool = False) -> Tree:
    """Parse and validate a bracketed constituency tree; nodes are listed bottom-up (post-order).

    Iterative throughout, so a tree of any depth (a 5,000-level chain) parses without RecursionError.
    """
    nested = _parse_nested(text)
    if collapse:
        collapsed = _collapse(nested)
        nested = collapsed if not isinstance(collapsed, str) else (nested[0], [collapsed])
    nodes = _post_order(nested)
    index = {id(node): j for j, node in enumerate(nodes)}
    leaves: list[str] = []
    labels = [label for label, _ in nodes]
    parent = [-1] * len(nodes)
    leaf_parent: list[int] = []
    first_leaf = [0] * len(nodes)
    for j, (_, children) in enumerate(nodes):  # post-order: a node's children are numbered before it
        for child in children:
            if not isinstance(child, str):
                parent[index[id(child)]] = j
    # Leaves in reading order: an iterative pre-order walk over nodes and (token, node) pairs.
    stack: list[Any] = [nested]
    while stack:
        item = stack.pop()
        if isinstance(item, _Token):
            leaves.append(item.text)
            leaf_parent.append(item.node)
            continue
        j = index[id(item)]
        first_leaf[j] = len(leaves)
        stack.extend(_Token(c, j) if isinstance(c, str) else c for c in reversed(item[1]))
    last = [0] * len(nodes)
    for i, j in enumerate(leaf_parent):
        last[j] = max(last[j], i)
    for j in range(len(nodes)):  # children first: a node's last leaf is the largest of its own and its children's
        if parent[j] >= 0:
            last[parent[j]] = max(last[parent[j]], last[j])
    spans = tuple((first_leaf[j], last[j]) for j in range(len(nodes)))
    return Tree(tuple(leaves), tuple(labels), tuple(parent), tuple(leaf_parent), spans)


class _Token(NamedTuple):
    """A token of the walk in :func:`parse_tree`, with the node whose child it is."""

    text: str
    node: int


def _check_tree(t: Tree, name: str) -> None:
    """A hand-made Tree must be a tree: consistent lengths, one root, no cycle, spans that match the leaves.

    O(n + m) with no recursion: parents are visited before children from the root (a cycle leaves nodes
    unreached), and each node's leaf count and extremes are summed up from its children.
    """
    if t.n == 0 or t.m == 0:
        raise ValueError(f"{name} must have at least one leaf and one node, got n={t.n}, m={t.m}")
    if len(t.parent) != t.m or len(t.spans) != t.m or len(t.leaf_parent) != t.n:
        raise ValueError(f"{name}: labels, parent and spans must have length m={t.m} and leaf_parent length n={t.n}")
    if any(not -1 <= p < t.m for p in t.parent) or any(not 0 <= p < t.m for p in t.leaf_parent):
        raise ValueError(f"{name}: parent must lie in [-1, {t.m}) and leaf_parent in [0, {t.m})")
    if sum(p < 0 for p in t.parent) != 1:
        raise ValueError(f"{name} must have exactly one root (parent -1), got {sum(p < 0 for p in t.parent)}")
    children: list[list[int]] = [[] for _ in range(t.m)]
    for j, p in enumerate(t.parent):
        if p >= 0:
            children[p].append(j)
    top_down = [t.parent.index(-1)]
    for j in top_down:
        top_down.extend(children[j])
    if len(top_down) != t.m:
        unreached = sorted(set(range(t.m)) - set(top_down))
        raise ValueError(f"{name}: the parent links of node {unreached[0]} form a cycle")
    low, high, count = [t.n] * t.m, [-1] * t.m, [0] * t.m
    for i, j in enumerate(t.leaf_parent):
        low[j], high[j], count[j] = min(low[j], i), max(high[j], i), count[j] + 1
    for j in reversed(top_down):
        p = t.parent[j]
        if p >= 0:
            low[p], high[p], count[p] = min(low[p], low[j]), max(high[p], high[j]), count[p] + count[j]
    for j in range(t.m):
        if count[j] == 0 or (low[j], high[j]) != tuple(t.spans[j]) or count[j] != high[j] - low[j] + 1:
            raise ValueError(f"{name}: node {j} ({t.labels[j]}) has span {t.spans[j]} but its {count[j]} leaves "
                             f"lie in [{low[j]}, {high[j]}]")


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


def _euler_tour(t: Tree) -> tuple[list[int], list[int], list[int]]:
    """Entry and exit times of an iterative depth-first walk (k lies in j's subtree iff tin[j] <= tin[k] <= tout[j])
    and depth + 1 of every node (root = 1)."""
    children: list[list[int]] = [[] for _ in range(t.m)]
    for j, p in enumerate(t.parent):
        if p >= 0:
            children[p].append(j)
    tin, tout, depth1 = [0] * t.m, [0] * t.m, [0] * t.m
    root = t.parent.index(-1)
    depth1[root] = 1
    stack, clock = [(root, False)], 0
    while stack:
        j, done = stack.pop()
        if done:
            tout[j] = clock - 1
            continue
        tin[j], clock = clock, clock + 1
        stack.append((j, True))
        for c in children[j]:
            depth1[c] = depth1[j] + 1
            stack.append((c, False))
    return tin, tout, depth1


def _tree_tensors(t: Tree, n: int, m: int, *, xp) -> dict[str, Any]:
    """One tree's incidence tensors padded to n leaves and m nodes (array expressions, no per-entry loop)."""
    tin, tout, depth1 = _euler_tour(t)
    pad = m - t.m
    def col(values: list[int], fill: int) -> Any:
        return xp.asarray(list(values) + [fill] * pad, dtype=xp.int64)  # (M,)
    start, end = col([s for s, _ in t.spans], 1), col([e for _, e in t.spans], 0)  # padded nodes: empty span
    tin_, tout_, depth_ = col(tin, 1), col(tout, 0), col(depth1, 0)
    leaf = xp.arange(n, dtype=xp.int64)[:, None]  # (N, 1)
    leaf_depth = xp.asarray([depth1[p] for p in t.leaf_parent] + [0] * (n - t.n), dtype=xp.int64)  # (N,)
    leaf_valid = xp.arange(n) < t.n  # (N,)
    node_valid = xp.arange(m) < t.m  # (M,)
    mem = leaf_valid[:, None] & (start[None, :] <= leaf) & (leaf <= end[None, :])  # (N, M) l_i in R(x_j)
    sub = (node_valid[:, None] & node_valid[None, :] & (tin_[:, None] <= tin_[None, :])
           & (tin_[None, :] <= tout_[:, None]))  # (M, M) [j, k]: k in the subtree of j
    path = mem[:, :, None] & mem[:, None, :] & sub[None, :, :]  # (N, M, M)
    zero = xp.zeros((n, m), dtype=xp.int64)
    return {"leaf_valid": leaf_valid, "node_valid": node_valid, "membership": mem, "subtree": sub, "path": path,
            "path_len": xp.where(mem, leaf_depth[:, None] - depth_[None, :] + 1, zero),  # (N, M) |V^i_j|
            "span_len": xp.sum(xp.astype(mem, xp.int64), axis=0),  # (M,)
            "horizontal": xp.where(mem, leaf - start[None, :] + 1, zero),  # (N, M) 1-based position in the span
            "depth1": xp.where(mem, xp.broadcast_to(depth_[None, :], (n, m)), zero)}  # (N, M)


def batch_trees(trees: Sequence[Tree | str], *, xp, collapse: bool = False) -> TreeBatch:
    """Pad a list of trees (parsed or bracket strings) into one :class:`TreeBatch` on ``xp``.

    Iterative and vectorised: a 5,000-level chain batches in well under a second (its ``path`` tensor
    has N M^2 entries, which bounds the sizes that fit in memory, not the depth).
    """
    if isinstance(trees, (str, Tree)):
        raise TypeError("trees must be a sequence of trees (a list of Tree or bracket strings), "
                        f"got a single {type(trees).__name__}")
    if len(trees) == 0:
        raise ValueError("trees must hold at least one tree")
    parsed = []
    for k, t in enumerate(trees):
        if isinstance(t, str):
            t = parse_tree(t, collapse=collapse)
        elif not isinstance(t, Tree):
            raise TypeError(f"trees[{k}] must be a Tree or a bracket string, got {type(t).__name__}")
        else:
            _check_tree(t, f"trees[{k}]")
        parsed.append(t)
    n = max(t.n for t in parsed)
    m = max(t.m for t in parsed)
    per_tree = [_tree_tensors(t, n, m, xp=xp) for t in parsed]
    return TreeBatch(**{f: xp.stack([p[f] for p in per_tree], axis=0) for f in TreeBatch._fields})


def require_tree(tree: Any, name: str = "tree") -> None:
    """``tree`` must be a :class:`TreeBatch` with boolean masks and integer counts of consistent shapes."""
    if not isinstance(tree, TreeBatch):
        raise TypeError(f"{name} must be a TreeBatch (from batch_trees), got {type(tree).__name__}")
    for field in ("leaf_valid", "node_valid", "membership", "subtree", "path"):
        require_bool(f"{name}.{field}", getattr(tree, field))
    for field in ("path_len", "span_len", "horizontal", "depth1"):
        require_int(f"{name}.{field}", getattr(tree, field))
    require_shape(f"{name}.membership", tree.membership, ["batch", "leaves", "nodes"], [None, None, None])
    b, n, m = tree.membership.shape
    for field, axes, want in (("leaf_valid", ["batch", "leaves"], [b, n]), ("node_valid", ["batch", "nodes"], [b, m]),
                              ("subtree", ["batch", "nodes", "nodes"], [b, m, m]),
                              ("path", ["batch", "leaves", "nodes", "nodes"], [b, n, m, m]),
                              ("path_len", ["batch", "leaves", "nodes"], [b, n, m]),
                              ("span_len", ["batch", "nodes"], [b, m]),
                              ("horizontal", ["batch", "leaves", "nodes"], [b, n, m]),
                              ("depth1", ["batch", "leaves", "nodes"], [b, n, m])):
        require_shape(f"{name}.{field}", getattr(tree, field), axes, want)


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
    require_tree(tree)
    b, n, m = tree.membership.shape
    require_float("x_leaves", x_leaves)
    require_float("x_nodes", x_nodes)
    require_shape("x_leaves", x_leaves, ["batch", "leaves", "d_model"], [b, n, None])
    d = x_leaves.shape[2]
    require_shape("x_nodes", x_nodes, ["batch", "nodes", "d_model"], [b, m, d])
    if d == 0:
        raise ValueError(f"x_leaves must have d_model >= 1, got shape {tuple(x_leaves.shape)}")
    require_finite("x_leaves", x_leaves)
    require_finite("x_nodes", x_nodes)
    if n_heads < 1 or d % n_heads:
        raise ValueError(f"d_model={d} must be divisible by n_heads={n_heads} (>= 1)")
    return b, n, m, d
