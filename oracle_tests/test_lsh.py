"""Reformer LSH attention: gradient checks, an independent torch implementation, paper properties,
the duplicate correction, padding, the float32 causal finding, HuggingFace.

The torch implementation below is written from the equations of spec attention.md §3.2 and the trax
duplicate count (findings.md) with loops over (batch, head) and (query, key) and autograd for every
gradient; it shares no code with reference/attention/lsh.py. Bad input: test_lsh_reversible_bad_input.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gradients import check_mechanism
from reference.attention.cases.lsh import EDGE_CONFIGS
from reference.attention.lsh import (
    hash_margins,
    init_lsh,
    lsh_attention_backward,
    lsh_attention_forward,
    lsh_hash,
    project_queries,
    sample_rotations,
)
from reference.attention.lsh_dense import lsh_dense_backward, lsh_dense_forward
from reference.backend import namespace, to_numpy
from reference.random import random_cotangents
from reference.registry import get, select

VARIANTS = [m.name for m in select(["attention.lsh"])]


def _case(name="attention.lsh", xp=None, seed=0, config=None):
    xp = xp or namespace("numpy")
    return get(name).example(seed, xp.float64, xp, config)


# --- (a) finite differences -------------------------------------------------------------------

@pytest.mark.parametrize("name", VARIANTS)
def test_gradient_check_full_numpy(name):
    report = check_mechanism(get(name), backend="numpy", mode="full")
    assert report.passed, report.table()
    assert max(r.max_rel_error for r in report.results) < 1e-8, report.table()


@pytest.mark.parametrize("name", VARIANTS)
def test_gradient_check_array_api_strict(name):
    report = check_mechanism(get(name), backend="array_api_strict", mode="fast")
    assert report.passed, report.table()


@pytest.mark.parametrize("backend", ["numpy", "array_api_strict"])
def test_gradient_check_at_four_rounds_and_64_positions(backend):
    """The configuration of issue 13's 'done when' (the CLI runs it in full mode)."""
    report = check_mechanism(get("attention.lsh"), backend=backend, mode="fast",
                             config={"n_hashes": 4, "seq_len": 64})
    assert report.passed, report.table()


@pytest.mark.parametrize("label", sorted(EDGE_CONFIGS))
def test_edges_on_array_api_strict(label):
    mech = get("attention.lsh")
    report = check_mechanism(mech, backend="array_api_strict", mode="fast", config=mech.edge_configs[label])
    assert report.passed, report.table()


def test_cases_keep_hashes_away_from_ties():
    for config in (None, {"n_hashes": 4, "seq_len": 64}):
        case = _case(config=config)
        q = project_queries(case.inputs["x"], case.params["w_qk"], case.config.n_heads)
        assert float(np.min(to_numpy(hash_margins(q, case.static["rotations"])))) >= case.config.hash_margin


def test_an_impossible_margin_is_one_clear_error():
    with pytest.raises(ValueError, match="margin a gradient check needs is impossible"):
        _case(config={"seq_len": 4096, "chunk_len": 64, "batch": 1, "n_heads": 1, "hash_margin": 0.05})


# --- (b) an independent torch implementation ---------------------------------------------------

def _t(a):
    return torch.from_numpy(np.array(to_numpy(a)))


