"""eXtra hop attention of Transformer-XH: the first tokens of linked evidence sequences attend to each other.

Zhao, Xiong, Rosset, Song, Bennett, Tiwary, "Transformer-XH: Multi-Evidence Reasoning with eXtra Hop
Attention", ICLR 2020 (OpenReview r1eIiCNYwS; page 4, Eq. (8)-(9), read for spec findings.md);
authors' code microsoft/Transformer-XH at ``953d8d4``, ``transformer-xh/model/model.py`` (``GraphAttention``
l.21-85, ``TransformerXHEncoder`` l.130-164); spec attention.md §4.
The layer and node head built from these hops: :mod:`reference.attention.extra_hop_layer`.

Axes: N nodes (evidence sequences of one graph), D width, H hop heads, Dh = D / H head width,
E edges. ``adjacency`` (N, N) bool: adjacency[v, u] is True when the edge u -> v exists (v receives
from u). in(v) = {u : adjacency[v, u]}.

Variant "paper" (default: the paper's page 4 describes hop query, key and value projections, a dot-product
attention over the neighbours' [CLS], and the merge Linear([h ; hhat]) of Eq. (8); findings.md [paper];
spec §4.4 Variant B), for first-token states c (N, D):

    q = c W_hq + b_hq,  k = c W_hk + b_hk,  v = c W_hv + b_hv            separate hop projections
    hhat[v] = sum_{u in in(v)} softmax_u(q[v] . k[u] / sqrt(Dh)) v[u]    per head, neighbours only (hop attention)
    hhat[v] = 0 when in(v) is empty                                      (DGL zero-in-degree semantics)
    c'[v]   = [c[v] | hhat[v]] W_comb + b_comb                           the paper's Linear([h ; hhat]), Eq. (8)

Variant "gat" (the released code; spec §4.3, Variant A), per head j owning slice j of c:

    h[v, j] = c[v, j Dh:(j+1) Dh];  f = h W_fc                           W_fc shared by every head
    e[u->v, j] = LeakyReLU_0.2(<f[u, j], a_l[j]> + <f[v, j], a_r[j]>)    a_l on the source, a_r on the destination
    alpha = softmax over u in in(v);  m[v, j] = sum_u alpha f[u, j]      (0 when in(v) is empty)
    g[v] = ReLU(flatten_j(h[v, j] W_res + m[v, j]))
    c'[v] = [g[v] | c[v]] W_comb + b_comb                                GAT output first, then the original

Backward (derivation on docs/mechanisms/attention.extra_hop.md):

    paper: [dc_direct | dhhat] = dc' W_comb^T;  dhhat *= has_in;  dq, dk, dv = SDPA'(dhhat) with the
           adjacency as mask;  dc = dc_direct + dq W_hq^T + dk W_hk^T + dv W_hv^T
    gat:   [dg | dc_direct] = dc' W_comb^T;  dpre = dg * 1[pre > 0];  dm = dpre * has_in
           dalpha[v, u] = <dm[v], f[u]>;  df[u] += sum_v alpha[v, u] dm[v]
           de = alpha (dalpha - sum_u alpha dalpha) on edges;  ds = de * (1 if s > 0 else 0.2)
           ds_l[u] = sum_v ds[v, u];  ds_r[v] = sum_u ds[v, u];  df += ds_l a_l + ds_r a_r
           da_l = sum_v ds_l f,  da_r = sum_v ds_r f;  dW_fc = sum_{v,j} h^T df;  dW_res = sum_{v,j} h^T dpre
           dh = df W_fc^T + dpre W_res^T;  dc = dc_direct + flatten(dh)

Paper symbols: tau, eta (nodes) = v, u; h_{tau,0} = c[v]; hat-h_{tau,0} = hhat[v]; hat-W_{q,k,v} = w_hq, w_hk,
w_hv; the merge Linear = w_comb, b_comb; e_{tau eta} (edge) = adjacency[tau, eta].

**Deviations** and decisions:

* A node with no incoming edge (isolated, or a root of a directed graph) gets a zero hop message in
  both variants (DGL's reduce is not called and the field keeps its zero initialiser; spec §4.1).
  A self-loop is an ordinary edge: a node attends to itself only when adjacency[v, v] is set; none is added.
* Components never interact: the softmax runs over in(v) only.
* Not read in the paper, so chosen here and named: the score scale 1/sqrt(Dh) per hop head (the paper's
  text as recorded gives no scale), no self-edge added, per-head projections as in nn.attention.
* The code variant's GAT dropouts (``feat_drop``, ``attn_drop`` = 0.6) are constructed but never applied
  (spec X4), so the oracle has none.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..backend import MASKED_SCORE, array_namespace, one_hot
from ..nn.attention import SDPACache, merge_heads, sdpa_backward, sdpa_forward, split_heads
from ..nn.linear import LinearCache, init_linear, linear_backward, linear_forward
from ..nn.softmax import SoftmaxCache, softmax_backward, softmax_forward
from ..random import normal
from ..validate import require_bool, require_finite, require_float, require_index_range, require_params, require_shape

VARIANTS = ("paper", "gat")
PAPER_HOP_PARAMS = ("w_hq", "b_hq", "w_hk", "b_hk", "w_hv", "b_hv", "w_comb", "b_comb")
GAT_HOP_PARAMS = ("w_fc", "a_l", "a_r", "w_res", "w_comb", "b_comb")
LEAKY_SLOPE = 0.2


class PaperHopCache(NamedTuple):
    q_proj: LinearCache  # x: c (N, D)
    k_proj: LinearCache
    v_proj: LinearCache
    attention: SDPACache  # p: (1, H, N, N)
    has_in: Any  # (N, 1) 1.0 where in(v) is non-empty
    combine: LinearCache  # x: [c | hhat] (N, 2D)
    n_heads: int


class GATHopCache(NamedTuple):
    h: Any  # (N, H, Dh) head slices of c
    f: Any  # (H, N, Dh) h W_fc, heads first
    a_l: Any  # (H, Dh)
    a_r: Any  # (H, Dh)
    w_fc: Any  # (Dh, Dh)
    w_res: Any  # (Dh, Dh)
    s: Any  # (H, N, N) s_l[u] + s_r[v] at [j, v, u]
    adjacency: Any  # (N, N) bool
    softmax: SoftmaxCache  # p: alpha (H, N, N)
    has_in: Any  # (1, N, 1)
    pre: Any  # (H, N, Dh) h W_res + m
    combine: LinearCache  # x: [g | c] (N, 2D)


def adjacency_from_edges(edges: Any, n_nodes: int) -> Any:
    """(E, 2) integer pairs (u, v) meaning u -> v  ->  (N, N) bool with [v, u] set. Duplicates collapse."""
    xp = array_namespace(edges)
    require_shape("edges", edges, ["edges", "(source, destination)"], [None, 2])
    if n_nodes < 1:
        raise ValueError(f"n_nodes must be >= 1, got {n_nodes}")
    require_index_range("edges", edges, n_nodes)
    src = one_hot(edges[:, 0], n_nodes, dtype=xp.float64)  # (E, N)
    dst = one_hot(edges[:, 1], n_nodes, dtype=xp.float64)  # (E, N)
    return xp.matmul(xp.matrix_transpose(dst), src) > 0  # (N, N) [v, u]


def _check(c: Any, adjacency: Any, params: dict[str, Any], n_heads: int, names: tuple[str, ...]) -> None:
    require_float("c", c)
    require_shape("c", c, ["nodes", "d_model"], [None, None])
    if 0 in c.shape:
        raise ValueError(f"c must be non-empty (nodes, d_model >= 1), got shape {tuple(c.shape)}")
    require_finite("c", c)
    n, d = c.shape
    require_bool("adjacency", adjacency)
    require_shape("adjacency", adjacency, ["nodes (destination)", "nodes (source)"], [n, n])
    if n_heads < 1 or d % n_heads:
        raise ValueError(f"d_model={d} must be divisible by hop heads n_heads={n_heads} (>= 1)")
    require_params(params, names)
    require_shape("params['w_comb']", params["w_comb"], ["2 d_model", "d_model"], [2 * d, d])


def paper_hop_forward(c: Any, adjacency: Any, params: dict[str, Any], *, n_heads: int) -> tuple[Any, PaperHopCache]:
    """Hop attention as the paper describes it (Variant B): c (N, D) -> c' (N, D)."""
    _check(c, adjacency, params, n_heads, PAPER_HOP_PARAMS)
    xp = array_namespace(c)
    q, q_proj = linear_forward(c, params["w_hq"], params["b_hq"])  # (N, D)
    k, k_proj = linear_forward(c, params["w_hk"], params["b_hk"])  # (N, D)
    v, v_proj = linear_forward(c, params["w_hv"], params["b_hv"])  # (N, D)
    heads, attention = sdpa_forward(split_heads(q[None, ...], n_heads), split_heads(k[None, ...], n_heads),
                                    split_heads(v[None, ...], n_heads),
                                    mask=adjacency[None, None, ...])  # (1, H, N, Dh) neighbours only
    has_in = xp.astype(xp.any(adjacency, axis=1), c.dtype)[:, None]  # (N, 1)
    hhat = merge_heads(heads)[0, ...] * has_in  # (N, D) zero message without neighbours
    out, combine = linear_forward(xp.concat([c, hhat], axis=-1), params["w_comb"], params["b_comb"])  # (N, D)  Eq. (8)
    return out, PaperHopCache(q_proj, k_proj, v_proj, attention, has_in, combine, n_heads)


