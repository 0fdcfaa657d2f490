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
# # Depth-Adaptive Transformer: exits that stop early when they can
#
# Docs page: [`docs/mechanisms/architecture.depth_adaptive.md`](../docs/mechanisms/architecture.depth_adaptive.md) (the equations and the derived backward).
#
# Code: [`reference/architecture/depth_adaptive.py`](../reference/architecture/depth_adaptive.py) (the decoder
# with exits, forward and backward) and
# [`reference/architecture/depth_adaptive_halting.py`](../reference/architecture/depth_adaptive_halting.py) (halting distributions).
#
# **What it is for.** Elbayad et al. (ICLR 2020, arXiv:1910.10073) spend less computation on easy tokens: a
# decoder should not run all its blocks to emit "the". They put an output classifier after **every** block, so a
# token can leave the network as soon as one of them is sure.
#
# **The equations** (§2). With $h^0_t = E[y_{t-1}] + P_t$ and exit $n_t$ for token $t$,
# $$h^n = \begin{cases}\mathrm{Block}_n(h^{n-1}, s) & n \le n_t\\ h^{n-1} & n > n_t\end{cases},\qquad
#   \log p_n(\cdot\mid h^n_t) = \operatorname{log\,softmax}(h^n_t W_n + b_n),$$
# so a token that has left keeps its state, and upper blocks read that copy when later tokens attend to it.
# Aligned training trains every exit at once, $L_{dec} = -\frac{1}{N_{valid}}\sum_t\sum_n \omega_n \log p_n(y_t\mid h^n_t)$;
# at test time a token exits at the first block whose classifier is confident,
# $n_t = \min\{n : \max_v p_n(v\mid h^n_t) > \tau\}$.
#
# **The intuition.** If a task needs $k$ steps of computation, the exits before block $k$ can only guess, and
# the confidence threshold decides how often a token takes the risk. This notebook trains a tiny decoder with the
# oracle's own hand-derived gradients on a task that needs two blocks, compares the exits, lets tokens exit by
# confidence, draws accuracy against average depth, and checks the backward against finite differences.

# %%
import matplotlib.pyplot as plt
import numpy as np

from reference.architecture.depth_adaptive import (
    DepthAdaptiveConfig,
    confidence_decode,
    depth_adaptive_backward,
    depth_adaptive_forward,
)
from reference.architecture.depth_adaptive_params import aligned_omega, init_depth_adaptive
from reference.backend import namespace, to_numpy

xp = namespace("numpy")
rng = np.random.default_rng(0)

# %% [markdown]
# ## A toy task that needs two blocks: following a pointer
#
# The "encoder states" are fixed random vectors of the source tokens $x_1..x_T$ plus their positions. The target
# at position $t$ is the source token that $x_t$ points to, $y_t = x_{\,x_t \bmod T}$. A block's cross-attention
# can look up $x_t$ (a query by position), but only a *second* lookup, whose query depends on what the first
# returned, finds $x_{x_t \bmod T}$. So one block can only guess, and a second block can follow the pointer.

# %%
V, D, T, N = 8, 8, 6, 4
config = DepthAdaptiveConfig(n_layers=N, n_heads=2, activation="gelu_tanh")
params = init_depth_adaptive(rng, config, vocab=V, d_model=D, d_ff=16, max_len=T, xp=xp, dtype=xp.float64)
source_table = rng.normal(size=(V, D))
positions = 0.5 * rng.normal(size=(T, D))


def batch(n):
    x = rng.integers(1, V, (n, T))
    y = np.take_along_axis(x, x % T, axis=1)  # y_t = x[x_t mod T]
    source = xp.asarray(source_table[x] + positions)
    prev = np.concatenate([np.zeros((n, 1), dtype=int), y[:, :-1]], axis=1)  # BOS = 0
    return source, {"prev_tokens": xp.asarray(prev), "targets": xp.asarray(y),
                    "target_valid": xp.ones((n, T), dtype=xp.bool), "source_valid": xp.ones((n, T), dtype=xp.bool),
                    "exits": xp.full((n, T), N, dtype=xp.int64), "omega": aligned_omega(n, T, N, xp=xp, dtype=xp.float64)}


# %% [markdown]
# ## Aligned training with the oracle's backward
#
# Plain Adam on the loss $L_\text{dec} = -\frac{1}{N_\text{valid}}\sum_t \sum_n \omega_n \log p_n(y_t \mid h^n_t)$.

