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
# # ALBERT: factorized embeddings, cross-layer sharing and layer-to-layer transitions
#
# Docs page: [`docs/mechanisms/architecture.albert.md`](../docs/mechanisms/architecture.albert.md) (the equations and the derived backward).
#
# Code: [`reference/architecture/albert.py`](../reference/architecture/albert.py) (forward and backward) and
# [`reference/architecture/albert_params.py`](../reference/architecture/albert_params.py) (sizes and counts).
#
# **What it is for.** Lan et al. (ICLR 2020, arXiv:1909.11942) make BERT much smaller without making it
# shallower or narrower, so that larger configurations fit in memory.
#
# **The equations.** (1) Factorized embedding: a token $x$ is embedded in a small width $E$ and projected to the
# hidden width $H$, $e_x = W_E[x]\, P$ with $W_E \in \mathbb{R}^{V\times E}$, $P \in \mathbb{R}^{E\times H}$, so
# $VE + EH$ parameters instead of $VH$. (2) Cross-layer sharing: every layer applies the same block,
# $h^{(l+1)} = \mathrm{Block}(h^{(l)}; \theta)$ for $l = 0,\dots,L-1$, so by the chain rule the gradient of a shared
# weight is the sum over the layers that use it,
# $$\frac{\partial \mathcal{L}}{\partial \theta} = \sum_{l=0}^{L-1} \frac{\partial \mathcal{L}}{\partial \theta^{(l)}}\Big|_{\theta^{(l)}=\theta}.$$
#
# **The intuition.** The vocabulary table is large but carries context-independent information, so a small $E$
# suffices; the block's job is similar at every depth, so one set of weights can serve them all. This notebook
# counts parameters as in the paper's tables,
# checks that a shared weight's gradient is the sum over layers, and draws the paper's Figure 1 metrics
# (L2 distance and angle between each layer's input and output embeddings) for shared and unshared stacks.
# **The weights here are random, not trained**: the curves show what the metric measures, not the paper's result.

# %%
import matplotlib.pyplot as plt
import numpy as np

from reference.architecture.albert import (
    AlbertConfig,
    albert_backward,
    albert_forward,
    layer_transition_metrics,
)
from reference.architecture.albert_params import (
    PAPER_ROWS,
    AlbertSize,
    count_parameters,
    init_albert,
    paper_millions,
    untie,
)
from reference.backend import namespace, to_numpy

xp = namespace("numpy")

# %% [markdown]
# ## Parameter counts (Tables 1, 3 and 4)
# `count_parameters` is exact. `paper_millions` applies the convention that reproduces the paper's rounded numbers:
# positions, types and the embedding LayerNorm counted at width $H$, the pooler counted for shared models only.
# It matches 17 of 18 rows; ALBERT-xxlarge's 235M matches no convention (225M here; 223M on the HuggingFace model card).

# %%
print(f"{'row':36s} {'exact (no pooler)':>18s} {'paper rule':>10s} {'paper':>6s}")
for (table, label), (size, paper) in PAPER_ROWS.items():
    got = paper_millions(size)
    print(f"{table + ' ' + label:36s} {count_parameters(size, pooler=False):18,d} {got:>9d}M {paper:>5d}M"
          + ("" if got == paper else "   <- differs"))

# %% [markdown]
# Where the savings come from for ALBERT-base ($V = 30000$, $H = 768$, $E = 128$, 12 layers):

# %%
base = PAPER_ROWS[("Table 1", "ALBERT-base")][0]
for label, size in [("BERT-base layout (E = H, not shared)", AlbertSize(12, 768, 768, 12, 3072, "none")),
                    ("factorized only (E = 128)", AlbertSize(12, 768, 128, 12, 3072, "none")),
                    ("shared only (E = H)", AlbertSize(12, 768, 768, 12, 3072, "all")),
                    ("ALBERT-base (both)", base)]:
    print(f"{label:40s} {count_parameters(size) / 1e6:7.1f}M")

# %% [markdown]
# ## A shared weight's gradient is the sum over the layers that use it
# Copy the shared block into every layer of an untied model: the outputs agree exactly, and the shared gradient
# equals the sum of the untied per-layer gradients.