def paper_hop_backward(dout: Any, cache: PaperHopCache) -> tuple[Any, dict[str, Any]]:
    dcat, grads_comb = linear_backward(dout, cache.combine)  # (N, 2D)
    d = dcat.shape[-1] // 2
    dc, dhhat = dcat[:, :d], dcat[:, d:] * cache.has_in  # (N, D) each
    dq, dk, dv, _ = sdpa_backward(split_heads(dhhat[None, ...], cache.n_heads), cache.attention)  # (1, H, N, Dh)
    grads = {"w_comb": grads_comb["w"], "b_comb": grads_comb["b"]}
    for name, dproj, proj in (("q", dq, cache.q_proj), ("k", dk, cache.k_proj), ("v", dv, cache.v_proj)):
        dc_proj, g = linear_backward(merge_heads(dproj)[0, ...], proj)  # (N, D)
        dc = dc + dc_proj
        grads[f"w_h{name}"], grads[f"b_h{name}"] = g["w"], g["b"]
    return dc, grads


def gat_hop_forward(c: Any, adjacency: Any, params: dict[str, Any], *, n_heads: int) -> tuple[Any, GATHopCache]:
    """The released code's GAT hop (Variant A): c (N, D) -> c' (N, D)."""
    _check(c, adjacency, params, n_heads, GAT_HOP_PARAMS)
    xp = array_namespace(c)
    n, d = c.shape
    dh = d // n_heads
    w_fc, a_l, a_r, w_res = params["w_fc"], params["a_l"], params["a_r"], params["w_res"]
    require_shape("w_fc", w_fc, ["d_head", "d_head"], [dh, dh])
    require_shape("w_res", w_res, ["d_head", "d_head"], [dh, dh])
    require_shape("a_l", a_l, ["n_heads", "d_head"], [n_heads, dh])
    require_shape("a_r", a_r, ["n_heads", "d_head"], [n_heads, dh])
    h = xp.reshape(c, (n, n_heads, dh))  # (N, H, Dh) head j owns slice j
    f = xp.permute_dims(xp.matmul(h, w_fc), (1, 0, 2))  # (H, N, Dh)
    s_l = xp.sum(f * a_l[:, None, :], axis=-1)  # (H, N) source score
    s_r = xp.sum(f * a_r[:, None, :], axis=-1)  # (H, N) destination score
    s = s_l[:, None, :] + s_r[:, :, None]  # (H, N_dst, N_src)
    e = xp.where(s > 0, s, LEAKY_SLOPE * s)
    scores = xp.where(adjacency[None, ...], e, xp.asarray(MASKED_SCORE, dtype=c.dtype))  # (H, N, N)
    alpha, softmax = softmax_forward(scores, axis=-1)  # (H, N, N) over incoming edges
    has_in = xp.astype(xp.any(adjacency, axis=1), c.dtype)[None, :, None]  # (1, N, 1)
    m = xp.matmul(alpha, f) * has_in  # (H, N, Dh)
    pre = xp.permute_dims(xp.matmul(h, w_res), (1, 0, 2)) + m  # (H, N, Dh)
    g = xp.reshape(xp.permute_dims(xp.where(pre > 0, pre, xp.zeros_like(pre)), (1, 0, 2)), (n, d))  # (N, D)
    out, combine = linear_forward(xp.concat([g, c], axis=-1), params["w_comb"], params["b_comb"])  # (N, D)
    return out, GATHopCache(h, f, a_l, a_r, w_fc, w_res, s, adjacency, softmax, has_in, pre, combine)


