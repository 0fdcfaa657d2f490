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
# # Complex word-order embeddings: word order as rotation
#
# Docs page: [`docs/mechanisms/embeddings.complex_order.md`](../docs/mechanisms/embeddings.complex_order.md) (the equations and the derived backward).
#
# Wang, Zhao, Lioma, Li, Zhang and Simonsen (ICLR 2020, arXiv:1912.12333) make a word embedding a
# *function of position*. Per dimension $k$,
#
# $$f(j, \mathrm{pos})_k = r_{j,k}\, e^{\,i(\omega_{j,k}\,\mathrm{pos} + \theta_{j,k})}.$$
#
# **What it is for.** Position embeddings added to word embeddings say *where* a word is, but the model cannot
# tell how a word's meaning relates to its neighbours' at a given distance. Making each embedding a continuous
# function of position, with a rotation per step, lets relative order be read off the phases.
#
# **The intuition.** The amplitude $r$ says *what* the word is; the phase says *where* it is, and moving a word
# by $\Delta$ positions rotates it by $\omega\Delta$ whatever its start. Code:
# [`reference/embeddings/complex_order.py`](../reference/embeddings/complex_order.py) and
# [`gradients/complex.py`](../gradients/complex.py) (the gradient conventions). This notebook draws that picture,
# then derives and checks the three derivatives $\partial L/\partial r$, $\partial L/\partial \omega$,
# $\partial L/\partial \theta$ with the oracle's code, and explains the two complex-gradient conventions.

# %%
import matplotlib.pyplot as plt
import numpy as np

from gradients.check import check_mechanism
from gradients.complex import from_jax, wirtinger
from gradients.numerical import numerical_gradient
from reference.backend import namespace, to_numpy
from reference.embeddings.complex_order import complex_order_backward, complex_order_forward
from reference.registry import get

xp = namespace("numpy")
rng = np.random.default_rng(0)

# %% [markdown]
# ## Each word is a point travelling on a circle
#
# Three words, one dimension each. As the position grows, $f$ turns around the origin at the word's own
# angular speed $\omega$ and stays on the circle of radius $r$ (the paper's *boundedness*).

# %%
words = ["the", "cat", "sat"]
V, D = len(words), 2
amplitude = xp.asarray([[1.0, 0.6], [0.7, 1.2], [0.4, 0.9]])
frequency = xp.asarray([[0.3, 0.05], [0.8, 0.2], [1.5, 0.6]])
initial_phase = xp.asarray([[0.0, 1.0], [0.5, -1.0], [-0.5, 2.0]])
T = 12
ids = xp.asarray([[0] * T, [1] * T, [2] * T])  # each word alone, at positions 0..T-1
f, _ = complex_order_forward(ids, amplitude, frequency, initial_phase)
f = to_numpy(f)

fig, ax = plt.subplots(figsize=(5, 5))
for j, word in enumerate(words):
    z = f[j, :, 0]
    circle = np.exp(1j * np.linspace(0, 2 * np.pi, 200)) * to_numpy(amplitude)[j, 0]
    ax.plot(circle.real, circle.imag, lw=0.5, color=f"C{j}")
    ax.plot(z.real, z.imag, "o-", color=f"C{j}", label=f"{word} (r={to_numpy(amplitude)[j, 0]}, w={to_numpy(frequency)[j, 0]})")
    ax.annotate("pos 0", (z[0].real, z[0].imag), fontsize=7)
ax.set_aspect("equal")
ax.axhline(0, color="k", lw=0.3)
ax.axvline(0, color="k", lw=0.3)
ax.set_title("dimension 0 of f(word, pos), pos = 0..11")
ax.set_xlabel(r"$\operatorname{Re} f$"); ax.set_ylabel(r"$\operatorname{Im} f$")
ax.legend(fontsize=7, loc="lower left")
plt.show()

# %% [markdown]
# ## Moving a sentence is a rotation
#
# The paper's *position-free offset transformation*: moving a word by $\Delta$ multiplies every dimension
# by $e^{i\omega\Delta}$, whatever the starting position. Below, "the cat sat" at positions 0–2 and at
# 5–7: every embedding of the second is the first rotated, each by its own word's angle.

# %%
sentence = xp.asarray([[0, 1, 2]])
f0, _ = complex_order_forward(sentence, amplitude, frequency, initial_phase, positions=xp.asarray([0.0, 1.0, 2.0]))
f5, _ = complex_order_forward(sentence, amplitude, frequency, initial_phase, positions=xp.asarray([5.0, 6.0, 7.0]))
rotation = to_numpy(f5) / to_numpy(f0)
print("f(pos + 5) / f(pos), dimension 0:", np.round(rotation[0, :, 0], 6))
print("exp(i w 5), dimension 0:          ", np.round(np.exp(1j * 5 * to_numpy(frequency)[:, 0]), 6))
assert np.allclose(rotation[0], np.exp(5j * to_numpy(frequency)))

