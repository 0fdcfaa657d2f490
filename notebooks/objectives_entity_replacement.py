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
# # Entity replacement (WKLM): type-constrained replacement and its detection loss
#
# Docs page: [`docs/mechanisms/objectives.entity_replacement.md`](../docs/mechanisms/objectives.entity_replacement.md) (the equations and the derived backward).
# Code: [`reference/objectives/entity_replacement.py`](../reference/objectives/entity_replacement.py) (the loss
# and its backward) and [`reference/objectives/entity_replacement_data.py`](../reference/objectives/entity_replacement_data.py)
# (building the replaced text).
#
# **What it is for.** Xiong et al. (ICLR 2020, arXiv:1912.09637) want a pre-trained encoder to *know facts
# about entities*, not only to model words. WKLM corrupts the text by swapping entity mentions for other
# entities **of the same type** ("Marie Curie was born in Rome"), and trains the encoder to say, for every
# mention, whether it is the original. A same-type swap keeps the sentence grammatical, so only knowledge
# of the entities gives it away.
#
# **The equations.** With encoder states $h = \mathrm{Encoder}(x) \in \mathbb{R}^{T\times D}$ and mention $m$
# spanning tokens $s_m \dots e_m$, the classifier reads the two boundary tokens:
# $$r_m = [\,h_{s_m};\ h_{e_m}\,],\qquad z_m = r_m w + b,\qquad
#   L_{ent} = \frac{1}{|\mathcal{E}|}\sum_{m\in\mathcal{E}} \mathrm{BCE}\big(\sigma(z_m),\, y_m\big),$$
# with $y_m = 1$ for a replaced mention. A masked LM runs alongside at a reduced rate, never inside a
# mention: $L = L_{ent} + L_{MLM}$.
#
# **The intuition, and the backward.** The entity loss touches $h$ only at the boundary tokens:
# $\bar h_t = \sum_m [t = s_m]\,\bar r_m^{\,s} + [t = e_m]\,\bar r_m^{\,e}$, with $\bar r_m = \bar z_m w^\top$ and
# $\bar z_m = (\sigma(z_m) - y_m)/|\mathcal{E}|$. A one-token mention ($s_m = e_m$) receives both halves. The
# encoder then carries that gradient to the rest of the sequence through attention. Below: the data
# construction as text, then where the gradient of $L_{ent}$ lands, then the finite-difference check.

# %%
import dataclasses

import matplotlib.pyplot as plt
import numpy as np

from gradients.check import check_mechanism
from reference.backend import namespace, to_numpy
from reference.objectives.entity_replacement_data import replace_entities
from reference.registry import get

xp = namespace("numpy")
rng = np.random.default_rng(4)
VOCAB = ["[PAD]", "[CLS]", "[SEP]", "[MASK]", "was", "born", "in", "paris", "new", "york", "rome", "marie",
         "curie", "niels", "bohr", "and", "met"]
words = lambda ids: " ".join(VOCAB[i] for i in ids)
TABLE = {"person": {"Marie Curie": [11, 12], "Niels Bohr": [13, 14]},
         "city": {"Paris": [7], "New York": [8, 9], "Rome": [10]}}

# %% [markdown]
# ## 1. Replacements keep the type; two adjacent mentions are never both replaced
# Walking the mentions in order, each is replaced with probability 0.5 by another entity of its type,
# unless the mention before it was replaced. A replacement may change the span's length (Paris -> New York),
# so the spans after it move; `replace_entities` returns the new spans and the labels (`*` = replaced).

# %%
tokens = [11, 12, 4, 5, 6, 7, 15, 16, 13, 14, 6, 10]
mentions = [(0, 1, "person", "Marie Curie"), (5, 5, "city", "Paris"), (8, 9, "person", "Niels Bohr"),
            (11, 11, "city", "Rome")]
print("original:", words(tokens))
for _ in range(4):
    out = replace_entities(rng, tokens, mentions, TABLE)
    marks = " ".join(f"{name}{'*' if label else ''}" for name, label in zip(out.entities, out.labels))
    print("new     :", words(out.tokens), "   |", marks)

# %% [markdown]
# ## 2. The registered example
# A two-sentence batch with its mentions (start, end, replaced). In one row a two-token mention was
# replaced by a one-token entity, so the spans after it moved left.

# %%
mech = get("objectives.entity_replacement")
case = mech.example(0, xp.float64, xp)
s = case.static
spans = []
for row in range(2):
    valid = to_numpy(s["mention_valid"])[row]
    spans.append([(int(a), int(b), int(y)) for a, b, y in zip(to_numpy(s["mention_start"])[row][valid],
                  to_numpy(s["mention_end"])[row][valid], to_numpy(s["mention_labels"])[row][valid])])
    print(to_numpy(s["ids"])[row].tolist(), "mentions (start, end, replaced):", spans[row])
outputs, _ = mech.forward(case)
print({k: round(float(v), 4) for k, v in outputs.items()})

# %% [markdown]
# ## 3. Where the gradient of the entity loss lands
# For each sentence alone, the oracle's backward of $L_{ent}$ (no MLM term) gives the gradient of the position
# embeddings, $\bar p_t$: the gradient that reached position $t$ of the input. Its norm peaks at the mention
# boundaries (marked), where $\bar h$ enters; attention spreads a smaller part to the other positions.

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 3.2), sharey=True)
for row, ax in enumerate(axes):
    one_row = dataclasses.replace(case, static={k: v[row:row + 1] for k, v in s.items()})  # sentence `row` alone
    _, cache = mech.forward(one_row)
    grads = mech.backward(cache, {"loss": 0.0, "ent_loss": 1.0, "mlm_loss": 0.0})  # d L_ent only
    norm = np.linalg.norm(to_numpy(grads["pos"]), axis=-1)
    ax.bar(np.arange(norm.size), norm, color="lightgrey", label="other positions")
    for a, b, y in spans[row]:
        if a != b:
            ax.bar([a], norm[a], color="tab:green", label="mention start")
        ax.bar([b], norm[b], color="tab:red" if a != b else "tab:purple",
               label="mention end" if a != b else "one-token mention (start = end)")
        ax.annotate("replaced" if y else "original", (0.5 * (a + b), max(norm[a], norm[b])), ha="center",
                    va="bottom", fontsize=8)
    ax.set_xlabel("position $t$")
    ax.set_title(f"sentence {row}: $\\|\\bar p_t\\|$ from $L_{{ent}}$ alone")
axes[0].set_ylabel("gradient norm")
handles = {h.get_label(): h for a in axes for h in a.get_legend_handles_labels()[0]}
fig.legend(handles.values(), handles.keys(), loc="upper center", ncol=4, bbox_to_anchor=(0.5, 1.08), frameon=False)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 4. The backward, checked against finite differences
# The registered example in float64, along random directions. A pass means the boundary gathers'
# transposes (including a one-token mention receiving both halves), the classifier, the tied MLM head and
# the encoder all agree with central differences of the forward to about $10^{-8}$ relative.

# %%
report = check_mechanism(mech, mode="fast")
print(report.table().splitlines()[-1])
assert report.passed
