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
# # LSH attention (Reformer): buckets, sorted chunks and the attention they compute
#
# Docs page: [`docs/mechanisms/attention.lsh.md`](../docs/mechanisms/attention.lsh.md) (the equations and the derived backward).
#
# Kitaev, Kaiser and Levskaya (ICLR 2020, arXiv:2001.04451). Full attention compares every query with
# every key. Reformer shares queries and keys, hashes them with random rotations so that similar vectors
# tend to share a bucket, sorts the sequence by bucket, cuts it into chunks and lets each chunk attend
# only to itself and the previous chunk. Several hash rounds are combined by their softmax normalisers.
# This notebook runs the oracle (`reference/attention/lsh.py`) on a small sequence and draws each step.

# %%
import matplotlib.pyplot as plt
import numpy as np

from reference.attention.lsh import lsh_attention_forward, lsh_hash, project_queries, sample_rotations
from reference.attention.lsh_dense import lsh_dense_forward
from reference.attention.lsh_examples import init_lsh
from reference.backend import namespace

xp = namespace("numpy")
rng = np.random.default_rng(0)
B, H, L, D, DK = 1, 1, 32, 16, 8
N_HASHES, N_BUCKETS, CHUNK = 2, 8, 8
x = rng.standard_normal((B, L, D))
params = init_lsh(rng, D, H, DK, DK, xp=xp, dtype=np.float64)

# %% [markdown]
# ## 1. Angular hashing
# A bucket is the argmax of $[qR; -qR]$ for a random $R \in \mathbb{R}^{d_k \times n_b/2}$: the nearest of
# $n_b$ signed directions. Rotations are an explicit input; each round uses its own.

# %%
rotations = sample_rotations(rng, B, H, DK, N_HASHES, N_BUCKETS, xp=xp, dtype=np.float64)
q = project_queries(x, params["w_qk"], H)
buckets = lsh_hash(q, rotations)  # (B, H, R, L)
fig, ax = plt.subplots(figsize=(8, 1.6))
ax.imshow(buckets[0, 0], cmap="tab10", aspect="auto")
ax.set_xlabel("position")
ax.set_yticks(range(N_HASHES), [f"round {r}" for r in range(N_HASHES)])
ax.set_title("bucket of every position in each hash round")
plt.show()
print(buckets[0, 0])

# %% [markdown]
# ## 2. Sorting and chunking
# Items $(r, i)$ are sorted by round, then bucket, then position. The sorted slots are cut into chunks of
# $m$; each chunk attends to itself and the previous chunk. The forward pass returns the permutation in
# its cache.

# %%
y, cache = lsh_attention_forward(x, params, buckets, n_heads=H, n_buckets=N_BUCKETS, chunk_len=CHUNK)
perm = cache.perm[0, 0]
sorted_rounds, sorted_pos = perm // L, perm % L
sorted_buckets = buckets[0, 0][sorted_rounds, sorted_pos]
fig, ax = plt.subplots(figsize=(9, 2.2))
ax.scatter(np.arange(perm.size), sorted_pos, c=sorted_buckets + N_BUCKETS * sorted_rounds, cmap="tab20", s=18)
for edge in range(0, perm.size + 1, CHUNK):
    ax.axvline(edge - 0.5, color="grey", lw=0.5)
ax.set_xlabel("sorted slot (grey lines: chunk boundaries)")
ax.set_ylabel("original position")
ax.set_title("sorted by (round, bucket, position); colour = bucket")
plt.show()

# %% [markdown]
# ## 3. The attention pattern
# The dense twin (`lsh_dense.py`) computes every round's full score matrix under the hash mask
# "same bucket, not yourself unless alone". The chunked form sees a subset of it: same-bucket keys that
# fall in the current or previous chunk. Below: each round's attention probabilities (dense), and the
# union over rounds weighted by the round weights.

# %%
yd, cache_d = lsh_dense_forward(x, params, buckets, n_heads=H, n_buckets=N_BUCKETS)
p = cache_d.p[0, 0]  # (R, L, L)
omega = cache_d.rounds.omega[0, 0]  # (R, L)
combined = (omega[:, :, None] * p).sum(0)
fig, axes = plt.subplots(1, N_HASHES + 1, figsize=(11, 3.6))
for r in range(N_HASHES):
    axes[r].imshow(p[r], cmap="viridis")
    axes[r].set_title(f"round {r}: P (hash mask)")
axes[-1].imshow(combined, cmap="viridis")
axes[-1].set_title("combined: sum_r omega_r P_r")
for a in axes:
    a.set_xlabel("key position")
axes[0].set_ylabel("query position")
plt.tight_layout()
plt.show()
print("chunked vs dense max |difference| with chunk_len = 8:", float(np.abs(y - yd).max()))
y_one, _ = lsh_attention_forward(x, params, buckets, n_heads=H, n_buckets=N_BUCKETS, chunk_len=L)
print("chunked vs dense with one chunk per round (chunk_len = L):", float(np.abs(y_one - yd).max()))

# %% [markdown]
# With chunks shorter than a bucket, some same-bucket keys fall outside the window and the two differ;
# with one chunk per round they agree to rounding. Causal masking and the self rule work on original
# positions even though the sequence is sorted.
#
# ## 4. One bucket, one chunk = full shared-QK attention
# Rotations that send every token to one bucket, with one chunk spanning the sequence, give ordinary
# softmax attention with shared keys $k_j = q_j / \lVert q_j \rVert$ and the self mask.

# %%
ones = np.zeros((B, H, 1, L), dtype=np.int64)  # every token in bucket 0
y_full_lsh, _ = lsh_attention_forward(x, params, ones, n_heads=H, n_buckets=2, chunk_len=L)
qq = x @ params["w_qk"]
k = qq / np.sqrt((qq ** 2).sum(-1, keepdims=True) + DK * 1e-6)
z = qq @ k.transpose(0, 2, 1) - 1e5 * np.eye(L)
attn = np.exp(z - z.max(-1, keepdims=True))
attn /= attn.sum(-1, keepdims=True)
print("max |LSH - full shared-QK attention|:", float(np.abs(y_full_lsh - attn @ (x @ params["w_v"]) @ params["w_o"]).max()))
