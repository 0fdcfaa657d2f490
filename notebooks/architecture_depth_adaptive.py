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
# Elbayad et al. (ICLR 2020) put an output classifier after **every** decoder block, so that an easy
# token can leave the network early. A token that leaves keeps its state: upper blocks read a copy of it
# when later tokens attend to it. This notebook trains a tiny decoder with the oracle's own hand-derived
# gradients (aligned training: every exit is trained), then lets tokens exit as soon as a classifier is
# confident, and draws the trade-off between accuracy and average depth as the threshold moves.

# %%
import matplotlib.pyplot as plt
import numpy as np

from reference.architecture.depth_adaptive import DepthAdaptiveConfig, depth_adaptive_backward, depth_adaptive_forward
from reference.architecture.depth_adaptive_examples import aligned_omega, init_depth_adaptive
from reference.architecture.depth_adaptive_halting import confidence_decode
from reference.backend import namespace, to_numpy

xp = namespace("numpy")
rng = np.random.default_rng(0)

# %% [markdown]
# ## A toy task
#
# The "encoder states" are fixed random vectors of source tokens; the decoder must copy the source,
# token by token. Some positions are easy (the source token at that position is written in the
# state at that position), and a deeper model helps with the rest.

# %%
V, D, T, N = 8, 8, 6, 4
config = DepthAdaptiveConfig(n_layers=N, n_heads=2, activation="gelu_tanh")
params = init_depth_adaptive(rng, config, vocab=V, d_model=D, d_ff=16, max_len=T, xp=xp, dtype=xp.float64)
source_table = rng.normal(size=(V, D))
positions = 0.5 * rng.normal(size=(T, D))


def batch(n):
    x = rng.integers(1, V, (n, T))
    source = xp.asarray(source_table[x] + positions)
    prev = np.concatenate([np.zeros((n, 1), dtype=int), x[:, :-1]], axis=1)  # BOS = 0
    return source, {"prev_tokens": xp.asarray(prev), "targets": xp.asarray(x),
                    "target_valid": xp.ones((n, T), dtype=xp.bool), "source_valid": xp.ones((n, T), dtype=xp.bool),
                    "exits": xp.full((n, T), N, dtype=xp.int64), "omega": aligned_omega(n, T, N, xp=xp, dtype=xp.float64)}


# %% [markdown]
# ## Aligned training with the oracle's backward
#
# Plain Adam on the loss $L_\text{dec} = -\frac{1}{N_\text{valid}}\sum_t \sum_n \omega_n \log p_n(y_t \mid h^n_t)$.

# %%
moments = {k: (np.zeros(v.shape), np.zeros(v.shape)) for k, v in params.items()}
losses = []
for step in range(1, 301):
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
plt.xlabel("step")
plt.ylabel("aligned loss")
plt.tight_layout()
print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f}")

# %% [markdown]
# ## Every exit's accuracy
#
# Aligned training makes every classifier usable on its own; deeper ones are usually better.

# %%
source, static = batch(256)
_, cache = depth_adaptive_forward(source, params, config=config, **static)
p = to_numpy(cache.p)  # (B, T, N, V)
correct = p.argmax(-1) == to_numpy(static["targets"])[..., None]
for n in range(N):
    print(f"exit {n + 1}: accuracy {correct[..., n].mean():.3f}")

# %% [markdown]
# ## Exits on a few sequences
#
# With one threshold $\tau$ for every block, each token leaves at the first block whose most likely word
# has probability above $\tau$.

# %%
tau = 0.9
exits, prediction = confidence_decode(source, params, prev_tokens=static["prev_tokens"],
                                      source_valid=static["source_valid"],
                                      thresholds=xp.asarray([tau] * (N - 1)), config=config)
exits = to_numpy(exits)
plt.figure(figsize=(5, 3))
plt.imshow(exits[:8], cmap="viridis", vmin=1, vmax=N)
plt.colorbar(label="exit block")
plt.xlabel("target position")
plt.ylabel("sequence")
plt.title(f"exit depths at tau = {tau}")
plt.tight_layout()
print(exits[:4])

# %% [markdown]
# ## Accuracy against average depth
#
# Moving $\tau$ from 0 (everyone leaves after block 1) to 1 (nobody leaves early) traces the trade-off
# the paper reports as BLEU against average exit.

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
plt.xlabel("average exit")
plt.ylabel("token accuracy")
plt.tight_layout()
for d, a in points:
    print(f"average exit {d:.2f}: accuracy {a:.3f}")
