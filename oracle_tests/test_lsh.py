"""Reformer LSH attention: gradient checks, an independent torch implementation, paper properties, bad input.

The torch implementation below is written from the equations of spec attention.md §3.2 with a loop over
(batch, head) and autograd for every gradient; it shares no code with reference/attention/lsh.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gradients import check_mechanism
from gradients.check import random_cotangents
from reference.attention.lsh import (hash_margins, lsh_attention_backward, lsh_attention_forward, lsh_hash,
                                     project_queries, sample_rotations)
from reference.attention.lsh_dense import lsh_dense_backward, lsh_dense_forward
from reference.attention.lsh_examples import CHUNK_LEN, H, N_BUCKETS, example, init_lsh
from reference.backend import namespace, to_numpy
from reference.registry import get, select

VARIANTS = [m.name for m in select(["attention.lsh"])]


def _case(xp=None, seed=0):
    xp = xp or namespace("numpy")
    return example(seed, xp.float64, xp)


# --- (a) finite differences -------------------------------------------------------------------

@pytest.mark.parametrize("name", VARIANTS)
def test_gradient_check_full_numpy(name):
    report = check_mechanism(get(name), backend="numpy", mode="full")
    assert report.passed, report.table()
    assert max(r.max_abs_error for r in report.results) < 1e-9, report.table()


# array_api_strict is ~5x slower: every element of the plain variant (thinned), random directions for all;
# the CLI (python -m gradients check attention.lsh --backend array_api_strict) runs every element.
@pytest.mark.parametrize("name", VARIANTS)
def test_gradient_check_array_api_strict(name):
    report = check_mechanism(get(name), backend="array_api_strict", mode="fast")
    assert report.passed, report.table()
    if name == "attention.lsh":
        report = check_mechanism(get(name), backend="array_api_strict", mode="full", max_elements=12)
        assert report.passed, report.table()


def test_example_keeps_hashes_away_from_ties():
    case = _case()
    q = project_queries(case.inputs["x"], case.params["w_qk"], H)
    assert float(np.min(to_numpy(hash_margins(q, case.static["rotations"])))) >= 0.05


# --- (b) an independent torch implementation ---------------------------------------------------

def _t(a):
    return torch.from_numpy(np.array(to_numpy(a)))


def torch_lsh(x, w_qk, w_v, w_o, buckets, *, n_heads, n_buckets, chunk_len, causal, across):
    """Reformer LSH attention from the equations, one (example, head) at a time."""
    bsz, length, _ = x.shape
    dk, dv = w_qk.shape[1] // n_heads, w_v.shape[1] // n_heads
    rounds = buckets.shape[2]
    outs = []
    for b in range(bsz):
        heads = []
        for h in range(n_heads):
            q = x[b] @ w_qk[:, h * dk:(h + 1) * dk]  # (L, Dk)
            v = x[b] @ w_v[:, h * dv:(h + 1) * dv]  # (L, Dv)
            bk = buckets[b, h] + n_buckets * torch.arange(rounds)[:, None]  # (R, L) round-offset buckets
            pos = torch.arange(length).repeat(rounds)  # (R L,)
            flat_b = bk.reshape(-1)
            order = torch.tensor(sorted(range(rounds * length), key=lambda f: (int(flat_b[f]), int(pos[f]))))
            sp, sb = pos[order], flat_b[order]
            sq, sv = q[sp], v[sp]
            k = sq / torch.sqrt((sq ** 2).mean(-1, keepdim=True) + 1e-6) / math.sqrt(dk)
            n_chunks = rounds * length // chunk_len
            so, lam = [], []
            for c in range(n_chunks):
                cur = torch.arange(c * chunk_len, (c + 1) * chunk_len)
                prev = torch.arange(((c - 1) % n_chunks) * chunk_len, ((c - 1) % n_chunks + 1) * chunk_len)
                win = torch.cat([prev, cur])
                z = sq[cur] @ k[win].T  # (m, 2m)
                same_pos = sp[cur][:, None] == sp[win][None, :]
                z = torch.where(same_pos, z - 1e5, z)
                ok = torch.ones_like(same_pos)
                if not across:
                    ok = ok & (sb[cur][:, None] == sb[win][None, :])
                if causal:
                    ok = ok & (sp[win][None, :] <= sp[cur][:, None])
                z = torch.where(ok, z, torch.full_like(z, -1e9))
                lse = torch.logsumexp(z, -1)
                so.append(torch.softmax(z, -1) @ sv[win])
                lam.append(lse)
            so, lam = torch.cat(so), torch.cat(lam)  # (R L, Dv), (R L,)
            inverse = torch.empty_like(order)
            inverse[order] = torch.arange(order.numel())
            o = so[inverse].reshape(rounds, length, dv)  # round r, position i
            lr = lam[inverse].reshape(rounds, length)
            w = torch.softmax(lr, 0)  # (R, L)
            heads.append((w[..., None] * o).sum(0))
        outs.append(torch.cat(heads, -1))
    return torch.stack(outs) @ w_o


@pytest.mark.parametrize("name", VARIANTS)
def test_agrees_with_torch_autograd(name):
    mech = get(name)
    case = _case()
    outputs, cache = mech.forward(case)
    cot = random_cotangents(outputs)
    grads = mech.backward(cache, cot)
    leaves = {k: _t(v).requires_grad_(True) for k, v in case.differentiable.items()}
    buckets = _t(case.static["buckets"])
    if name == "attention.lsh.dense":  # one chunk per round covers the sequence: the dense form
        y = torch_lsh(leaves["x"], leaves["w_qk"], leaves["w_v"], leaves["w_o"], buckets, n_heads=H,
                      n_buckets=N_BUCKETS, chunk_len=buckets.shape[-1], causal=False, across=False)
    else:
        y = torch_lsh(leaves["x"], leaves["w_qk"], leaves["w_v"], leaves["w_o"], buckets, n_heads=H,
                      n_buckets=N_BUCKETS, chunk_len=CHUNK_LEN, causal=name.endswith("causal"),
                      across=name.endswith("across_buckets"))
    (y * _t(cot["y"])).sum().backward()
    _close(y.detach().numpy(), outputs["y"], "y")
    for k, leaf in leaves.items():
        _close(leaf.grad.numpy(), grads[k], k)


def _close(actual, expected, name):
    """|a - e| <= 1e-10 (|e| + max(1, max |e|)): agreement to 1e-10 relative to the tensor's scale."""
    e = to_numpy(expected)
    np.testing.assert_allclose(actual, e, rtol=1e-10, atol=1e-10 * max(1.0, float(np.abs(e).max())), err_msg=name)


