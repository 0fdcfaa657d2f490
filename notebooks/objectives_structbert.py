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
# # StructBERT: word and sentence structural objectives
#
# Docs page: [`docs/mechanisms/objectives.structbert.md`](../docs/mechanisms/objectives.structbert.md) (the equations and the derived backward).
#
# Code: [`reference/objectives/structbert_word.py`](../reference/objectives/structbert_word.py) and
# [`reference/objectives/structbert_sentence.py`](../reference/objectives/structbert_sentence.py).
#
# **What it is for.** Wang et al. (ICLR 2020, arXiv:1908.04577) teach BERT the *order* of language at two
# levels. Masked LM alone never sees scrambled text; StructBERT shuffles a few trigrams and asks the model to
# put every token back (word objective), and asks whether a second sentence follows the first, precedes it,
# or comes from another document (sentence objective, harder than BERT's next-sentence prediction).
#
# **The word objective.** A trigram $(x_t, x_{t+1}, x_{t+2})$ of unmasked tokens is permuted by a
# $\pi \ne \mathrm{id}$, $\tilde x_{t+j} = x_{t+\pi(j)}$; the model reads $\tilde x$ and must predict the original
# token at every position $t \in \mathcal{S}$ of a shuffled trigram (Eq. 1), with the MLM head shared:
# $$\ell_t = \mathrm{MLMHead}(\mathrm{Encoder}(\tilde x))_t,\qquad
#   L_{word} = -\frac{1}{|\mathcal{S}|}\sum_{t\in\mathcal{S}} \log \operatorname{softmax}(\ell_t)_{x_t},\qquad
#   L = L_{MLM} + L_{word}.$$
# Its backward is the cross-entropy's, $\bar\ell_t = (p_t - \mathrm{onehot}(x_t))/|\mathcal{S}|$ on $\mathcal{S}$
# (and $/|\mathcal{M}|$ on the masked positions), then the tied head and the encoder.
#
# **The sentence objective.** For the pair $[\mathrm{CLS}]\,S_1\,[\mathrm{SEP}]\,S_2\,[\mathrm{SEP}]$ with label
# $y \in \{\text{next}, \text{previous}, \text{random}\}$, BERT's pooler reads the [CLS] state:
# $$c = \tanh(h_{\mathrm{CLS}} W_p + b_p),\qquad z = c W_c + b_c,\qquad
#   L_{sent} = -\frac{1}{B}\sum_b \log \operatorname{softmax}(z_b)_{y_b},$$
# so only the [CLS] position receives gradient from the head: $\bar h_{\mathrm{CLS}} = \big((\bar z W_c^\top)\odot(1-c^2)\big) W_p^\top$.
#
# **The intuition.** Restoring a shuffled trigram needs the model to know which orders are plausible; telling
# "previous" from "next" needs it to know which way a text runs. This notebook shows the constructed examples
# as text, the two losses on the registered examples, and the finite-difference check.

# %%
import numpy as np

from gradients.check import check_mechanism
from reference.backend import namespace, to_numpy
from reference.nn.losses import IGNORE_INDEX
from reference.objectives.structbert_sentence import sample_sentence_pairs
from reference.objectives.structbert_word import sample_structbert_word
from reference.registry import get

xp = namespace("numpy")
rng = np.random.default_rng(1)
VOCAB = ["[PAD]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "it", "was", "warm", "then",
         "slept", "a", "dog", "barked"]
words = lambda ids: " ".join(VOCAB[i] for i in ids)

# %% [markdown]
# ## Word objective: mask, then shuffle trigrams of unmasked tokens
# Each chosen trigram gets a permutation that is not the identity; the targets are the original
# tokens at all three positions. `_` marks a position without a target.

# %%
sentence = [1, 4, 5, 6, 7, 4, 8, 9, 10, 11, 12, 9, 13, 2]
ids = xp.asarray([sentence])
built = sample_structbert_word(rng, ids, ids != 0, mask_id=3, vocab_size=len(VOCAB), special_ids=(0, 1, 2, 3),
                               trigram_rate=0.2)
show = lambda t: " ".join("_" if v == IGNORE_INDEX else VOCAB[v] for v in to_numpy(t)[0])
print("original    :", words(sentence))
print("input       :", words(to_numpy(built.input_ids)[0]))
print("MLM targets :", show(built.mlm_targets))
print("word targets:", show(built.word_targets))
print("trigram starts", built.trigram_starts[0], "permutations", built.shuffles[0])

# %% [markdown]
# ## Sentence objective: next, previous or random
# Labels 0 (next), 1 (previous), 2 (random, from another document), each with probability 1/3.

# %%
documents = [[[4, 5, 6, 7, 4, 8], [9, 10, 11], [12, 9, 13]], [[14, 15, 16]]]
pairs = sample_sentence_pairs(rng, documents, 6, seq_len=14, cls_id=1, sep_id=2, pad_id=0, xp=xp)
names = ["next", "previous", "random"]
for row in range(6):
    text = words([t for t in to_numpy(pairs.ids)[row] if t != 0])
    print(f"{names[int(to_numpy(pairs.labels)[row])]:>8}: {text}")

# %% [markdown]
# ## The two losses on the registered examples
# The registered cases (a small random encoder): the word case returns $L$, $L_{MLM}$ and $L_{word}$; the
# sentence case $L_{sent}$. Compare them with the losses of uniform guesses, $\log V$ and $\log 3$.

# %%
for name in ("objectives.structbert_word", "objectives.structbert_sentence"):
    mech = get(name)
    outputs, _ = mech.forward(mech.example(0, xp.float64, xp))
    vocab = mech.example(0, xp.float64, xp).params["tok"].shape[0]
    print(name, {k: round(float(v), 4) for k, v in outputs.items() if getattr(v, "ndim", 0) == 0},
          f"(log V = {np.log(vocab):.4f}, log 3 = {np.log(3):.4f})")

# %% [markdown]
# ## The hand-derived backward against finite differences (fast mode)
# A pass means the shared head's two uses (masked and shuffled positions), the tied output projection and the
# pooler's tanh all agree with central differences of the forward to about $10^{-8}$ relative, and that
# the non-[CLS] positions get gradient only through the encoder.

# %%
for name in ("objectives.structbert_word", "objectives.structbert_sentence"):
    report = check_mechanism(get(name), mode="fast")
    print(name, report.table().splitlines()[-1])
    assert report.passed