# %%
rng = np.random.default_rng(0)
size = AlbertSize(4, 16, 8, 2, 32, "all", vocab=50, positions=12)
params = init_albert(rng, size, xp=xp, dtype=xp.float64)
batch = dict(ids=xp.asarray(rng.integers(0, 50, (2, 10))), segments=xp.asarray([[0] * 5 + [1] * 5] * 2),
             pad=xp.asarray(np.ones((2, 10), dtype=bool)))
targets = xp.asarray(np.where(rng.random((2, 10)) < 0.3, rng.integers(0, 50, (2, 10)), -100))


def grads_of(p, sharing):
    out, cache = albert_forward(batch["ids"], batch["segments"], batch["pad"], p, AlbertConfig(4, 2, sharing),
                                mlm_targets=targets, sop_labels=xp.asarray([0, 1]))
    return out, albert_backward(xp.asarray(1.0), cache)


shared_out, shared = grads_of(params, "all")
untied_out, untied = grads_of(untie(params, 4, "all"), "none")
per_layer = [to_numpy(untied[f"layer{k}_w_q"]) for k in range(4)]
print("outputs equal:", np.array_equal(to_numpy(shared_out.h), to_numpy(untied_out.h)))
print("|dW_Q(shared) - sum_l dW_Q(layer l)| =", np.abs(to_numpy(shared["block_w_q"]) - sum(per_layer)).max())
print("per-layer |dW_Q| norms:", [round(float(np.linalg.norm(g)), 4) for g in per_layer])

# %% [markdown]
# ## Figure 1: how much each layer moves the embeddings
# 24 layers, $H = 64$, random weights. "all" reuses one block 24 times; "none" draws 24 blocks. For each layer,
# the L2 distance and the angle between the input and the output embedding of every token, averaged over tokens.

# %%
curves = {}
for sharing in ("all", "none"):
    size = AlbertSize(24, 64, 16, 4, 128, sharing, vocab=100, positions=32)
    p = init_albert(np.random.default_rng(1), size, xp=xp, dtype=xp.float64)
    ids = xp.asarray(np.random.default_rng(2).integers(0, 100, (2, 24)))
    pad = xp.asarray(np.ones((2, 24), dtype=bool))
    out, _ = albert_forward(ids, xp.zeros_like(ids), pad, p, AlbertConfig(24, 4, sharing),
                            mlm_targets=xp.full_like(ids, -100), sop_labels=xp.asarray([0, 1]))
    curves[sharing] = [to_numpy(m) for m in layer_transition_metrics(out.hidden_states, pad)]

fig, axes = plt.subplots(1, 2, figsize=(9, 3))
for sharing, (dist, angle) in curves.items():
    label = "ALBERT-style (all shared)" if sharing == "all" else "BERT-style (not shared)"
    axes[0].plot(range(1, 25), dist, marker=".", label=label)
    axes[1].plot(range(1, 25), angle, marker=".", label=label)
axes[0].set(xlabel="layer", ylabel="L2 distance", title="L2 distance (random weights)")
axes[1].set(xlabel="layer", ylabel="degrees", title="angle between input and output (random weights)")
axes[0].legend()
plt.tight_layout()
plt.show()
for sharing, (dist, angle) in curves.items():
    print(f"{sharing:5s} L2 first/last layer {dist[0]:.2f}/{dist[-1]:.2f}, angle {angle[0]:.1f}/{angle[-1]:.1f} deg")

# %% [markdown]
# With random weights, applying the same block again and again behaves like a fixed-point iteration: the
# transitions of the shared stack shrink with depth, while 24 independent random blocks keep moving the
# embeddings by about the same amount. This is a property of random weights, not the paper's finding. The
# paper's trained ALBERT-large has smoother transitions than BERT-large that oscillate and do not reach 0. Only
# trained checkpoints can reproduce that.

# %% [markdown]
# ## The backward, checked against finite differences
# The registered example (shared block, masked-LM and sentence-order losses) in float64 along random directions.
# A pass means the sum over layers above, the factorized projection and the two heads all agree
# with central differences of the forward to about $10^{-8}$ relative.

# %%
from gradients.check import check_mechanism
from reference.registry import get

report = check_mechanism(get("architecture.albert"), backend="numpy", mode="fast")
print(report.table().splitlines()[-1])
assert report.passed