# --- (c) paper properties ----------------------------------------------------------------------

def _one_bucket_inputs(rng, batch=2, length=7, d=5, dk=3, dv=4):
    """One head; rotations chosen so every query lands in bucket 0 (q . r > 0 for all positions)."""
    xp = namespace("numpy")
    params = init_lsh(rng, d, 1, dk, dv, xp=xp, dtype=xp.float64)
    rot = rng.standard_normal((batch, 1, dk, 1, 1))
    a = np.stack([params["w_qk"] @ rot[b, 0, :, 0, 0] for b in range(batch)])  # (B, D) direction of q . r in x
    x = rng.standard_normal((batch, length, d))
    score = np.einsum("btd,bd->bt", x, a)  # test-side helper, not oracle code
    x = x + ((1.0 + np.abs(score).max(1)) / (a * a).sum(1))[:, None, None] * a[:, None, :]
    return x, params, rot


def test_one_bucket_one_chunk_is_full_shared_qk_attention():
    rng = np.random.default_rng(3)
    x, params, rot = _one_bucket_inputs(rng)
    q = project_queries(x, params["w_qk"], 1)
    buckets = lsh_hash(q, rot)
    assert np.all(buckets == 0), buckets
    y, _ = lsh_attention_forward(x, params, buckets, n_heads=1, n_buckets=2, chunk_len=x.shape[1])
    # Full shared-QK attention with the self mask, written out.
    q = x @ params["w_qk"]
    k = q / np.sqrt((q * q).sum(-1, keepdims=True) + q.shape[-1] * 1e-6)  # q_j/|q_j| with the code's 1e-6 floor
    z = q @ np.swapaxes(k, 1, 2) - 1e5 * np.eye(x.shape[1])
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    full = p @ (x @ params["w_v"]) @ params["w_o"]
    np.testing.assert_allclose(y, full, rtol=1e-12, atol=1e-13)