def gat_hop_backward(dout: Any, cache: GATHopCache) -> tuple[Any, dict[str, Any]]:
    xp = array_namespace(dout)
    h, f, a_l, a_r, w_fc, w_res, s, adjacency, softmax, has_in, pre, combine = cache
    n, n_heads, dh = h.shape
    dcat, grads_comb = linear_backward(dout, combine)  # (N, 2D)
    d = n_heads * dh
    dg, dc = dcat[:, :d], dcat[:, d:]  # (N, D) each
    dpre = xp.permute_dims(xp.reshape(dg, (n, n_heads, dh)), (1, 0, 2)) * xp.astype(pre > 0, dout.dtype)  # (H, N, Dh)
    dres = xp.permute_dims(dpre, (1, 0, 2))  # (N, H, Dh)
    dm = dpre * has_in  # (H, N, Dh)
    alpha = softmax.p
    dalpha = xp.matmul(dm, xp.matrix_transpose(f))  # (H, N_dst, N_src)
    df = xp.matmul(xp.matrix_transpose(alpha), dm)  # (H, N_src, Dh) aggregation path
    de = xp.where(adjacency[None, ...], softmax_backward(dalpha, softmax), xp.zeros_like(dalpha))  # (H, N, N)
    ds = de * xp.where(s > 0, xp.ones_like(s), xp.full_like(s, LEAKY_SLOPE))  # LeakyReLU'
    ds_l = xp.sum(ds, axis=1)  # (H, N) over destinations
    ds_r = xp.sum(ds, axis=2)  # (H, N) over sources
    df = df + ds_l[..., None] * a_l[:, None, :] + ds_r[..., None] * a_r[:, None, :]  # (H, N, Dh)
    da_l = xp.sum(ds_l[..., None] * f, axis=1)  # (H, Dh)
    da_r = xp.sum(ds_r[..., None] * f, axis=1)  # (H, Dh)
    df_nodes = xp.permute_dims(df, (1, 0, 2))  # (N, H, Dh)
    h_rows = xp.reshape(h, (n * n_heads, dh))  # (N H, Dh)
    dw_fc = xp.matmul(xp.matrix_transpose(h_rows), xp.reshape(df_nodes, (n * n_heads, dh)))  # (Dh, Dh) all heads
    dw_res = xp.matmul(xp.matrix_transpose(h_rows), xp.reshape(dres, (n * n_heads, dh)))  # (Dh, Dh)
    dh_ = xp.matmul(df_nodes, xp.matrix_transpose(w_fc)) + xp.matmul(dres, xp.matrix_transpose(w_res))  # (N, H, Dh)
    dc = dc + xp.reshape(dh_, (n, d))  # (N, D)
    return dc, {"w_fc": dw_fc, "a_l": da_l, "a_r": da_r, "w_res": dw_res,
                "w_comb": grads_comb["w"], "b_comb": grads_comb["b"]}


