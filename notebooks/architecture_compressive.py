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
# # Compressive Transformer: memories filling and compressing, segment by segment
#
# Docs page: [`docs/mechanisms/architecture.compressive.md`](../docs/mechanisms/architecture.compressive.md) (the equations and the derived backward).
#
# Code: [`reference/architecture/compressive.py`](../reference/architecture/compressive.py) (the layer and the
# memory update), [`compressive_functions.py`](../reference/architecture/compressive_functions.py) ($f_c$) and
# [`compressive_loss.py`](../reference/architecture/compressive_loss.py) (the reconstruction loss).
#
# **What it is for.** Rae et al. (ICLR 2020, arXiv:1911.05507) extend how far back a Transformer-XL can look
# without paying for a longer attention. Instead of discarding the oldest memories, each layer *compresses*
# them into fewer, coarser rows that stay attendable for longer.
#
# **The equations** (Algorithm 1). A layer holds a FIFO memory $m$ of its past inputs and a FIFO of compressed
# memories $cm$. For a segment $h$ of $n_s$ rows:
# $$Z = [\,cm;\ m;\ h\,],\qquad a = \mathrm{MHA}(h, Z),\qquad y = \mathrm{LN}_2\big(a_1 + \mathrm{FFN}(a_1)\big),\ a_1 = \mathrm{LN}_1(h + a);$$
# the oldest $n_s$ rows of $[m; h]$ leave the memory, are compressed at rate $c$ into $n_s/c$ rows,
# $f_c(\mathrm{old})$, and join $cm$ (whose oldest rows leave). The compression is trained by the
# attention-reconstruction loss (Algorithm 2), with $h$ and the old memories under stop-gradient:
# $$L_{attn} = \big\lVert \mathrm{attn}(h, \mathrm{old}) - \mathrm{attn}(h, f_c(\mathrm{old}))\big\rVert_2^2 .$$
#
# **The intuition.** Recent rows are kept exactly; older ones are summarised, like a notebook whose old pages are
# rewritten as a digest. The reconstruction loss asks the digest to answer the current queries the way the
# full pages would. This notebook runs the oracle's layer over consecutive segments with the state carried
# explicitly, shows where each segment's rows live over time and how one segment attends over $[cm; m; h]$,
# trains the convolutional $f_c$ with $L_{attn}$ (which touches nothing else), and checks the backward.

# %%
import matplotlib.pyplot as plt
import numpy as np

from gradients.check import check_mechanism
from reference.architecture.compressive import (
    CompressiveConfig,
    compressive_layer_backward,
    compressive_layer_forward,
    compressive_rollout,
    init_compressive_layer,
    init_state,
)
from reference.backend import namespace, to_numpy
from reference.registry import get

xp = namespace("numpy")
rng = np.random.default_rng(0)
B, N_S, N_MEM, N_CMEM, D, RATE = 1, 4, 8, 4, 8, 2

# %% [markdown]
# ## Filling the memories
# Zero initial state (the paper's choice: zeros that are attended to). Each segment's rows are stored in the
# memory as they are (the layer's input), then leave it after $n_m / n_s = 2$ segments, compressed two rows into
# one by mean pooling, and stay in the compressed memory for $n_{cm} / (n_s / c) = 2$ more segments.
# The temporal range is $n_m + c\, n_{cm} = 16$ past rows, for an attention over only $n_m + n_{cm} = 12$ slots.

# %%
config = CompressiveConfig(n_heads=2, kind="mean", rate=RATE)
params = init_compressive_layer(rng, D, 16, config, xp=xp, dtype=xp.float64)
segments = [xp.asarray(rng.standard_normal((B, N_S, D))) for _ in range(7)]
outputs, _ = compressive_rollout(segments, init_state(B, N_MEM, N_CMEM, D, xp=xp, dtype=xp.float64),
                                          params, config)


def source(row, candidates):
    """Which segment a stored row came from (-1: the zero initial state)."""
    for k, rows in enumerate(candidates):
        if np.any(np.all(np.isclose(rows, row, atol=1e-12), axis=-1)):
            return k
    return -1


