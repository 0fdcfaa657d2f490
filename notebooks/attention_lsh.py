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
# Code: [`reference/attention/lsh.py`](../reference/attention/lsh.py) (chunked) and
# [`reference/attention/lsh_dense.py`](../reference/attention/lsh_dense.py) (the same masks, computed densely).
#
# **What it is for.** Kitaev, Kaiser and Levskaya (ICLR 2020, arXiv:2001.04451) make attention affordable on
# long sequences. Full attention compares every query with every key, $O(L^2)$ time and memory. Softmax
# weights are dominated by the few keys closest to the query, so Reformer only compares vectors that a
# locality-sensitive hash puts in the same bucket.
#
# **The equations.** Queries and keys are shared, $Q = XW_{qk}$, keys $k_j = q_j/\lVert q_j\rVert$. For hash round
# $r$ a random matrix $R_r \in \mathbb{R}^{d_k\times n_b/2}$ gives the bucket (Eq. 4, angular LSH)
# $$h_r(i) = \arg\max\,[\,q_i R_r\,;\ -q_i R_r\,].$$
# The sequence is sorted by (round, bucket, position) and cut into chunks of $m$ slots; a query attends to the
# keys of its own bucket inside its chunk and the previous one (Eq. 3, per round, with the self term
# $-10^5$ on $j = i$):
# $$o^{(r)}_i = \sum_{j \in \mathcal{P}^{(r)}_i} \exp\big(z_{ij} - \lambda^{(r)}_i\big)\, v_j,\qquad
#   \lambda^{(r)}_i = \log \sum_{j \in \mathcal{P}^{(r)}_i} e^{z_{ij}},$$
# and the rounds are combined by their normalisers, $o_i = \sum_r \operatorname{softmax}_r(\lambda^{(r)}_i)\, o^{(r)}_i$.
#
# **The intuition.** Sorting by bucket turns "attend within your bucket" into a band-diagonal matrix: after the
# sort, nearby slots mostly share a bucket, so a fixed window of $2m$ keys per query covers most of a bucket.
# The figures below draw exactly that: the dense hash-masked attention, then the same matrix in sorted order
# with the chunk windows on top, then what the chunked computation actually keeps.

# %%
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.patches import Patch, Rectangle

from gradients.check import check_mechanism
from reference.attention.lsh import init_lsh, lsh_attention_forward, lsh_hash, project_queries, sample_rotations
from reference.attention.lsh_dense import lsh_dense_forward
from reference.backend import namespace
from reference.registry import get

xp = namespace("numpy")
rng = np.random.default_rng(0)
B, H, L, D, DK = 1, 1, 32, 16, 8
N_HASHES, N_BUCKETS, CHUNK = 2, 8, 8
x = rng.standard_normal((B, L, D))
params = init_lsh(rng, D, H, DK, DK, xp=xp, dtype=np.float64)
bucket_cmap = ListedColormap(plt.get_cmap("tab10").colors[:N_BUCKETS])
bucket_norm = BoundaryNorm(np.arange(N_BUCKETS + 1) - 0.5, N_BUCKETS)
bucket_legend = [Patch(color=bucket_cmap(b), label=f"bucket {b}") for b in range(N_BUCKETS)]

# %% [markdown]
# ## 1. Angular hashing
# Rotations are an explicit input (drawn once by `sample_rotations`), so the buckets are data: a finite
# difference never flips one. Each round uses its own rotation, so two vectors that are split in one round
# may still meet in another.