def torch_lsh(x, w_qk, w_v, w_o, buckets, *, n_heads, n_buckets, chunk_len, causal, across, duplicates=True,
              mask=None):
    """Reformer LSH attention from the equations, one (example, head) and one (query, key) pair at a time."""
    bsz, length, _ = x.shape
    dk, dv = w_qk.shape[1] // n_heads, w_v.shape[1] // n_heads
    rounds = buckets.shape[2]
    nb = n_buckets + (mask is not None)
    outs = []
    for b in range(bsz):
        real = torch.ones(length, dtype=torch.bool) if mask is None else mask[b]
        heads = []
        for h in range(n_heads):
            q = x[b] @ w_qk[:, h * dk:(h + 1) * dk]  # (L, Dk)
            v = x[b] @ w_v[:, h * dv:(h + 1) * dv]  # (L, Dv)
            raw = torch.where(real[None, :], buckets[b, h], torch.full_like(buckets[b, h], n_buckets))
            flat_b = (raw + nb * torch.arange(rounds)[:, None]).reshape(-1)  # (R L,) round-offset buckets
            pos = torch.arange(length).repeat(rounds)  # (R L,)
            order = torch.tensor(sorted(range(rounds * length), key=lambda f: (int(flat_b[f]), int(pos[f]))))
            slot = {int(f): s for s, f in enumerate(order)}  # flat (r L + i) -> sorted slot
            n_chunks = rounds * length // chunk_len
            chunk_of = [[slot[r * length + i] // chunk_len for i in range(length)] for r in range(rounds)]

            def dup(i, j):  # rounds in which key j lies in query i's window (trax daefc069)
                return sum(int(raw[r, i] == raw[r, j]) * (int(chunk_of[r][j] == chunk_of[r][i])
                                                         + int(chunk_of[r][j] == (chunk_of[r][i] - 1) % n_chunks))
                           for r in range(rounds))

            sp, sb = pos[order], flat_b[order]
            sq, sv = q[sp], v[sp]
            k = sq / torch.sqrt((sq ** 2).mean(-1, keepdim=True) + 1e-6) / math.sqrt(dk)
            so, lam = [], []
            for c in range(n_chunks):
                cur = torch.arange(c * chunk_len, (c + 1) * chunk_len)
                prev = torch.arange(((c - 1) % n_chunks) * chunk_len, ((c - 1) % n_chunks + 1) * chunk_len)
                win = torch.cat([prev, cur])
                z = sq[cur] @ k[win].T  # (m, 2m)
                same_pos = sp[cur][:, None] == sp[win][None, :]
                z = torch.where(same_pos, z - 1e5, z)
                ok = real[sp[win]][None, :] | same_pos
                if not across:
                    ok = ok & (sb[cur][:, None] == sb[win][None, :])
                if causal:
                    ok = ok & (sp[win][None, :] <= sp[cur][:, None])
                if duplicates:
                    counts = torch.tensor([[float(dup(int(i), int(j))) if ok[a, bb] else 1.0
                                            for bb, j in enumerate(sp[win])] for a, i in enumerate(sp[cur])],
                                          dtype=z.dtype)
                    z = z - torch.log(counts)
                z = torch.where(ok, z, torch.full_like(z, -1e9))
                so.append(torch.softmax(z, -1) @ sv[win])
                lam.append(torch.logsumexp(z, -1))
            so, lam = torch.cat(so), torch.cat(lam)  # (R L, Dv), (R L,)
            inverse = torch.empty_like(order)
            inverse[order] = torch.arange(order.numel())
            o = so[inverse].reshape(rounds, length, dv)  # round r, position i
            w = torch.softmax(lam[inverse].reshape(rounds, length), 0)  # (R, L)
            heads.append((w[..., None] * o).sum(0))
        outs.append(torch.cat(heads, -1))
    return torch.stack(outs) @ w_o


TWIN_CONFIGS = [(name, None) for name in VARIANTS] + [
    ("attention.lsh", label) for label in ("several_rounds", "one_chunk", "one_chunk_per_round", "chunk_len_1",
                                           "fully_padded_row", "padded_causal_hf_mode", "causal_several_rounds")]


@pytest.mark.parametrize("name,label", TWIN_CONFIGS)
def test_agrees_with_torch_autograd(name, label):
    mech = get(name)
    case = mech.example(0, np.float64, namespace("numpy"), mech.edge_configs[label] if label else None)
    c = case.config
    outputs, cache = mech.forward(case)
    cot = random_cotangents(outputs)
    grads = mech.backward(cache, cot)
    leaves = {k: _t(v).requires_grad_(True) for k, v in case.differentiable.items()}
    mask = case.static.get("attention_mask")
    dense = name == "attention.lsh.dense"  # one chunk per round covers the sequence: the dense form
    y = torch_lsh(leaves["x"], leaves["w_qk"], leaves["w_v"], leaves["w_o"], _t(case.static["buckets"]),
                  n_heads=c.n_heads, n_buckets=c.n_buckets, chunk_len=c.seq_len if dense else c.chunk_len,
                  causal=c.causal, across=c.attend_across_buckets, duplicates=c.duplicate_correction,
                  mask=None if mask is None else _t(mask))
    (y * _t(cot["y"])).sum().backward()
    _close(y.detach().numpy(), outputs["y"], "y")
    for k, leaf in leaves.items():
        _close(leaf.grad.numpy(), grads[k], k)


def _close(actual, expected, name):
    """|a - e| <= 1e-10 (|e| + max(1, max |e|)): agreement to 1e-10 relative to the tensor's scale."""
    e = to_numpy(expected)
    np.testing.assert_allclose(actual, e, rtol=1e-10, atol=1e-10 * max(1.0, float(np.abs(e).max())), err_msg=name)


def test_torch_twin_without_the_correction_disagrees():
    """The twin can fail: dropping the duplicate correction changes the output at several rounds."""
    case = _case(config=EDGE_CONFIGS["several_rounds"])
    c = case.config
    y, _ = get("attention.lsh").forward(case)
    t = torch_lsh(*(_t(case.differentiable[k]) for k in ("x", "w_qk", "w_v", "w_o")), _t(case.static["buckets"]),
                  n_heads=c.n_heads, n_buckets=c.n_buckets, chunk_len=c.chunk_len, causal=False, across=False,
                  duplicates=False)
    assert float(np.max(np.abs(t.numpy() - y["y"]))) > 1e-3


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


@pytest.mark.parametrize("duplicate_correction", [True, False])
def test_one_bucket_one_chunk_is_full_shared_qk_attention(duplicate_correction):
    rng = np.random.default_rng(3)
    x, params, rot = _one_bucket_inputs(rng)
    q = project_queries(x, params["w_qk"], 1)
    buckets = lsh_hash(q, rot)
    assert np.all(buckets == 0), buckets
    y, cache = lsh_attention_forward(x, params, buckets, n_heads=1, n_buckets=2, chunk_len=x.shape[1],
                                     duplicate_correction=duplicate_correction)
    # Full shared-QK attention with the self mask, written out.
    q = x @ params["w_qk"]
    k = q / np.sqrt((q * q).sum(-1, keepdims=True) + q.shape[-1] * 1e-6)  # q_j/|q_j| with the code's 1e-6 floor
    z = q @ np.swapaxes(k, 1, 2) - 1e5 * np.eye(x.shape[1])
    lse = np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1)) + z.max(-1)
    p = np.exp(z - lse[..., None])
    np.testing.assert_allclose(y, p @ (x @ params["w_v"]) @ params["w_o"], rtol=1e-12, atol=1e-13)
    # One chunk in all: every key appears twice; the correction removes the log 2 it adds to lam.
    shift = 0.0 if duplicate_correction else math.log(2)
    np.testing.assert_allclose(cache.rounds.lam[:, 0, 0], lse + shift, rtol=1e-12)