raw = [to_numpy(s)[0] for s in segments]
pooled = [r.reshape(N_S // RATE, RATE, D).mean(axis=1) for r in raw]
grid = np.array([[source(r, pooled) for r in to_numpy(out.state.cmem)[0]]
                 + [source(r, raw) for r in to_numpy(out.state.mem)[0]] for out in outputs])
print("after segment k: source segment of each slot, [compressed memory | memory]")
for k, row in enumerate(grid):
    print(k, row[:N_CMEM], "|", row[N_CMEM:])

# %%
fig, ax = plt.subplots(figsize=(7, 3))
im = ax.imshow(grid, cmap="viridis", aspect="auto")
fig.colorbar(im, ax=ax, label="source segment (-1: zero initial state)")
ax.axvline(N_CMEM - 0.5, color="w", lw=2)
ax.set_xlabel("slot (compressed memory | memory), oldest first")
ax.set_ylabel("after segment")
ax.set_title("which segment each slot holds (dark: zero initial state)")
for (i, j), v in np.ndenumerate(grid):
    ax.text(j, i, str(v), ha="center", va="center", color="w" if v < 3 else "k", fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## One segment's attention over $[cm; m; h]$
# Segment 5 arrives with the state left by segment 4: its queries see the compressed memory (segments 0 and 1,
# pooled), the memory (segments 2 and 3 as they were) and, causally, the segment itself. The weights below are
# the layer's attention probabilities (the forward's cache), averaged over the heads.

# %%
y5, cache5 = compressive_layer_forward(segments[5], outputs[4].state, params, config)
p_att = to_numpy(cache5.attention.attention.softmax.p)[0].mean(axis=0)  # (T, Ncm + Nm + T)
fig, ax = plt.subplots(figsize=(9, 2.8))
im = ax.imshow(p_att, cmap="viridis", aspect="auto", vmin=0)
for edge in (N_CMEM - 0.5, N_CMEM + N_MEM - 0.5):
    ax.axvline(edge, color="w", lw=2)
for x0, text in ((N_CMEM / 2, "cm (compressed)"), (N_CMEM + N_MEM / 2, "m (memory)"),
                 (N_CMEM + N_MEM + N_S / 2, "h (segment)")):
    ax.text(x0 - 0.5, -0.8, text, ha="center", va="bottom")
ax.set_xlabel("key slot in $Z = [cm; m; h]$, oldest first")
ax.set_ylabel("query (row of segment 5)")
ax.set_title("attention of segment 5, mean over heads", pad=30)
fig.colorbar(im, ax=ax, label="attention probability")
plt.tight_layout()
plt.show()
mass = [p_att[:, :N_CMEM].sum(1).mean(), p_att[:, N_CMEM:N_CMEM + N_MEM].sum(1).mean(), p_att[:, N_CMEM + N_MEM:].sum(1).mean()]
print("mean attention mass per query on cm, m, h:", np.round(mass, 3))

# %% [markdown]
# ## Training the compression with the attention-reconstruction loss
# $L_\text{attn} = \lVert A(h, \mathrm{old}) - A(h, f_c(\mathrm{old}))\rVert^2$ with $h$, the old memories and the
# attention weights under stop-gradient: the backward returns a gradient for $\theta_c = (W_c, b_c)$ only. A few
# steps of gradient descent on $\theta_c$, with the main network frozen, drive the loss down; the gradients the
# backward returns for the main parameters from $L_\text{attn}$ are exact zeros.

# %%
conv = CompressiveConfig(n_heads=2, kind="conv", rate=RATE)
params = init_compressive_layer(rng, D, 16, conv, xp=xp, dtype=xp.float64)
state = init_state(B, N_MEM, N_CMEM, D, xp=xp, dtype=xp.float64)
for h in segments[:3]:  # fill the memory so that the evicted rows are real
    state = compressive_layer_forward(h, state, params, conv)[0].state
h = segments[3]
losses = []
for step in range(60):
    out, cache = compressive_layer_forward(h, state, params, conv)
    losses.append(float(out.loss_attn))
    _, _, _, grads = compressive_layer_backward(xp.zeros_like(out.y), xp.asarray(1.0), cache)
    params = {**params, "w_c": params["w_c"] - 0.003 * grads["w_c"], "b_c": params["b_c"] - 0.003 * grads["b_c"]}
leak = max(float(np.abs(to_numpy(grads[k])).max()) for k in ("w_q", "w_k", "w_v", "w_o", "w_1", "w_2"))
print(f"L_attn: {losses[0]:.4f} -> {losses[-1]:.4f}; largest main-network gradient from L_attn: {leak}")

mean_loss = float(compressive_layer_forward(h, state, params, CompressiveConfig(2, "mean", RATE))[0].loss_attn)
print(f"mean pooling on the same memories: L_attn = {mean_loss:.4f} (no parameters to train)")

# %%
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(losses, label="conv, trained")
ax.axhline(mean_loss, color="gray", ls="--", label="mean pooling")
ax.set_xlabel(r"gradient step on $\theta_c$")
ax.set_ylabel(r"$L_{attn}$")
ax.set_yscale("log")
ax.set_title("training the compression alone")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## The backward against finite differences
# Random-direction check of the registered example (conv compression, score bias, dropout). The registered
# function reads frozen copies of the stop-gradient inputs, so finite differences see exactly what the
# stop-gradients define. A pass means the gradient that the memories' keys and values send back, the split of
# $\bar Z$ into $\bar{cm}$, $\bar m$ and $\bar h$, and $L_{attn}$'s gradient for $\theta_c$ all agree with central
# differences to about $10^{-8}$ relative.

# %%
report = check_mechanism(get("architecture.compressive"), backend="numpy", mode="fast")
print(f"{len(report.results)} tensors, passed: {report.passed}, "
      f"largest abs error {max(r.max_abs_error for r in report.results):.1e}")