# %%
rotations = sample_rotations(rng, B, H, DK, N_HASHES, N_BUCKETS, xp=xp, dtype=np.float64)
q = project_queries(x, params["w_qk"], H)
buckets = lsh_hash(q, rotations)  # (B, H, R, L)
fig, ax = plt.subplots(figsize=(10, 2.0))
ax.imshow(buckets[0, 0], cmap=bucket_cmap, norm=bucket_norm, aspect="auto")
ax.set_xlabel("position $i$")
ax.set_yticks(range(N_HASHES), [f"round {r}" for r in range(N_HASHES)])
ax.set_title("bucket $h_r(i)$ of every position in each hash round")
ax.legend(handles=bucket_legend, loc="upper left", bbox_to_anchor=(1.01, 1.15), fontsize=8, frameon=False)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 2. Sorting and chunking
# Items $(r, i)$ are sorted by round, then bucket, then position; the forward pass keeps the permutation in
# its cache. The sorted slots are cut into chunks of $m = 8$: chunk $c$ attends to chunks $c-1$ and $c$.

# %%
y, cache = lsh_attention_forward(x, params, buckets, n_heads=H, n_buckets=N_BUCKETS, chunk_len=CHUNK)
perm = np.asarray(cache.perm[0, 0])
sorted_rounds, sorted_pos = perm // L, perm % L
sorted_buckets = np.asarray(buckets)[0, 0][sorted_rounds, sorted_pos]
fig, ax = plt.subplots(figsize=(10, 2.6))
ax.scatter(np.arange(perm.size), sorted_pos, c=sorted_buckets, cmap=bucket_cmap, norm=bucket_norm, s=18)
for edge in range(0, perm.size + 1, CHUNK):
    ax.axvline(edge - 0.5, color="grey", lw=0.5)
