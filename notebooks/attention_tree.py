# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Tree-structured attention: hierarchical accumulation, hierarchical embeddings and subtree masking
#
# Docs pages: [`docs/mechanisms/attention.tree.md`](../docs/mechanisms/attention.tree.md), [`docs/mechanisms/embeddings.hierarchical.md`](../docs/mechanisms/embeddings.hierarchical.md), [`docs/mechanisms/objectives.subtree_masking.md`](../docs/mechanisms/objectives.subtree_masking.md) (the equations and the derived backward).
#
# Code: [`reference/attention/tree.py`](../reference/attention/tree.py) (the attention),
# [`tree_accumulation.py`](../reference/attention/tree_accumulation.py) (the accumulation),
# [`reference/embeddings/hierarchical.py`](../reference/embeddings/hierarchical.py) and
# [`reference/objectives/subtree_masking.py`](../reference/objectives/subtree_masking.py).
#
# **What it is for.** Nguyen, Joty, Hoi and Socher (ICLR 2020, arXiv:2002.08046) give self-attention the
# syntax of a sentence, in parallel and without a recursive network. The leaves are the tokens; every
# non-terminal node of a constituency tree gets its own vector.
#
# **The equations.** For leaf $i$ and node $j$ whose span contains it, the path $V^i_j$ runs from the leaf up to
# $j$. Hierarchical accumulation averages along that path, with the hierarchical embedding
# $E_{ij} = [\,e^v_{|V^i_j|};\ e^h_{|H^i_j|}\,]$ (vertical depth, horizontal position) added to each node:
# $$\hat S_{ij} = \frac{1}{\mathrm{den}_{ij}}\Big(l_i + \sum_{t \in V^i_j} (n_t + E_{it})\Big),\qquad
#   \hat n_j = \frac{1}{|\mathrm{span}(j)|}\sum_{i \in \mathrm{span}(j)} w_i\, \hat S_{ij},$$
# and attention runs over $[\text{leaves}; \hat n]$ under the **subtree mask**: a node may attend only to the
# leaves of its span, itself and its descendants.
#
# **The intuition.** A node's vector is a summary of its subtree, built bottom-up like a parse, but as one
# batched tensor product instead of a recursion; the mask keeps what reaches a node strictly from below it.
# This notebook draws a parse tree, the tensors the oracle builds from it, the accumulation tensor $\hat S$, the
# hierarchical embeddings and the mask, and checks the hand-derived backward against finite differences.

# %%
import matplotlib.pyplot as plt
import numpy as np

from gradients.check import check_mechanism
from reference.attention.tree import init_tree_attention, tree_attention_forward
from reference.attention.tree_accumulation import hierarchical_accumulation_forward
from reference.attention.tree_input import batch_trees, parse_tree
from reference.backend import namespace
from reference.embeddings.hierarchical import hierarchical_embedding_forward
from reference.objectives.subtree_masking import subtree_mask
from reference.registry import get

xp = namespace("numpy")
rng = np.random.default_rng(0)

# %% [markdown]
# ## A parse tree, bottom-up
#
# The bracket string below is the specification's worked example. `parse_tree` validates it and
# lists the nodes bottom-up (every node after its descendants, the root last), with inclusive
# leaf spans.

# %%
tree = parse_tree("(S (NP1 a b) (VP c (NP2 d (PP e f))))")
for j, (label, span) in enumerate(zip(tree.labels, tree.spans)):
    print(f"node {j}: {label:4s} span {span}  parent {tree.parent[j]}")