def test_repeating_the_same_buckets_in_every_round_gives_the_single_round_output():
    """Holds when the cyclic wrap (first chunk looking back at the last) joins no bucket: chunk_len=2 gives
    4 chunks a round here. With 2 chunks a round it fails: a lone round's first chunk sees its own last
    chunk, while in a repeated round it sees the previous round's last chunk (masked, other bucket)."""
    case = _case()
    one = case.static["buckets"][:, :, :1]
    sorted_b = np.sort(one, axis=-1)
    assert np.all(sorted_b[..., :2].max(-1) < sorted_b[..., -2:].min(-1))  # first and last chunk: no common bucket
    kw = dict(n_heads=H, n_buckets=N_BUCKETS, chunk_len=2)
    y1, _ = lsh_attention_forward(case.inputs["x"], case.params, one, **kw)
    y3, c3 = lsh_attention_forward(case.inputs["x"], case.params, np.concatenate([one] * 3, axis=2), **kw)
    np.testing.assert_allclose(y3, y1, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(c3.rounds.omega, 1.0 / 3.0, rtol=1e-12)  # equal round weights, summing to 1


@pytest.mark.parametrize("causal", [False, True])
def test_chunked_equals_dense_when_one_chunk_covers_a_round(xp, causal):
    case = _case(xp)
    x, params, buckets = case.inputs["x"], case.params, case.static["buckets"]
    length = x.shape[1]
    y, cache = lsh_attention_forward(x, params, buckets, n_heads=H, n_buckets=N_BUCKETS, chunk_len=length,
                                     causal=causal)
    yd, cache_d = lsh_dense_forward(x, params, buckets, n_heads=H, n_buckets=N_BUCKETS, causal=causal)
    np.testing.assert_allclose(to_numpy(y), to_numpy(yd), rtol=1e-12, atol=1e-14)
    dy = xp.asarray(np.random.default_rng(1).standard_normal(tuple(y.shape)))
    dx, g = lsh_attention_backward(dy, cache)
    dxd, gd = lsh_dense_backward(dy, cache_d)
    np.testing.assert_allclose(to_numpy(dx), to_numpy(dxd), rtol=1e-11, atol=1e-13)
    for k in g:
        np.testing.assert_allclose(to_numpy(g[k]), to_numpy(gd[k]), rtol=1e-11, atol=1e-13, err_msg=k)


def test_causal_position_zero_sees_only_itself_and_never_leaks():
    case = _case()
    x = case.inputs["x"]
    y, _ = lsh_attention_forward(x, case.params, case.static["buckets"], n_heads=H, n_buckets=N_BUCKETS,
                                 chunk_len=CHUNK_LEN, causal=True)
    x2 = x.copy()
    x2[:, 5:] += 10.0  # change the future
    # buckets fixed: changing later tokens must not change earlier outputs
    y2, _ = lsh_attention_forward(x2, case.params, case.static["buckets"], n_heads=H, n_buckets=N_BUCKETS,
                                  chunk_len=CHUNK_LEN, causal=True)
    np.testing.assert_allclose(y2[:, :5], y[:, :5], rtol=1e-13, atol=1e-14)
    v0 = x[:, 0] @ case.params["w_v"] @ case.params["w_o"]  # position 0 attends to itself only
    # its lam is z_self - 1e5 in every round: rounding of 1e5 (~1e-11) shows in the round weights' sum
    np.testing.assert_allclose(y[:, 0], v0, rtol=1e-10, atol=1e-11)


def test_hash_is_invariant_to_positive_scaling_of_queries():
    rng = np.random.default_rng(5)
    q = rng.standard_normal((2, 3, 7, 4))
    rot = sample_rotations(rng, 2, 3, 4, 2, 6, xp=namespace("numpy"), dtype=np.float64)
    np.testing.assert_array_equal(lsh_hash(q, rot), lsh_hash(3.7 * q, rot))
    assert lsh_hash(q, rot).max() < 6


# --- (d) bad input -----------------------------------------------------------------------------

def test_bad_input_names_the_argument():
    case = _case()
    x, p, bk = case.inputs["x"], case.params, case.static["buckets"]
    kw = dict(n_heads=H, n_buckets=N_BUCKETS, chunk_len=CHUNK_LEN)
    with pytest.raises(ValueError, match="x must have shape"):
        lsh_attention_forward(x[0], p, bk, **kw)
    with pytest.raises(ValueError, match="buckets must lie in"):
        lsh_attention_forward(x, p, bk + N_BUCKETS, **kw)
    with pytest.raises(ValueError, match="buckets must have shape"):
        lsh_attention_forward(x, p, bk[:, :2], **kw)
    with pytest.raises(TypeError, match="buckets must be an integer"):
        lsh_attention_forward(x, p, bk * 1.0, **kw)
    with pytest.raises(ValueError, match="chunk_len must divide"):
        lsh_attention_forward(x, p, bk, n_heads=H, n_buckets=N_BUCKETS, chunk_len=3)
    with pytest.raises(ValueError, match="params is missing"):
        lsh_attention_forward(x, {"w_qk": p["w_qk"]}, bk, **kw)
    with pytest.raises(ValueError, match="w_o must have shape"):
        lsh_attention_forward(x, {**p, "w_o": p["w_o"][:-1]}, bk, **kw)
    with pytest.raises(ValueError, match="n_buckets must be an even"):
        sample_rotations(np.random.default_rng(0), 1, 1, 2, 1, 3, xp=namespace("numpy"), dtype=np.float64)
    with pytest.raises(ValueError, match="rotations must have shape"):
        lsh_hash(project_queries(x, p["w_qk"], H), case.static["rotations"][:, :2])


# --- (e) optional: HuggingFace transformers' LSHSelfAttention ----------------------------------

@pytest.mark.parametrize("causal", [False, True])
def test_agrees_with_huggingface_lsh_self_attention_across_buckets(causal):
    """HF attends to the whole window (our attend_across_buckets=True) and replaces the self score by the
    constant -1e5; with at least one other key per row (or identical self-only rounds) the two agree."""
    transformers = pytest.importorskip("transformers")
    from transformers.models.reformer.modeling_reformer import LSHSelfAttention

    rng = np.random.default_rng(11)
    b, h, length, d, dh, rounds, nb, m = 2, 3, 8, 6, 4, 2, 4, 4
    xp = namespace("numpy")
    x = rng.standard_normal((b, length, d))
    params = init_lsh(rng, d, h, dh, dh, xp=xp, dtype=np.float64)
    rot = sample_rotations(rng, b, h, dh, rounds, nb, xp=xp, dtype=np.float64)
    buckets = lsh_hash(project_queries(x, params["w_qk"], h), rot)
    y, cache = lsh_attention_forward(x, params, buckets, n_heads=h, n_buckets=nb, chunk_len=m, causal=causal,
                                     attend_across_buckets=True)
    dy = rng.standard_normal(y.shape)
    dx, grads = lsh_attention_backward(dy, cache)

    config = transformers.ReformerConfig(hidden_size=d, num_attention_heads=h, attention_head_size=dh,
                                         num_hashes=rounds, num_buckets=nb, lsh_attn_chunk_length=m,
                                         lsh_num_chunks_before=1, lsh_num_chunks_after=0, is_decoder=causal,
                                         lsh_attention_probs_dropout_prob=0.0, attn_layers=["lsh"])
    layer = LSHSelfAttention(config).double().eval()
    with torch.no_grad():
        layer.query_key.weight.copy_(torch.from_numpy(params["w_qk"].T))  # nn.Linear stores W^T
        layer.value.weight.copy_(torch.from_numpy(params["w_v"].T))
    xt = torch.from_numpy(x).requires_grad_(True)
    w_o = torch.from_numpy(params["w_o"]).requires_grad_(True)
    offset = torch.from_numpy(buckets + nb * np.arange(rounds)[:, None]).reshape(b, h, rounds * length)
    context = layer(xt, buckets=offset).hidden_states  # (B, L, H d), before the output projection
    yt = context @ w_o
    (yt * torch.from_numpy(dy)).sum().backward()
    _close(yt.detach().numpy(), y, "y")
    _close(xt.grad.numpy(), dx, "x")
    _close(layer.query_key.weight.grad.numpy().T, grads["w_qk"], "w_qk")
    _close(layer.value.weight.grad.numpy().T, grads["w_v"], "w_v")
    _close(w_o.grad.numpy(), grads["w_o"], "w_o")
