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
# Wang et al. (ICLR 2020, arXiv:1908.04577). On top of BERT's masked LM, StructBERT shuffles a few
# trigrams of unmasked tokens and asks the model to put every token back (word objective), and
# asks whether a second sentence is the next one, the previous one, or from another document
# (sentence objective). This notebook shows the constructed examples as text.

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
# ## The hand-derived backward against finite differences (fast mode)

# %%
for name in ("objectives.structbert_word", "objectives.structbert_sentence"):
    report = check_mechanism(get(name), mode="fast")
    print(name, report.table().splitlines()[-1])
    assert report.passed