# %%
def draw(tree, ax):
    """Leaves on the bottom row; each node above the middle of its span, at height = its subtree depth."""
    height = [0] * tree.m
    for j in range(tree.m):  # bottom-up order: children come first
        if tree.parent[j] >= 0:
            height[tree.parent[j]] = max(height[tree.parent[j]], height[j] + 1)
    pos = {("node", j): ((s + e) / 2, height[j] + 1) for j, (s, e) in enumerate(tree.spans)}
    pos.update({("leaf", i): (i, 0) for i in range(tree.n)})
    for j in range(tree.m):
        if tree.parent[j] >= 0:
            (x0, y0), (x1, y1) = pos[("node", j)], pos[("node", tree.parent[j])]
            ax.plot([x0, x1], [y0, y1], "k-", lw=1)
    for i in range(tree.n):
        (x0, y0), (x1, y1) = pos[("leaf", i)], pos[("node", tree.leaf_parent[i])]
        ax.plot([x0, x1], [y0, y1], "k-", lw=1)
    for (kind, k), (x, y) in pos.items():
        text = tree.leaves[k] if kind == "leaf" else f"{tree.labels[k]}\n#{k}"
        ax.text(x, y, text, ha="center", va="center", bbox=dict(boxstyle="round", fc="w" if kind == "leaf" else "#cde"))
    ax.set_axis_off()


fig, ax = plt.subplots(figsize=(6, 3.5))
draw(tree, ax)
ax.set_title("constituency tree (node index = bottom-up order)")
plt.show()

# %% [markdown]
# ## The static tensors
#
# Everything the mechanism needs from the tree is computed once, on the host: the membership
# $M_{ij} = [l_i \in \mathcal{R}(x_j)]$, the path tensor $P_{ijt}$ (node $t$ on the path from leaf
# $i$ up to node $j$), the path lengths $|V^i_j|$ and the horizontal positions $|H^i_j|$. The
# forward pass then uses array expressions only.

# %%
tb = batch_trees([tree], xp=xp)
fig, axes = plt.subplots(1, 3, figsize=(11, 3))
for ax, (name, a) in zip(axes, [("membership M", tb.membership), ("|V| path length", tb.path_len),
                                ("|H| horizontal index", tb.horizontal)]):
    a = np.asarray(a)[0].astype(int)
    ax.imshow(a, cmap="Blues")
    for (i, j), v in np.ndenumerate(a):
        ax.text(j, i, v, ha="center", va="center")
    ax.set_xticks(range(tree.m), tree.labels)
    ax.set_yticks(range(tree.n), tree.leaves)
    ax.set_title(name)
    ax.set_xlabel("node $j$")
axes[0].set_ylabel("leaf $i$")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## The accumulation tensor
#
# Take one-dimensional "values" so the tensor is easy to read: every leaf has value 0 and node
# $t$ has value $t + 1$. Then $\hat S_{ij}$ is the upward cumulative average along the path from
# leaf $i$ up to node $j$: the leaf's value plus the path's node values, divided (by default, as in the
# authors' code) by the number of nodes on the path; $\hat n_j$ is the (here unweighted, $w = 1$) mean of
# column $j$ over the leaves of the span.

# %%
leaf_values = np.zeros((1, 1, tree.n, 1))
node_values = np.arange(1.0, tree.m + 1.0)[None, None, :, None]
w = np.ones((1, 1, tree.n))
n_hat, cache = hierarchical_accumulation_forward(leaf_values, node_values, w, tb)
s_hat = np.asarray(cache.s_hat)[0, 0, :, :, 0]

fig, ax = plt.subplots(figsize=(5, 4))
im = ax.imshow(np.where(np.asarray(tb.membership)[0], s_hat, np.nan), cmap="viridis")
fig.colorbar(im, ax=ax, label=r"$\hat S_{ij}$")
ax.set_xlabel("node $j$"); ax.set_ylabel("leaf $i$")
for (i, j), v in np.ndenumerate(s_hat):
    if np.asarray(tb.membership)[0, i, j]:
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="w")
ax.set_xticks(range(tree.m), tree.labels)
ax.set_yticks(range(tree.n), tree.leaves)
ax.set_title(r"$\hat S_{ij}$ (blank: leaf outside the span)")
plt.show()
print("node states n̂_j:", dict(zip(tree.labels, np.round(np.asarray(n_hat)[0, 0, :, 0], 4))))

# %% [markdown]
# Check one entry by hand: leaf `e` (index 4) inside VP (index 3). Its path is PP, NP2, VP with
# values 2, 3, 4, plus the leaf's 0. The authors' code (the default) divides by the node count,
# $9 / 3 = 3$; the specification's recalled reading of the paper (`up_norm="paper_recalled"`, not re-read in
# the paper) averages over the leaf too, $(0 + 2 + 3 + 4) / 4 = 2.25$.