@pytest.mark.parametrize("duplicate_correction", [True, False])
def test_repeating_the_same_buckets_in_every_round_gives_the_single_round_output(duplicate_correction):
    """Holds when the cyclic wrap (first chunk looking back at the last) joins no bucket: chunk_len=2 gives
    8 chunks a round here. With the correction, lam of R identical rounds is the single round's lam - log R."""
    case = _case()
    one = case.static["buckets"][:, :, :1]
    sorted_b = np.sort(one, axis=-1)
    assert np.all(sorted_b[..., :2].max(-1) < sorted_b[..., -2:].min(-1))  # first and last chunk: no common bucket
    kw = dict(n_heads=case.config.n_heads, n_buckets=case.config.n_buckets, chunk_len=2,
              duplicate_correction=duplicate_correction)
    y1, c1 = lsh_attention_forward(case.inputs["x"], case.params, one, **kw)
    y3, c3 = lsh_attention_forward(case.inputs["x"], case.params, np.concatenate([one] * 3, axis=2), **kw)
    # self-only rows: z - 1e5 - log 3 is rounded at 1e5 (ulp 1.5e-11), so agreement is 1e-13, not 1e-15
    np.testing.assert_allclose(y3, y1, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(c3.rounds.omega, 1.0 / 3.0, rtol=1e-12)  # equal round weights, summing to 1
    shift = math.log(3) if duplicate_correction else 0.0
    np.testing.assert_allclose(c3.rounds.lam, np.concatenate([c1.rounds.lam] * 3, axis=2) - shift, rtol=1e-12)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("duplicate_correction", [True, False])
def test_chunked_equals_dense_when_one_chunk_covers_a_round(xp, causal, padded, duplicate_correction):
    case = _case(xp=xp, config={"padded": (0, 5, 16)} if padded else None)
    x, params, buckets = case.inputs["x"], case.params, case.static["buckets"]
    kw = dict(n_heads=case.config.n_heads, n_buckets=case.config.n_buckets, causal=causal,
              duplicate_correction=duplicate_correction, attention_mask=case.static.get("attention_mask"))
    y, cache = lsh_attention_forward(x, params, buckets, chunk_len=x.shape[1], **kw)
    yd, cache_d = lsh_dense_forward(x, params, buckets, **kw)
    np.testing.assert_allclose(to_numpy(y), to_numpy(yd), rtol=1e-12, atol=1e-14)
    dy = xp.asarray(np.random.default_rng(1).standard_normal(tuple(y.shape)))
    dx, g = lsh_attention_backward(dy, cache)
    dxd, gd = lsh_dense_backward(dy, cache_d)
    np.testing.assert_allclose(to_numpy(dx), to_numpy(dxd), rtol=1e-11, atol=1e-13)
    for k in g:
        np.testing.assert_allclose(to_numpy(g[k]), to_numpy(gd[k]), rtol=1e-11, atol=1e-13, err_msg=k)


def test_causal_position_zero_sees_only_itself_and_never_leaks():
    case = _case("attention.lsh.causal")
    c = case.config
    kw = dict(n_heads=c.n_heads, n_buckets=c.n_buckets, chunk_len=c.chunk_len, causal=True)
    x = case.inputs["x"]
    y, _ = lsh_attention_forward(x, case.params, case.static["buckets"], **kw)
    x2 = x.copy()
    x2[:, 9:] += 10.0  # change the future; buckets fixed: earlier outputs must not change
    y2, _ = lsh_attention_forward(x2, case.params, case.static["buckets"], **kw)
    np.testing.assert_allclose(y2[:, :9], y[:, :9], rtol=1e-13, atol=1e-14)
    v0 = x[:, 0] @ case.params["w_v"] @ case.params["w_o"]  # position 0 attends to itself only
    np.testing.assert_allclose(y[:, 0], v0, rtol=1e-10, atol=1e-11)


def test_padded_keys_never_leak_and_a_padded_query_sees_itself():
    case = _case("attention.lsh.padded")
    c, mask = case.config, case.static["attention_mask"]
    kw = dict(n_heads=c.n_heads, n_buckets=c.n_buckets, chunk_len=c.chunk_len, attention_mask=mask)
    x = case.inputs["x"]
    y, cache = lsh_attention_forward(x, case.params, case.static["buckets"], **kw)
    assert np.all(cache.buckets[~np.broadcast_to(mask[:, None, None, :], cache.buckets.shape)] == c.n_buckets)
    x2 = np.where(mask[..., None], x, x + 7.0)  # change only the padding
    y2, _ = lsh_attention_forward(x2, case.params, case.static["buckets"], **kw)
    np.testing.assert_allclose(y2[mask], y[mask], rtol=1e-13, atol=1e-14)
    own = x @ case.params["w_v"] @ case.params["w_o"]  # a padded query's output is its own value
    np.testing.assert_allclose(y[~mask], own[~mask], rtol=1e-10, atol=1e-11)


def test_hash_is_invariant_to_positive_scaling_of_queries():
    rng = np.random.default_rng(5)
    q = rng.standard_normal((2, 3, 7, 4))
    rot = sample_rotations(rng, 2, 3, 4, 2, 6, xp=namespace("numpy"), dtype=np.float64)
    np.testing.assert_array_equal(lsh_hash(q, rot), lsh_hash(3.7 * q, rot))
    assert lsh_hash(q, rot).max() < 6


def test_intermediates_are_named_in_forward_order():
    mech = get("attention.lsh")
    case = _case()
    _, cache = mech.forward(case)
    inter = mech.intermediates(cache)
    assert list(inter) == ["buckets", "perm", "round_outputs", "round_logsumexp", "round_weights"]
    c = case.config
    assert inter["round_outputs"].shape == (c.batch, c.n_heads, c.n_hashes, c.seq_len, c.d_v)


# --- (c') the float32 causal finding (issue 15.4; docs: attention.lsh, "float32 and causal") ---------

def test_float32_causal_error_is_the_round_weights_and_stable_rounds_removes_it():
    """At B=2, L=256, D=64, 2 heads, 4 rounds, 8 buckets, chunk 32: positions whose every round is
    self-only get lam near -1e5 in every round; exp(lam - logsumexp lam) then carries the rounding of
    logsumexp at 1e5 (float32 ulp 0.0078) into weights that no longer sum to 1."""
    rng = np.random.default_rng(0)
    xp = namespace("numpy")
    x = rng.standard_normal((2, 256, 64))
    p = init_lsh(rng, 64, 2, 32, 32, xp=xp, dtype=np.float64)
    rot = sample_rotations(rng, 2, 2, 32, 4, 8, xp=xp, dtype=np.float64)
    bk = lsh_hash(project_queries(x, p["w_qk"], 2), rot)
    kw = dict(n_heads=2, n_buckets=8, chunk_len=32, causal=True)
    p32 = {k: v.astype(np.float32) for k, v in p.items()}
    y64, c64 = lsh_attention_forward(x, p, bk, **kw)
    y64s, _ = lsh_attention_forward(x, p, bk, stable_rounds=True, **kw)
    # the same float64 result, to the default's own float64 rounding at 1e5 (ulp 1.5e-11) on self-only positions
    np.testing.assert_allclose(y64s, y64, rtol=1e-10, atol=1e-11)
    y32, c32 = lsh_attention_forward(x.astype(np.float32), p32, bk, **kw)
    y32s, c32s = lsh_attention_forward(x.astype(np.float32), p32, bk, stable_rounds=True, **kw)
    assert float(np.max(np.abs(y32 - y64))) > 1e-3
    assert float(np.max(np.abs(np.sum(c32.rounds.omega, axis=2) - 1))) > 1e-3  # weights off their sum
    assert float(np.max(np.abs(y32s - y64))) < 1e-5
    assert float(np.max(np.abs(np.sum(c32s.rounds.omega, axis=2) - 1))) < 1e-6


# --- (e) optional: HuggingFace transformers' LSHSelfAttention ----------------------------------

@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_agrees_with_huggingface_lsh_self_attention_across_buckets(causal, padded):
    """HF attends to the whole window with no duplicate correction (our attention.lsh.across_buckets) and
    replaces the self score by the constant -1e5; with at least one other key per row (or identical
    self-only rounds) the two agree. Padding: HF's extra bucket and masked keys (modeling_reformer.py
    4.57.6 l.769-776, l.946-954), fed the oracle's padded buckets."""
    transformers = pytest.importorskip("transformers")
    from transformers.models.reformer.modeling_reformer import LSHSelfAttention

    rng = np.random.default_rng(11)
    b, h, length, d, dh, rounds, nb, m = 2, 3, 8, 6, 4, 2, 4, 4
    xp = namespace("numpy")
    x = rng.standard_normal((b, length, d))
    params = init_lsh(rng, d, h, dh, dh, xp=xp, dtype=np.float64)
    rot = sample_rotations(rng, b, h, dh, rounds, nb, xp=xp, dtype=np.float64)
    buckets = lsh_hash(project_queries(x, params["w_qk"], h), rot)
    mask = (np.arange(length)[None, :] < np.array([[length], [length - 3]])) if padded else None
    y, cache = lsh_attention_forward(x, params, buckets, n_heads=h, n_buckets=nb, chunk_len=m, causal=causal,
                                     attend_across_buckets=True, duplicate_correction=False, attention_mask=mask)
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
    n_sort = nb + padded
    offset = torch.from_numpy(cache.buckets + n_sort * np.arange(rounds)[:, None]).reshape(b, h, rounds * length)
    am = None if mask is None else torch.from_numpy(mask.astype(np.int64))
    context = layer(xt, buckets=offset, attention_mask=am).hidden_states  # (B, L, H d), before the output projection
    yt = context @ w_o
    (yt * torch.from_numpy(dy)).sum().backward()
    _close(yt.detach().numpy(), y, "y")
    _close(xt.grad.numpy(), dx, "x")
    _close(layer.query_key.weight.grad.numpy().T, grads["w_qk"], "w_qk")
    _close(layer.value.weight.grad.numpy().T, grads["w_v"], "w_v")
    _close(w_o.grad.numpy(), grads["w_o"], "w_o")
