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
#
# Xiong et al. (ICLR 2020, arXiv:1912.09637). Entity mentions are replaced by other entities *of
# the same type*; a binary classifier over the mention's first and last token states says whether
# each mention is original or replaced. A masked LM at a reduced rate, never inside mentions, runs
# alongside. This notebook shows replacements as text and the boundary-token gradient scatter.

# %%
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
# ## Replacements keep the type; two adjacent mentions are never both replaced

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
# ## The registered example and its gradient
# Its table: Curie=[11], Bohr=[12, 7] (persons); Paris=[7], Berlin=[8, 9], Rome=[10] (cities).
# Row 0 had Paris replaced by Rome; row 1 had Bohr (two tokens) replaced by Curie (one token), so
# the spans after it moved left, and Berlin, adjacent to a replaced mention, was kept.
# A one-token mention has the same start and end token, so its position receives both halves of
# the classifier's gradient $[\bar r^s; \bar r^e]$.

# %%
mech = get("objectives.entity_replacement")
case = mech.example(0, xp.float64, xp)
s = case.static
for row in range(2):
    ids = to_numpy(s["ids"])[row]
    spans = [(int(a), int(b), int(y)) for a, b, y, v in zip(to_numpy(s["mention_start"])[row],
             to_numpy(s["mention_end"])[row], to_numpy(s["mention_labels"])[row], to_numpy(s["mention_valid"])[row])
             if v]
    print(ids.tolist(), "mentions (start, end, replaced):", spans)
outputs, _ = mech.forward(case)
print({k: round(float(v), 4) for k, v in outputs.items()})
report = check_mechanism(mech, mode="fast")
print(report.table().splitlines()[-1])
assert report.passed