# %%
print("code (default):", s_hat[4, 3])
_, recalled = hierarchical_accumulation_forward(leaf_values, node_values, w, tb, up_norm="paper_recalled")
print("paper_recalled:", np.asarray(recalled.s_hat)[0, 0, 4, 3, 0])

# %% [markdown]
# ## Hierarchical embeddings
#
# Before the average, each node entry gets $E_{ij} = [e^v_{|V^i_j|}; e^h_{|H^i_j|}]$ in the specification's
# recalled reading of the paper (`vertical="paper_recalled", layout="concat"`). With tables whose rows hold
# their own 1-based index (times 10 for the horizontal table), the embedding reads back the two indices. The
# default follows the authors' code instead: the vertical table is indexed by the node's depth plus one and
# the two halves are interleaved (see the hierarchical-embeddings page).

# %%
e_v, e_h = np.arange(1.0, 6.0)[:, None], 10 * np.arange(1.0, 7.0)[:, None]
e, _ = hierarchical_embedding_forward(e_v, e_h, tb, vertical="paper_recalled", layout="concat")
print("vertical half, |V^i_j| (leaf i = row, node j = column):\n", np.asarray(e)[0, :, :, 0].astype(int))
print("horizontal half, 10 |H^i_j|:\n", np.asarray(e)[0, :, :, 1].astype(int))
e_code, _ = hierarchical_embedding_forward(e_v, e_h, tb, layout="concat")
print("vertical half with the code's index (depth(j) + 1):\n", np.asarray(e_code)[0, :, :, 0].astype(int))

# %% [markdown]
# ## The subtree mask
#
# Rows are queries, columns keys, leaves first then nodes. Leaves see every leaf; a node sees the
# leaves of its span, itself and its descendants. So the only information that reaches a node
# comes from below it.

# %%
mask = np.asarray(subtree_mask(tb))[0]
names = list(tree.leaves) + list(tree.labels)
fig, ax = plt.subplots(figsize=(5, 5))
ax.imshow(mask, cmap="Greys")
ax.set_xticks(range(len(names)), names, rotation=90)
ax.set_yticks(range(len(names)), names)
ax.axhline(tree.n - 0.5, color="r")
ax.axvline(tree.n - 0.5, color="r")
ax.set_title("subtree mask (black = may attend)")
ax.set_xlabel("key (leaves | nodes)"); ax.set_ylabel("query (leaves | nodes)")
plt.show()

# %% [markdown]
# A consequence we can test: changing the leaves `a b` and the nodes NP1 and S does not move the
# output of VP at all.

# %%
params = init_tree_attention(rng, 8, 2, xp=xp, dtype=xp.float64, n_vertical=4, n_horizontal=6)
xl, xn = rng.standard_normal((1, tree.n, 8)), rng.standard_normal((1, tree.m, 8))
y, _ = tree_attention_forward(xl, xn, params, tb, n_heads=2)
xl2, xn2 = xl.copy(), xn.copy()
xl2[0, :2] += 5.0
xn2[0, [0, 4]] += 5.0
y2, _ = tree_attention_forward(xl2, xn2, params, tb, n_heads=2)
vp = tree.n + 3
print("VP output moved by", np.max(np.abs(np.asarray(y2)[0, vp] - np.asarray(y)[0, vp])))
print("S  output moved by", np.max(np.abs(np.asarray(y2)[0, -1] - np.asarray(y)[0, -1])))

# %% [markdown]
# ## The backward, checked
#
# The docs page derives the VJP of the upward average and of the weighted aggregation. Here the
# accumulation alone is checked element by element against Richardson-extrapolated central
# differences in float64. A pass means the transposed path sums ($\mathrm{path}^\top$ applied to the
# gradient), the span masks and the leaf weights' gradient are right, element by element.

# %%
report = check_mechanism(get("attention.tree.accumulation"), backend="numpy", mode="full")
print(report.table())
assert report.passed