reordered = xp.asarray([[2, 1, 0]])  # "sat cat the": same words, same amplitudes, different phases
fr, _ = complex_order_forward(reordered, amplitude, frequency, initial_phase)
fig, axes = plt.subplots(1, 2, figsize=(9, 4), sharex=True, sharey=True)
for ax, emb, title in ((axes[0], to_numpy(f0)[0], "the cat sat"), (axes[1], to_numpy(fr)[0], "sat cat the")):
    for t in range(3):
        word = words[int(to_numpy(sentence if title == "the cat sat" else reordered)[0, t])]
        ax.arrow(0, 0, emb[t, 0].real, emb[t, 0].imag, head_width=0.04, color=f"C{words.index(word)}")
        ax.annotate(f"{word}@{t}", (emb[t, 0].real, emb[t, 0].imag), xytext=(4, 4), textcoords="offset points",
                    fontsize=8)
    ax.set_title(f"{title}: dimension 0")
    ax.set_aspect("equal")
    ax.set_xlabel(r"$\operatorname{Re} f$")
    ax.grid(lw=0.3)
axes[0].set_ylabel(r"$\operatorname{Im} f$")
plt.show()

# %% [markdown]
# ## The three derivatives
#
# Write $\varphi = \omega\,\mathrm{pos} + \theta$, $u = e^{i\varphi}$, $f = r u$. For a real loss the oracle
# hands each complex array the gradient $g = \partial L/\partial \operatorname{Re} f + i\,\partial L/\partial \operatorname{Im} f$
# (PyTorch's convention). Since $\operatorname{Re}f = r\cos\varphi$ and $\operatorname{Im} f = r\sin\varphi$,
#
# $$\frac{\partial L}{\partial r} = \operatorname{Re}(\bar u\, g), \qquad
#   \frac{\partial L}{\partial \varphi} = \operatorname{Im}(\bar f\, g) = r\operatorname{Im}(\bar u\, g), \qquad
#   \frac{\partial L}{\partial \theta} = \frac{\partial L}{\partial \varphi}, \qquad
#   \frac{\partial L}{\partial \omega} = \mathrm{pos}\,\frac{\partial L}{\partial \varphi}.$$
#
# Take one word at positions $0, \dots, 19$ and the loss $L = \sum_\mathrm{pos} \operatorname{Re}(c\, f)^2$ with a
# fixed complex $c$, so $g = 2\operatorname{Re}(c f)\,\bar c$. We look at the per-position contributions, and check
# the summed gradients against finite differences of the oracle's forward.

# %%
c = 0.8 - 0.6j
positions = xp.arange(20, dtype=xp.float64)
one_word = xp.zeros((1, 20), dtype=xp.int64)
r1, w1, t1 = xp.asarray([[0.9]]), xp.asarray([[0.4]]), xp.asarray([[0.3]])


def loss(r, w, t):
    f, _ = complex_order_forward(one_word, r, w, t, positions=positions)
    return float(np.sum(np.real(c * to_numpy(f)) ** 2))


f1, cache = complex_order_forward(one_word, r1, w1, t1, positions=positions)
g = 2 * np.real(c * to_numpy(f1)) * np.conj(c)
u = np.exp(1j * (0.4 * np.arange(20) + 0.3))
per_pos = {"dL/dr": np.real(np.conj(u) * g[0, :, 0]),
           "dL/dtheta": 0.9 * np.imag(np.conj(u) * g[0, :, 0]),
           "dL/dw": np.arange(20) * 0.9 * np.imag(np.conj(u) * g[0, :, 0])}
fig, ax = plt.subplots(figsize=(7, 3.5))
for name, values in per_pos.items():
    ax.plot(np.arange(20), values, "o-", ms=3, label=name)
ax.set_xlabel("position")
ax.set_ylabel("contribution to the gradient")
ax.set_title("per-position gradient contributions: the frequency's grows with pos")
ax.legend()
plt.show()

grads = complex_order_backward(xp.asarray(g), cache)
numeric = {"amplitude": numerical_gradient(lambda v: loss(v, w1, t1), r1),
           "frequency": numerical_gradient(lambda v: loss(r1, v, t1), w1),
           "initial_phase": numerical_gradient(lambda v: loss(r1, w1, v), t1)}
# The frequency's finite difference is the least accurate of the three (about 5e-9 relative here):
# w is multiplied by positions up to 19, so the same step moves the phase 19 times further.
for name in numeric:
    print(f"{name:14s} oracle {float(to_numpy(grads[name])[0, 0]): .12f}   finite differences {numeric[name][0, 0]: .12f}")

# %% [markdown]
# ## Two conventions for one gradient
#
# For $L = |z|^2$ at $z = 1 + 2i$: $\partial L/\partial x = 2$, $\partial L/\partial y = 4$. PyTorch's `.grad` (and the oracle)
# is $2 + 4i = 2z$; `jax.grad` returns the conjugate $2 - 4i$. `gradients.complex.from_jax` conjugates; the
# Wirtinger derivatives are $\partial L/\partial z = \bar z$ and $\partial L/\partial \bar z = z$.

# %%
z = 1 + 2j
oracle_grad = 2 * z  # dL/dx + i dL/dy
jax_grad = 2 * np.conj(z)  # what jax.grad returns
print("oracle / PyTorch:", oracle_grad, "  JAX:", jax_grad, "  from_jax(JAX):", from_jax(jax_grad))
print("Wirtinger (dL/dz, dL/dconj z):", wirtinger(oracle_grad))

# %% [markdown]
# ## The whole mechanism, checked
#
# The registered embedding variants, every element by finite differences (the complex Transformer layer,
# `embeddings.complex_order.transformer`, is checked the same way by `python -m gradients check`).

# %%
for name in ["embeddings.complex_order", "embeddings.complex_order.shared_frequency"]:
    report = check_mechanism(get(name))
    print(report.table())
    assert report.passed
