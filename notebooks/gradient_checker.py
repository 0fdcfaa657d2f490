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
# # The gradient checker
#
# Docs page: [`docs/gradient-checker.md`](../docs/gradient-checker.md) (the command line, the report and the tolerances).
# Code: [`gradients/check.py`](../gradients/check.py) and [`gradients/numerical.py`](../gradients/numerical.py).
#
# Every backward pass in this oracle is written by hand, so every one of them is
# checked against numbers. This notebook shows how, on a building block whose
# backward is easy to get subtly wrong: layer normalisation.
#
# The checker reduces any function $F$ to a scalar with a **random** cotangent $c$:
#
# $$L(x) = \sum_k \operatorname{Re}\langle c_k, F_k(x)\rangle .$$
#
# The backward fed $c$ must return $\partial L / \partial x$. The checker compares
# that with finite differences of $L$: element by element (`full` mode) or along a
# few random directions (`fast` mode). A random cotangent matters: with an
# all-ones cotangent a softmax backward that forgets its correction term still
# passes, because $\sum_i \partial p_i / \partial z_j = 0$.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np

from gradients import check_forward_backward, check_mechanism, numerical_gradient
from reference.backend import namespace
from reference.nn.layer_norm import layer_norm_backward, layer_norm_forward
from reference.random import generator, normal
from reference.registry import get

xp = namespace("numpy")
rng = generator(0)
B, T, D = 2, 3, 5  # pairwise distinct, so a swapped axis fails loudly
arrays = {
    "x": normal(rng, (B, T, D), xp=xp, dtype=xp.float64),
    "gamma": 1.0 + normal(rng, (D,), xp=xp, dtype=xp.float64, scale=0.1),
    "beta": normal(rng, (D,), xp=xp, dtype=xp.float64, scale=0.1),
}

# %% [markdown]
# ## A correct backward passes
#
# Layer norm's forward is $\hat x = (x - \mu)/\sqrt{\sigma^2 + \epsilon}$,
# $y = \gamma \hat x + \beta$. With $g = \mathrm{d}y \cdot \gamma$ its input gradient is
#
# $$\mathrm{d}x = \frac{1}{\sqrt{\sigma^2+\epsilon}}\Big(g - \overline{g} - \hat x\, \overline{g \hat x}\Big),$$
#
# where the bars are means over the feature axis. `check_forward_backward` takes a
# cs231n-style pair `forward(**arrays) -> (out, cache)` and `backward(dout, cache)`
# returning a dict with a gradient per array.

# %%
def backward(dy, cache):
    dx, grads = layer_norm_backward(dy, cache)
    return {"x": dx, **grads}


report = check_forward_backward(layer_norm_forward, backward, arrays, name="layer_norm")
print(report.table())
assert report.passed

# %% [markdown]
# Each row is one tensor: the largest absolute and relative errors over its
# elements, and the worst element. Errors near $10^{-11}$ are the finite
# differences' own accuracy, not the backward's.
#
# ## A broken backward fails, and says where
#
# The classic mistake: forget that $\mu$ and $\sigma$ depend on $x$ too, and
# write $\mathrm{d}x = g / \sqrt{\sigma^2+\epsilon}$.

# %%
def broken_backward(dy, cache):
    dx, grads = layer_norm_backward(dy, cache)
    g = dy * cache.gamma
    return {"x": g * cache.inv_std, **grads}  # missing: - mean(g) - xhat * mean(g * xhat)


broken = check_forward_backward(layer_norm_forward, broken_backward, arrays, name="layer_norm (broken)")
print(broken.table())
for failure in broken.failures:
    print(failure.describe())
assert [r.tensor for r in broken.failures] == ["x"]

# %% [markdown]
# Only `x` fails: the parameter gradients are right. The message names the tensor,
# its worst element and both numbers, which is what you need to find the bug.
#
# A bug confined to one element is found too. Here the gradient of `gamma` is
# off by one part in $10^5$ in a single entry:

# %%
def one_bad_element(dy, cache):
    grads = backward(dy, cache)
    bump = np.zeros(D)
    bump[3] = 1e-5 * float(np.asarray(grads["gamma"])[3])
    return {**grads, "gamma": grads["gamma"] + xp.asarray(bump)}


subtle = check_forward_backward(layer_norm_forward, one_bad_element, arrays, name="layer_norm (one element)")
print(subtle.failures[0].describe())
assert subtle.failures[0].worst == "(3,)"

# %% [markdown]
# ## Full versus fast
#
# `full` mode differentiates every element (4 evaluations each with Richardson
# extrapolation): exact about *where* a bug is, but its cost grows with the size
# of the arrays. `fast` mode takes a few random unit directions $v$ per tensor and
# compares $\operatorname{Re}\langle \nabla L, v\rangle$ with the directional
# derivative of $L$ along $v$: the dot-product test. Its cost does not grow with
# the size, and a wrong gradient almost surely has a nonzero component along a
# random direction, so it catches the same bugs; it only cannot name the element.

# %%
for mode in ("full", "fast"):
    start = time.perf_counter()
    good = check_forward_backward(layer_norm_forward, backward, arrays, mode=mode)
    bad = check_forward_backward(layer_norm_forward, broken_backward, arrays, mode=mode)
    print(f"{mode}: correct passes={good.passed}, broken passes={bad.passed}, "
          f"{time.perf_counter() - start:.2f} s; worst of broken: {bad.failures[0].worst}")
    assert good.passed and not bad.passed

# %% [markdown]
# ## Why Richardson extrapolation
#
# A central difference $(L(x+h) - L(x-h))/2h$ has truncation error $O(h^2)$ and
# rounding error $O(\varepsilon/h)$, so in float64 it bottoms out near $10^{-10}$.
# Richardson extrapolation combines two steps, $(4D(h/2) - D(h))/3$, cancelling
# the $h^2$ term: error $O(h^4)$, so a larger $h$ with less rounding can be used.

# %%
cot = xp.asarray(rng.standard_normal((B, T, D)))
_, cache = layer_norm_forward(**arrays)
exact = np.asarray(backward(cot, cache)["x"])


def loss(x):
    y, _ = layer_norm_forward(x, arrays["gamma"], arrays["beta"])
    return float(xp.sum(cot * y))


steps = np.logspace(-7, -1, 9)
errors = {method: [] for method in ("central", "richardson")}
for h in steps:
    for method in errors:
        numeric = numerical_gradient(loss, arrays["x"], h=h, method=method)
        errors[method].append(np.max(np.abs(numeric - exact)) / np.max(np.abs(exact)))

fig, ax = plt.subplots(figsize=(5, 3.2))
for method, err in errors.items():
    ax.loglog(steps, err, "o-", label=method)
ax.set_xlabel("step h")
ax.set_ylabel("max relative error")
ax.legend()
ax.set_title("layer norm: finite-difference error")
fig.tight_layout()
plt.show()
best = {method: min(err) for method, err in errors.items()}
print({method: f"{value:.1e}" for method, value in best.items()})
assert best["richardson"] < best["central"]

# %% [markdown]
# ## Registered mechanisms, on any backend
#
# Every mechanism of the oracle is a record in the registry with a small seeded
# example, so the command line `python -m gradients check nn.layer_norm` and the
# function below run the same check. `array_api_strict` is the strict
# stand-in for CuPy: passing there means the code uses only the array API standard.

# %%
for backend in ("numpy", "array_api_strict"):
    registry_report = check_mechanism(get("nn.layer_norm"), backend=backend)
    worst = max(r.max_rel_error for r in registry_report.results)
    print(f"{backend}: passed={registry_report.passed}, worst relative error {worst:.1e}")
    assert registry_report.passed