# %%
moments = {k: (np.zeros(v.shape), np.zeros(v.shape)) for k, v in params.items()}
losses = []
for step in range(1, 801):
    source, static = batch(16)
    out, cache = depth_adaptive_forward(source, params, config=config, **static)
    _, grads = depth_adaptive_backward({"loss": xp.asarray(1.0)}, cache)
    for k, g in grads.items():
        m, v = moments[k]
        m[...] = 0.9 * m + 0.1 * to_numpy(g)
        v[...] = 0.999 * v + 0.001 * to_numpy(g) ** 2
        params[k] = params[k] - 0.01 * xp.asarray((m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8))
    losses.append(float(out["loss"]))
plt.figure(figsize=(5, 3))
plt.plot(losses)
plt.xlabel("Adam step")
plt.ylabel("aligned loss $L_{dec}$")
plt.title("training every exit at once")
plt.tight_layout()
plt.show()
print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f}")

# %% [markdown]
# ## Every exit's accuracy
#
# Aligned training makes every classifier usable on its own. The first exit has seen one cross-attention
# lookup and can only guess; the exits after the second block follow the pointer. (On this task two blocks are
# enough, so exits 2, 3 and 4 are close: depth helps up to what the task needs.)

# %%
source, static = batch(256)
_, cache = depth_adaptive_forward(source, params, config=config, **static)
p = to_numpy(cache.p)  # (B, T, N, V)
correct = p.argmax(-1) == to_numpy(static["targets"])[..., None]
accuracy_by_exit = correct.mean(axis=(0, 1))
for n in range(N):
    print(f"exit {n + 1}: accuracy {accuracy_by_exit[n]:.3f}")
print(f"exit 1 -> best later exit: {accuracy_by_exit[0]:.3f} -> {accuracy_by_exit[1:].max():.3f}")

# %% [markdown]
# ## Exits on a few sequences
#
# With one threshold $\tau$ for every block, each token leaves at the first block whose most likely word
# has probability above $\tau$.

# %%
tau = 0.5
exits, prediction = confidence_decode(source, params, prev_tokens=static["prev_tokens"],
                                      source_valid=static["source_valid"],
                                      thresholds=xp.asarray([tau] * (N - 1)), config=config)
exits = to_numpy(exits)
plt.figure(figsize=(5, 3))
plt.imshow(exits[:8], cmap="viridis", vmin=1, vmax=N)
plt.colorbar(label="exit block")
plt.xlabel("target position")
plt.ylabel("sequence")
plt.title(f"exit block of each token at tau = {tau}")
plt.tight_layout()
plt.show()
print(exits[:4])

# %% [markdown]
# ## Accuracy against average depth
#
# Moving $\tau$ from 0 (everyone leaves after block 1) to 1 (nobody leaves early) traces the trade-off
# the paper reports as BLEU against average exit: accuracy rises as tokens are allowed more blocks, and
# stops rising once they can reach the second one.

# %%
points = []
for tau in [0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0]:
    exits, prediction = confidence_decode(source, params, prev_tokens=static["prev_tokens"],
                                          source_valid=static["source_valid"],
                                          thresholds=xp.asarray([tau] * (N - 1)), config=config)
    accuracy = float(np.mean(to_numpy(prediction) == to_numpy(static["targets"])))
    points.append((float(np.mean(to_numpy(exits))), accuracy))
depth, accuracy = zip(*points)
plt.figure(figsize=(5, 3))
plt.plot(depth, accuracy, "o-")
plt.xlabel("average exit block")
plt.ylabel("token accuracy")
plt.title(r"confidence threshold $\tau$ from 0 to 1")
plt.tight_layout()
plt.show()
for d, a in points:
    print(f"average exit {d:.2f}: accuracy {a:.3f}")

# %% [markdown]
# ## The backward, checked against finite differences
# The training above used the oracle's backward; here it is checked: the registered example in float64 along
# random directions. A pass means the gradient through the copied states of exited tokens and through every
# exit's classifier agrees with central differences of the forward to about $10^{-8}$ relative, so the
# training above followed the true gradient.

# %%
from gradients.check import check_mechanism
from reference.registry import get

report = check_mechanism(get("architecture.depth_adaptive"), backend="numpy", mode="fast")
print(report.table().splitlines()[-1])
assert report.passed