ax.axvline(L - 0.5, color="black", lw=1.5)
ax.text(L / 2, L + 1, "round 0", ha="center"); ax.text(1.5 * L, L + 1, "round 1", ha="center")
ax.set_xlabel("sorted slot (grey lines: chunk boundaries, black: round boundary)")
ax.set_ylabel("original position")
ax.set_ylim(-1, L + 4)
ax.set_title("slots sorted by (round, bucket, position); colour = bucket")
ax.legend(handles=bucket_legend, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3. The attention pattern, in sorted order, with the chunk windows
# For round 0: (left) the dense twin's probabilities $P^{(0)}$ under the hash mask "same bucket, not yourself
# unless alone", in the original order, where a bucket is scattered over the sequence; (middle) the same
# matrix with rows and columns in sorted order, where each bucket is a block on the diagonal and the white
# rectangles are the windows (own chunk + previous chunk) that the chunked form may see; (right) the
# probabilities the chunked forward actually computed (`cache.p`), placed at their sorted slots. The coloured
# strips along the axes give the bucket of each row and column.

# %%
yd, cache_d = lsh_dense_forward(x, params, buckets, n_heads=H, n_buckets=N_BUCKETS)
r0 = 0
p_dense = np.asarray(cache_d.p)[0, 0, r0]  # (L, L) original order
order = sorted_pos[sorted_rounds == r0]  # round 0's positions in sorted order
p_sorted = p_dense[np.ix_(order, order)]
# chunked probabilities (C, m, 2m) into an (N, N) matrix of sorted slots; window = [chunk c-1 ; chunk c]
n_slots, n_chunks = perm.size, perm.size // CHUNK
p_chunk = np.zeros((n_slots, n_slots))
pc = np.asarray(cache.p)[0, 0]
for c in range(n_chunks):
    keys = np.r_[np.arange((c - 1) * CHUNK, c * CHUNK) % n_slots, np.arange(c * CHUNK, (c + 1) * CHUNK)]
    p_chunk[c * CHUNK:(c + 1) * CHUNK, keys] += pc[c]
p_chunk = p_chunk[r0 * L:(r0 + 1) * L, r0 * L:(r0 + 1) * L]
b_orig, b_sorted = np.asarray(buckets)[0, 0, r0], sorted_buckets[sorted_rounds == r0]

fig, axes = plt.subplots(1, 3, figsize=(15, 5.2), constrained_layout=True)
panels = [(p_dense, b_orig, "dense $P^{(0)}$, original order", "position"),
          (p_sorted, b_sorted, "dense $P^{(0)}$, sorted by bucket, chunk windows", "sorted slot"),
          (p_chunk, b_sorted, "chunked LSH attention (what is computed)", "sorted slot")]
for k, (ax, (mat, bks, title, label)) in enumerate(zip(axes, panels)):
    im = ax.imshow(mat, cmap="viridis", vmin=0, vmax=1, extent=(-0.5, L - 0.5, L - 0.5, -0.5))
    ax.imshow(bks[None, :], cmap=bucket_cmap, norm=bucket_norm, extent=(-0.5, L - 0.5, -0.5, -2.0), aspect="auto")
    ax.imshow(bks[:, None], cmap=bucket_cmap, norm=bucket_norm, extent=(-2.0, -0.5, L - 0.5, -0.5), aspect="auto")
    ax.set_xlim(-2.0, L - 0.5); ax.set_ylim(L - 0.5, -2.0)
    if k:
        for c in range(L // CHUNK):
            lo = max(c - 1, 0) * CHUNK  # chunk 0's previous chunk is the last one of the other round
            ax.add_patch(Rectangle((lo - 0.5, c * CHUNK - 0.5), (c + 1) * CHUNK - lo, CHUNK,
                                   fill=False, ec="white", lw=1.2))
    ax.set_title(title)
    ax.set_xlabel(f"key ({label})"); ax.set_ylabel(f"query ({label})")
fig.colorbar(im, ax=axes, shrink=0.8, label="attention probability")
fig.legend(handles=bucket_legend, loc="lower center", ncol=N_BUCKETS, fontsize=8, frameon=False,
           bbox_to_anchor=(0.45, -0.06))
plt.show()
print("chunked vs dense max |difference| with chunk_len = 8:", float(np.abs(y - yd).max()))
y_one, _ = lsh_attention_forward(x, params, buckets, n_heads=H, n_buckets=N_BUCKETS, chunk_len=L)
print("chunked vs dense with one chunk per round (chunk_len = L):", float(np.abs(y_one - yd).max()))

# %% [markdown]
# Where a bucket is longer than a window (a block on the middle panel's diagonal sticking out of its
# rectangle), some same-bucket keys are out of reach and the chunked output differs from the dense one;
# with one chunk per round the two agree to rounding. Causal masking and the self rule act on original
# positions although the sequence is sorted.
#
# ## 4. One bucket, one chunk = full shared-QK attention
# Rotations that send every token to one bucket, with one chunk spanning the sequence, give ordinary
# softmax attention with shared keys $k_j = q_j / \lVert q_j \rVert$ and the self mask: the property the
# test suite also asserts. The reference side below is written out in NumPy on purpose, independent of the oracle.

# %%
ones = np.zeros((B, H, 1, L), dtype=np.int64)  # every token in bucket 0
y_full_lsh, _ = lsh_attention_forward(x, params, ones, n_heads=H, n_buckets=2, chunk_len=L)
qq = x @ params["w_qk"]
k = qq / np.sqrt((qq ** 2).sum(-1, keepdims=True) + DK * 1e-6)
z = qq @ k.transpose(0, 2, 1) - 1e5 * np.eye(L)
attn = np.exp(z - z.max(-1, keepdims=True))
attn /= attn.sum(-1, keepdims=True)
print("max |LSH - full shared-QK attention|:", float(np.abs(y_full_lsh - attn @ (x @ params["w_v"]) @ params["w_o"]).max()))

# %% [markdown]
# ## 5. The backward, checked against finite differences
# The hand-derived backward (docs page, "Backward") runs the forward in reverse: round combination,
# un-sort, chunk softmax, window, key normalisation, sort. Below, the registered example
# (`attention.lsh`, buckets fixed with a margin so no finite difference flips one) is checked in float64
# along random directions. A pass means every gradient (input and the three weights) agrees with central
# differences of the forward to about $10^{-8}$ relative: the chain of scatter-adds through the sort and
# the window is right, including keys reached from two chunks.

# %%
report = check_mechanism(get("attention.lsh"), backend="numpy", mode="fast")
print(report.table())
assert report.passed
