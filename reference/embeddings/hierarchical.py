"""Hierarchical embeddings of Tree-structured attention (Nguyen, Joty, Hoi, Socher, ICLR 2020, arXiv:2002.08046v1).

For a leaf i inside the span of node j, the paper builds one vector from two learned tables,

    E[i, j] = [ e^v_{|V^i_j|} ; e^h_{|H^i_j|} ]      if l_i ∈ R(x_j),   0 otherwise      Eq. (4)

where V^i_j is the set of nodes on the path from leaf i up to node j (both ends included) and
H^i_j the set of leaves of node j that lie left of leaf i or are leaf i. The vector has the width
of one attention head and is shared by all heads; it is added to the interpolated node states
before the upward cumulative average (attention.tree). Equation numbers follow the docs pages;
the paper's own text and numbering could not be re-read (see the docs page).

Axes: B batch, N leaves, M nodes, W table width (half a head), Dh = 2 W.
Symbols → names: e^v → ``e_vertical`` (rows for |V| = 1, 2, …), e^h → ``e_horizontal`` (rows
for |H| = 1, 2, …), E → ``e``, |V^i_j| → ``tree.path_len``, |H^i_j| → ``tree.horizontal``.
Indices beyond a table's last row are clamped to it (the code clamps at 50 and 100).

Backward: the gather's VJP is a scatter-add of the (masked) halves of dE into the rows that were
read: de_vertical[r] = Σ_{i,j: row_v[i,j] = r, i ∈ R(j)} dE_v[i, j], likewise for e_horizontal.

Defaults and what they cite: the paper's body could not be read (findings.md), so the defaults are the
authors' code (nxphi47/tree_transformer, spec §2.3, T1, T6) and the spec's reading of the paper is the
named option ``vertical="paper_recalled", layout="concat"`` (``embeddings.hierarchical.paper_recalled``):

* ``vertical="code"``: the code indexes the vertical table with depth(j)+1 (a suffix count over the
  bottom-up node list), which does not depend on the leaf; ``"paper_recalled"`` uses the path length
  |V^i_j| from leaf i to node j, as the spec recalls the paper.
* ``layout="interleave"``: the code interleaves the halves as (h_0, v_0, h_1, v_1, …);
  ``"concat"`` is the recalled paper's [v; h].

**Deviations**:

* The code keeps one table of 1 + 100 + 1 + 50 rows per encoder and slices its columns per layer,
  with row 0 as padding; two tables per layer here are the same function with a simpler layout.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..attention.tree_input import TreeBatch, require_tree
from ..backend import array_namespace, scatter_add
from ..random import normal
from ..validate import require_finite, require_float, require_shape

VERTICALS = ("code", "paper_recalled")
LAYOUTS = ("interleave", "concat")


class HierarchicalCache(NamedTuple):
    rows_v: Any  # (B*N*M,) int64 row of e_vertical read per (i, j)
    rows_h: Any  # (B*N*M,) int64
    mask: Any  # (B, N, M, 1) float, 1 where l_i ∈ R(x_j)
    n_vertical: int
    n_horizontal: int
    layout: str


def hierarchical_rows(tree: TreeBatch, n_vertical: int, n_horizontal: int, *, vertical: str = "code") -> tuple[Any, Any]:
    """0-based table rows (B, N, M) for the vertical and horizontal tables (clamped; 0 outside spans)."""
    require_tree(tree)
    xp = array_namespace(tree.path_len)
    if vertical not in VERTICALS:
        raise ValueError(f"vertical must be one of {VERTICALS}, got {vertical!r}")
    count_v = tree.path_len if vertical == "paper_recalled" else tree.depth1  # (B, N, M), 1-based inside spans

    def clamp(count: Any, top: int) -> Any:
        low, high = xp.asarray(1, dtype=xp.int64), xp.asarray(top, dtype=xp.int64)
        return xp.where(count > high, high, xp.where(count < low, low, count)) - 1  # (B, N, M)

    return clamp(count_v, n_vertical), clamp(tree.horizontal, n_horizontal)


def hierarchical_embedding_forward(e_vertical: Any, e_horizontal: Any, tree: TreeBatch, *, vertical: str = "code",
                                   layout: str = "interleave") -> tuple[Any, HierarchicalCache]:
    """E (B, N, M, 2W) from tables e_vertical (V, W) and e_horizontal (Hz, W)."""
    require_float("e_vertical", e_vertical)
    require_float("e_horizontal", e_horizontal)
    require_shape("e_vertical", e_vertical, ["n_vertical", "width"], [None, None])
    width = e_vertical.shape[1]
    require_shape("e_horizontal", e_horizontal, ["n_horizontal", "width"], [None, width])
    for name, table in (("e_vertical", e_vertical), ("e_horizontal", e_horizontal)):
        if 0 in table.shape:
            raise ValueError(f"{name} must have at least one row and one column, got shape {tuple(table.shape)}")
        require_finite(name, table)
    xp = array_namespace(e_vertical, e_horizontal)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    b, n, m = tree.membership.shape
    rows_v, rows_h = hierarchical_rows(tree, e_vertical.shape[0], e_horizontal.shape[0], vertical=vertical)
    rows_v, rows_h = xp.reshape(rows_v, (-1,)), xp.reshape(rows_h, (-1,))  # (B*N*M,)
    g_v = xp.reshape(xp.take(e_vertical, rows_v, axis=0), (b, n, m, width))  # (B, N, M, W)  e^v_{|V^i_j|}
    g_h = xp.reshape(xp.take(e_horizontal, rows_h, axis=0), (b, n, m, width))  # (B, N, M, W)  e^h_{|H^i_j|}
    if layout == "concat":
        e = xp.concat([g_v, g_h], axis=-1)  # (B, N, M, 2W)   Eq. (4): [e^v; e^h]
    else:
        e = xp.reshape(xp.stack([g_h, g_v], axis=-1), (b, n, m, 2 * width))  # (B, N, M, 2W) (h0, v0, h1, v1, ...)
    mask = xp.astype(tree.membership, e.dtype)[..., None]  # (B, N, M, 1)
    e = e * mask  # zero outside the spans
    return e, HierarchicalCache(rows_v, rows_h, mask, e_vertical.shape[0], e_horizontal.shape[0], layout)


def hierarchical_embedding_backward(de: Any, cache: HierarchicalCache) -> dict[str, Any]:
    """Gradients into both tables: {"e_vertical": (V, W), "e_horizontal": (Hz, W)}."""
    xp = array_namespace(de)
    b, n, m, dh = de.shape
    width = dh // 2
    de = de * cache.mask  # (B, N, M, 2W)   e = e * mask
    if cache.layout == "concat":
        dg_v, dg_h = de[..., :width], de[..., width:]  # (B, N, M, W) each
    else:
        pairs = xp.reshape(de, (b, n, m, width, 2))  # (B, N, M, W, 2)
        dg_h, dg_v = pairs[..., 0], pairs[..., 1]  # (B, N, M, W) each
    de_v = scatter_add(xp.reshape(dg_v, (-1, width)), cache.rows_v, cache.n_vertical)  # (V, W)
    de_h = scatter_add(xp.reshape(dg_h, (-1, width)), cache.rows_h, cache.n_horizontal)  # (Hz, W)
    return {"e_vertical": de_v, "e_horizontal": de_h}


def init_hierarchical(rng, n_vertical: int, n_horizontal: int, width: int, *, xp, dtype) -> dict[str, Any]:
    """Gaussian tables (the authors use the fairseq embedding init, N(0, width^-1/2))."""
    return {"e_vertical": normal(rng, (n_vertical, width), xp=xp, dtype=dtype, scale=width ** -0.5),
            "e_horizontal": normal(rng, (n_horizontal, width), xp=xp, dtype=dtype, scale=width ** -0.5)}
