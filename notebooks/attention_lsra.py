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
# # Long-Short Range Attention (Lite Transformer): a global and a local branch
#
# Docs page: [`docs/mechanisms/attention.lsra.md`](../docs/mechanisms/attention.lsra.md) (the equations and the derived backward).
#
# Wu et al., *Lite Transformer with Long-Short Range Attention*, ICLR 2020 (arXiv:2004.11886).
# LSRA splits the channels of every token in two: the first block goes through ordinary multi-head
# attention (**global**: any token can read any other), the second through a convolution whose kernel
# is softmax-normalised and shared by the channels of a head (**local**: a token reads only its K
# neighbours). The two outputs are concatenated, and a "flattened" feed-forward network (hidden width
# equal to the model width) mixes them.
#
# **What it is for.** Lite Transformer targets mobile budgets (about 500M mult-adds). Much of a small
# Transformer's attention capacity is spent on local context that a convolution models more cheaply, so LSRA gives
# local context to a convolution and keeps attention for the long range.
#
# **The equations** (per layer, post-norm). With the channels split, $X = [X_a \mid X_c]$:
# $$A = \mathrm{MHA}(X_a, X_a),\qquad C = \mathrm{LightConv}\big(\mathrm{GLU}(X_c W_{in} + b_{in});\ \operatorname{softmax}(\theta)\big) W_{out} + b_{out},$$
# $$H_1 = \mathrm{LN}_1\big(X + [\,A \mid C\,]\big),\qquad H_2 = \mathrm{LN}_2\big(H_1 + \mathrm{FFN}(H_1)\big),$$
# where LightConv's kernel $W = \operatorname{softmax}(\theta)$ has width $K$ and is shared by the channels of a head.
#
# **The intuition.** The concatenation has no mixing matrix, so the two branches are two specialists: the
# attention channels can read anywhere, the convolution channels only their $K$ neighbours; the FFN then mixes
# them. Code: [`reference/attention/lsra.py`](../reference/attention/lsra.py) and
# [`reference/attention/lsra_conv.py`](../reference/attention/lsra_conv.py). This notebook runs the oracle's layer on
# a short sentence and shows the split by measuring, with the hand-written backward, which input tokens each
# output token depends on.

# %%
import matplotlib.pyplot as plt
import numpy as np

from gradients import check_mechanism
from reference.attention.lsra import LSRAConfig, init_lsra, lsra_backward, lsra_forward
from reference.backend import namespace, to_numpy
from reference.registry import get

xp = namespace("numpy")
rng = np.random.default_rng(0)

# %% [markdown]
# ## A sentence and a layer
#
# Twelve tokens with random (seeded) embeddings of width $D = 16$: $D_a = 8$ channels for attention in
# 2 heads, $D_c = 8$ channels for the convolution in 2 kernel heads of width $K = 3$.

# %%
words = "the cat that the dog chased ran up the old oak tree".split()
T, D = len(words), 16
config = LSRAConfig(d_attn=8, n_attn_heads=2, n_conv_heads=2, kernel_size=3, conv="lightweight", glu=True)
params = init_lsra(rng, D, config, xp=xp, dtype=xp.float64)
x = xp.asarray(rng.standard_normal((1, T, D)))
y, cache = lsra_forward(x, params, config)
print("output", tuple(y.shape))
print("softmax-normalised kernels (one row per kernel head, each sums to 1):")
print(np.round(to_numpy(cache.conv.softmax.p), 3))

# %% [markdown]
# ## Who reads whom
#
# The layer's output at token $t$ depends on input token $s$ through $\partial H_2[t] / \partial X[s]$.
# We feed the backward a random cotangent at one output position and record the size of the gradient
# at every input position. Silencing one branch (zero output projection) isolates the other: the
# convolution branch alone gives a band of width $K$; the attention branch alone connects everything.


# %%
def influence(p, cfg):
    """(T, T): |d H2[t] / d X[s]| along a random direction, row t, column s."""
    out, c = lsra_forward(x, p, cfg)
    rows = []
    for t in range(T):
        dy = np.zeros((1, T, D))
        dy[0, t] = np.random.default_rng(t).standard_normal(D)
        dx, _ = lsra_backward(xp.asarray(dy), c)
        rows.append(np.linalg.norm(to_numpy(dx)[0], axis=-1))
    return np.array(rows)


only_local = {**params, "w_o": xp.zeros_like(params["w_o"]), "b_o": xp.zeros_like(params["b_o"])}
only_global = {**params, "w_out": xp.zeros_like(params["w_out"]), "b_out": xp.zeros_like(params["b_out"])}
causal = config._replace(causal=True)
panels = [("full LSRA layer", influence(params, config)),
          ("convolution branch only (local)", influence(only_local, config)),
          ("attention branch only (global)", influence(only_global, config)),
          ("decoder (causal) layer", influence(params, causal))]

fig, axes = plt.subplots(1, 4, figsize=(18, 4.5))
for ax, (title, m) in zip(axes, panels):
    im = ax.imshow(np.log10(m + 1e-16), vmin=-4, cmap="viridis")
    ax.set_title(title)
    ax.set_xticks(range(T), words, rotation=90)
    ax.set_yticks(range(T), words)
    ax.set_xlabel("input token s")
axes[0].set_ylabel("output token t")
fig.tight_layout()
fig.colorbar(im, ax=axes, shrink=0.8, label=r"$\log_{10}$ |d output t / d input s|")
plt.show()

local = panels[1][1]
band = np.abs(np.subtract.outer(np.arange(T), np.arange(T))) <= config.kernel_size // 2
print("local branch: largest influence outside the band |t - s| <= K//2:", local[~band].max())
print("causal layer: largest influence of a future token:", panels[3][1][np.triu_indices(T, 1)].max())

# %% [markdown]
# The local-only panel is exactly a band of width 3 (plus nothing outside it: the printed number is
# zero), the global-only panel is dense, and the causal (decoder) layer is lower-triangular: its
# convolution is padded by $K - 1$ on the left and its attention is masked.
#
# ## The backward through shared softmax kernels
#
# The kernel of a head is shared by its channels, positions and batch elements, so its gradient is
# a sum over all of them, followed by the softmax VJP over the $K$ taps. Softmax is shift-invariant,
# so the gradient of every head's raw kernel sums to zero over the taps:

# %%
dy = xp.asarray(rng.standard_normal((1, T, D)))
_, grads = lsra_backward(dy, cache)
print("d theta:\n", np.round(to_numpy(grads["theta"]), 5))
print("row sums:", to_numpy(grads["theta"]).sum(-1))

# %% [markdown]
# ## Every gradient checked against finite differences
#
# The registered example (`attention.lsra`: padding, GLU, every dropout site as an explicit mask),
# checked in float64 along random directions (`mode="fast"`; the test suite and
# `python -m gradients check attention.lsra` check every element):

# %%
report = check_mechanism(get("attention.lsra"), backend="numpy", mode="fast")
print(report.table().splitlines()[-1])
assert report.passed
