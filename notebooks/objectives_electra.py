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
# # ELECTRA: replaced-token detection
#
# Docs page: [`docs/mechanisms/objectives.electra.md`](../docs/mechanisms/objectives.electra.md) (the equations and the derived backward).
#
# Code: [`reference/objectives/electra.py`](../reference/objectives/electra.py).
#
# **What it is for.** Clark et al. (ICLR 2020, arXiv:2003.10555) make pre-training more sample-efficient than
# masked language modelling: BERT learns only from the 15% of positions it masks, ELECTRA's discriminator
# learns from every position, by telling original tokens from plausible replacements.
#
# **The equations.** A small generator $G$ (a masked LM) sees the masked input $x^{\text{masked}}$ and
# fills each masked position $t \in \mathcal{M}$ with a sample $\hat x_t \sim p_G(\cdot \mid x^{\text{masked}})_t$.
# The discriminator $D$ reads the corrupted sequence $x^{\text{corrupt}}$ and predicts, at every position,
# whether the token was replaced:
# $$L_{MLM} = -\frac{1}{|\mathcal{M}|}\sum_{t\in\mathcal{M}} \log p_G(x_t \mid x^{\text{masked}})_t,\qquad
#   L_{Disc} = -\frac{1}{n}\sum_{t} \Big[y_t \log D_t + (1-y_t)\log(1-D_t)\Big],$$
# with $y_t = [x^{\text{corrupt}}_t \ne x_t]$ and $L = L_{MLM} + \lambda L_{Disc}$, $\lambda = 50$. The sample is not
# differentiated (no gradient flows from $D$ into $G$ through it); $G$ and $D$ share the token and position
# embeddings, so the shared table's gradient is the sum of both uses.
#
# **The intuition.** A replacement is hard to detect exactly when the generator is good, so the
# discriminator's task grows harder as training goes on; a sample that happens to equal the original counts
# as original. This notebook builds one example as text, runs the oracle, and checks its hand-derived backward.

# %%
import matplotlib.pyplot as plt
import numpy as np

from gradients.check import check_mechanism
from reference.backend import namespace, to_numpy
from reference.objectives.electra import electra_forward, init_electra, sample_electra_masking, sample_gumbel
from reference.registry import get

xp = namespace("numpy")
rng = np.random.default_rng(0)
VOCAB = ["[PAD]", "[CLS]", "[SEP]", "[MASK]", "the", "chef", "cooked", "a", "meal", "ate", "dog", "soup"]
V = len(VOCAB)
words = lambda ids: " ".join(VOCAB[i] for i in ids)

# %% [markdown]
# ## Masking, as in the authors' `pretrain_helpers.mask`
# `round(mask_rate * n_real)` positions among non-special tokens; 85% of them show `[MASK]`, the
# rest keep their token (no random replacement).

# %%
sentences = [[1, 4, 5, 6, 7, 8, 2, 0, 0], [1, 4, 10, 9, 4, 11, 2, 0, 0]]
ids = xp.asarray(sentences)
pad = ids != 0
masking = sample_electra_masking(rng, ids, pad, mask_rate=0.25, mask_id=3, special_ids=(0, 1, 2, 3))
for row in range(2):
    print("original :", words(sentences[row]))
    print("generator:", words(to_numpy(masking.generator_ids)[row]))

# %% [markdown]
# ## Sampling with explicit Gumbel noise, and the labels
# $\hat x_t = \arg\max_v(\ell_{t,v}/\tau + g_{t,v})$ is a sample of $\mathrm{softmax}(\ell_t/\tau)$. The
# generator here is untrained (random weights), so its samples rarely hit the original token and may be special
# tokens: the authors' code does not forbid them either. A sample equal to the original is labelled original.

# %%
params = init_electra(rng, vocab=V, n_positions=9, width=4, d_gen=3, d_disc=4, ff_gen=5, ff_disc=6,
                      xp=xp, dtype=xp.float64)
gumbel = sample_gumbel(rng, (2, 9, V), xp=xp, dtype=xp.float64)
out, cache = electra_forward(ids, pad, masking.masked, masking.generator_ids, gumbel, params,
                             n_heads_gen=1, n_heads_disc=2)
for row in range(2):
    print("corrupted:", words(to_numpy(out.corrupted)[row]))
    print("labels   :", " ".join(str(int(v)) for v in to_numpy(out.labels)[row]))
print(f"L_MLM = {float(out.mlm_loss):.4f}, L_Disc = {float(out.disc_loss):.4f}, L = {float(out.loss):.4f}")

# %% [markdown]
# ## The Gumbel-max trick samples the softmax
# Frequencies of the argmax over many noise draws against $\mathrm{softmax}(\ell/\tau)$, at the first
# **masked** position of the first sentence (the position whose token the generator must guess).

# %%
from reference.objectives.electra import sample_replacements

t_masked = int(np.flatnonzero(to_numpy(masking.masked)[0])[0])  # first masked position of sentence 0
probs = to_numpy(cache.generator.mlm.p)[0, t_masked]  # generator softmax at that position
logits = np.log(probs)
n = 5000
g = sample_gumbel(rng, (1, n, V), xp=xp, dtype=xp.float64)
sampled, _, _ = sample_replacements(xp.asarray(np.broadcast_to(logits, (1, n, V)).copy()), g,
                                    xp.zeros((1, n), dtype=xp.int64), xp.ones((1, n), dtype=xp.bool))
freq = np.bincount(to_numpy(sampled).ravel(), minlength=V) / n
fig, ax = plt.subplots(figsize=(7, 2.5))
ax.bar(np.arange(V) - 0.2, np.exp(logits), width=0.4, label="softmax")
ax.bar(np.arange(V) + 0.2, freq, width=0.4, label="Gumbel-max frequency")
ax.set_xticks(range(V), VOCAB, rotation=45)
ax.set_ylabel("probability")
ax.set_title(f"generator distribution at masked position {t_masked} "
             f"(original token '{VOCAB[sentences[0][t_masked]]}')")
ax.legend()
fig.tight_layout()
plt.show()
top = int(probs.argmax())
print(f"largest probability {probs.max():.2f} ('{VOCAB[top]}'); uniform would be {1 / V:.2f}: an untrained "
      "generator is spread out but not uniform")

# %% [markdown]
# ## The backward against finite differences
# The registered example (its noise kept away from ties) in fast mode: random directions, the
# dot-product test. The shared table's gradient sums the generator's input, its tied output
# projection and the discriminator's input. A pass means all three uses are summed, the sampled tokens are
# treated as constants exactly as the forward defines, and both losses' gradients agree with central
# differences to about $10^{-8}$ relative.

# %%
report = check_mechanism(get("objectives.electra"), mode="fast")
print(report.table().splitlines()[-1])
assert report.passed