def extra_hop_forward(c: Any, adjacency: Any, params: dict[str, Any], *, n_heads: int,
                      variant: str = "paper") -> tuple[Any, PaperHopCache | GATHopCache]:
    """One hop: first-token states c (N, D) over the graph -> merged first-token states (N, D)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if variant == "paper":
        return paper_hop_forward(c, adjacency, params, n_heads=n_heads)
    return gat_hop_forward(c, adjacency, params, n_heads=n_heads)


def extra_hop_backward(dout: Any, cache: PaperHopCache | GATHopCache) -> tuple[Any, dict[str, Any]]:
    if isinstance(cache, PaperHopCache):
        return paper_hop_backward(dout, cache)
    return gat_hop_backward(dout, cache)


def hop_margins(c: Any, adjacency: Any, params: dict[str, Any], *, n_heads: int) -> float:
    """Smallest |LeakyReLU input| on an edge and |ReLU input| of the GAT hop (finite differences need both > 0)."""
    xp = array_namespace(c)
    _, cache = gat_hop_forward(c, adjacency, params, n_heads=n_heads)
    big = float(xp.max(xp.abs(cache.s))) + 1.0
    on_edges = xp.where(adjacency[None, ...], xp.abs(cache.s), xp.full_like(cache.s, big))  # (H, N, N)
    return float(min(float(xp.min(on_edges)), float(xp.min(xp.abs(cache.pre)))))


def init_hop(rng, d_model: int, hop_heads: int, variant: str, *, xp, dtype) -> dict[str, Any]:
    """Hop parameters: w_h{q,k,v}, b_h{q,k,v} (paper) or w_fc, a_l, a_r, w_res (gat); and w_comb, b_comb."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    params: dict[str, Any] = {}
    if variant == "paper":
        for name in "qkv":
            p = init_linear(rng, d_model, d_model, xp=xp, dtype=dtype)
            params[f"w_h{name}"], params[f"b_h{name}"] = p["w"], p["b"]
    else:
        dh = d_model // hop_heads
        params["w_fc"] = normal(rng, (dh, dh), xp=xp, dtype=dtype, scale=dh ** -0.5)
        params["a_l"] = normal(rng, (hop_heads, dh), xp=xp, dtype=dtype)
        params["a_r"] = normal(rng, (hop_heads, dh), xp=xp, dtype=dtype)
        params["w_res"] = normal(rng, (dh, dh), xp=xp, dtype=dtype, scale=dh ** -0.5)
    comb = init_linear(rng, 2 * d_model, d_model, xp=xp, dtype=dtype)
    params["w_comb"], params["b_comb"] = comb["w"], comb["b"]
    return params
