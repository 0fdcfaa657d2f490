"""Every building block against an independent PyTorch float64 autograd implementation.

Each twin below is written from the block's equations (module docstrings of
reference/nn/*.py and the papers), never by calling the oracle. It receives the
oracle's registered example (``Case``: inputs, params, static) as torch tensors,
returns its outputs, and autograd differentiates
``L = sum_k <c_k, F_k>`` with the checker's random cotangents
(``gradients.check.random_cotangents``). Outputs and gradients must agree with
the oracle's to 1e-10 in max absolute difference.

Weights are stored (d_in, d_out) in the oracle; ``torch.nn.functional.linear``
takes ``weight`` as (d_out, d_in), so the twins pass ``w.T`` there.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from gradients.check import random_cotangents  # noqa: E402
from reference.backend import namespace, to_numpy  # noqa: E402
from reference.registry import all_mechanisms  # noqa: E402

NN_NAMES = [name for name in all_mechanisms() if name.startswith("nn.")]
TOL = 1e-10
Tensors = dict[str, Any]


def t(a: Any) -> Any:
    """An oracle array (or nested dict of them) as a torch tensor on the CPU."""
    if isinstance(a, dict):
        return {k: t(v) for k, v in a.items()}
    return torch.from_numpy(np.array(to_numpy(a)))


# ---------------------------------------------------------------- primitives, from the equations


def linear(x, w, b=None):
    return F.linear(x, w.T, b)  # y = x w + b with w (d_in, d_out)


def layer_norm(x, gamma, beta, eps=1e-5):
    return F.layer_norm(x, (x.shape[-1],), gamma, beta, eps=eps)


def activation(x, kind):
    if kind == "gelu":
        return F.gelu(x, approximate="none")
    if kind == "gelu_tanh":
        return F.gelu(x, approximate="tanh")
    assert kind == "relu", kind
    return F.relu(x)


def mha(x_q, x_kv, p, n_heads, *, prefix="", mask=None, bias=None, drop=None):
    """Vaswani et al. Eq. (1) per head: softmax(Q K^T / sqrt(d_k) + bias, masked) V, heads concatenated, W^O."""
    b, t_len, d = x_q.shape
    s_len, dh = x_kv.shape[1], d // n_heads

    def heads(z, n):  # (B, n, D) -> (B, H, n, Dh)
        return z.reshape(b, n, n_heads, dh).transpose(1, 2)

    q = heads(linear(x_q, p[prefix + "w_q"], p[prefix + "b_q"]), t_len)
    k = heads(linear(x_kv, p[prefix + "w_k"], p[prefix + "b_k"]), s_len)
    v = heads(linear(x_kv, p[prefix + "w_v"], p[prefix + "b_v"]), s_len)
    scores = q @ k.transpose(-1, -2) / math.sqrt(dh)
    if bias is not None:
        scores = scores + bias
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    if drop is not None:
        probs = probs * drop
    o = (probs @ v).transpose(1, 2).reshape(b, t_len, d)
    return linear(o, p[prefix + "w_o"], p[prefix + "b_o"])


def ffn(x, p, kind="gelu", drop=None):
    """Vaswani et al. Eq. (2), with GELU by default."""
    a = activation(linear(x, p["w_1"], p["b_1"]), kind)
    if drop is not None:
        a = a * drop
    return linear(a, p["w_2"], p["b_2"])


def encoder_layer(x, p, n_heads, mask, drop=None, kind="gelu"):
    """Post-LN: h = LN(x + Drop(MHA(x))), y = LN(h + Drop(FFN(h)))."""
    drop = drop or {}
    a = mha(x, x, p, n_heads, mask=mask, drop=drop.get("attn_probs"))
    if "attn" in drop:
        a = a * drop["attn"]
    h = layer_norm(x + a, p["ln1_gamma"], p["ln1_beta"])
    f = ffn(h, p, kind, drop.get("ffn_inner"))
    if "ffn" in drop:
        f = f * drop["ffn"]
    return layer_norm(h + f, p["ln2_gamma"], p["ln2_beta"])


def bert_embeddings(ids, p, segments=None):
    s = F.embedding(ids, p["tok"]) + p["pos"][: ids.shape[1]][None]
    if segments is not None:
        s = s + F.embedding(segments, p["seg"])
    return layer_norm(s, p["ln_gamma"], p["ln_beta"])


def depthwise_conv(x, w, bias, padding):
    """Cross-correlation along T per channel: y[b,t,c] = sum_k w[c,k] xpad[b,t+k,c] + bias[c]."""
    k = w.shape[1]
    left = k - 1 if padding == "causal" else (k - 1) // 2
    xpad = F.pad(x.transpose(1, 2), (left, k - 1 - left))  # (B, C, T + K - 1)
    return F.conv1d(xpad, w[:, None, :], bias, groups=w.shape[0]).transpose(1, 2)


# ---------------------------------------------------------------- one twin per registered block
# Each takes (differentiable tensors, static tensors, the case's configuration) and returns the outputs dict.


def _causal(n):
    return torch.tril(torch.ones(n, n, dtype=torch.bool))


TWINS: dict[str, Callable[[Tensors, Tensors, Any], Tensors]] = {
    "nn.linear": lambda a, s, c: {"y": linear(a["x"], a["w"], a.get("b"))},
    "nn.layer_norm": lambda a, s, c: {"y": layer_norm(a["x"], a["gamma"], a["beta"], c.eps)},
    "nn.gelu": lambda a, s, c: {"y": activation(a["x"], "gelu")},
    "nn.gelu_tanh": lambda a, s, c: {"y": activation(a["x"], "gelu_tanh")},
    "nn.relu": lambda a, s, c: {"y": activation(a["x"], "relu")},
    "nn.softmax": lambda a, s, c: {"p": torch.softmax(a["z"], dim=-1)},
    "nn.log_softmax": lambda a, s, c: {"log_p": torch.log_softmax(a["z"], dim=-1)},
    "nn.dropout": lambda a, s, c: {"y": a["x"] * s["mask"]},
    "nn.embedding": lambda a, s, c: {"y": F.embedding(s["ids"], a["table"])},
    "nn.cross_entropy": lambda a, s, c: {"loss": F.cross_entropy(
        a["logits"].reshape(-1, a["logits"].shape[-1]), s["targets"].reshape(-1), ignore_index=-100,
        reduction="mean")},
    "nn.sigmoid_bce": lambda a, s, c: {"loss": F.binary_cross_entropy_with_logits(
        a["logits"], s["targets"], weight=s.get("weights"), reduction="sum") / (s["weights"].sum() if "weights" in s else a["logits"].numel())},
    "nn.depthwise_conv1d.causal": lambda a, s, c: {"y": depthwise_conv(a["x"], a["w"], a.get("bias"), "causal")},
    "nn.depthwise_conv1d.centred": lambda a, s, c: {"y": depthwise_conv(a["x"], a["w"], a.get("bias"), "centred")},
    "nn.feed_forward": lambda a, s, c: {"y": ffn(a["x"], a, c.activation, s.get("dropout"))},
    "nn.attention": lambda a, s, c: {"y": mha(a["x_q"], a["x_kv"], a, c.n_heads, mask=s["mask"], bias=a.get("bias"),
                                              drop=s.get("dropout"))},
    "nn.attention.causal": lambda a, s, c: {"y": mha(a["x"], a["x"], a, c.n_heads, mask=_causal(a["x"].shape[1]))},
    "nn.encoder_layer": lambda a, s, c: {"y": encoder_layer(a["x"], a, c.n_heads, s["mask"], s.get("dropout"), c.activation)},
    "nn.bert_embeddings": lambda a, s, c: {"e": bert_embeddings(s["ids"], a, s.get("segments"))},
}


def _decoder_layer(a, s, c):
    """h1 = LN1(x + SelfAttn(x; causal)), h2 = LN2(h1 + CrossAttn(h1, s)), y = LN3(h2 + FFN(h2))."""
    x, src = a["x"], a["s"]
    h1 = layer_norm(x + mha(x, x, a, c.n_heads, prefix="self_", mask=_causal(x.shape[1])), a["ln1_gamma"], a["ln1_beta"])
    h2 = layer_norm(h1 + mha(h1, src, a, c.n_heads, prefix="cross_", mask=s["cross_mask"]), a["ln2_gamma"], a["ln2_beta"])
    return {"y": layer_norm(h2 + ffn(h2, a), a["ln3_gamma"], a["ln3_beta"])}


def _mlm_head(a, s, c):
    """logits = LN(GELU(h w + b)) table^T + out_bias (output projection tied to the token table)."""
    z = layer_norm(activation(linear(a["h"], a["w"], a["b"]), c.activation), a["ln_gamma"], a["ln_beta"])
    return {"logits": z @ a["table"].T + a["out_bias"]}


def _text_encoder(a, s, c):
    """BERT embeddings, a projection E -> D when present, one post-LN encoder layer (tanh GELU, padding mask)."""
    x = bert_embeddings(s["ids"], a, s.get("segments"))
    if "proj_w" in a:
        x = linear(x, a["proj_w"], a["proj_b"])
    mask = s["pad"][:, None, None, :]
    layer = 0
    while f"layer{layer}_w_q" in a:
        p = {k[len(f"layer{layer}_"):]: v for k, v in a.items() if k.startswith(f"layer{layer}_")}
        x = encoder_layer(x, p, c.n_heads, mask, kind=c.activation)
        layer += 1
    return {"h": x}


TWINS.update({"nn.decoder_layer": _decoder_layer, "nn.mlm_head": _mlm_head, "nn.text_encoder": _text_encoder})


# ---------------------------------------------------------------- the comparison


def _max_abs(name: str, key: str, got: np.ndarray, want: np.ndarray) -> float:
    assert got.shape == want.shape, f"{name} {key}: torch shape {got.shape}, oracle shape {want.shape}"
    if not got.size:
        return 0.0
    diff = np.abs(got - want)
    worst = np.unravel_index(int(np.argmax(diff)), diff.shape)
    assert diff[worst] <= TOL, (f"{name} {key} at {tuple(map(int, worst))}: torch {got[worst].item()!r}, "
                                f"oracle {want[worst].item()!r} (max abs difference {diff[worst]:.3g} > {TOL:g})")
    return float(diff[worst])


def test_every_building_block_has_a_torch_twin() -> None:
    missing = [name for name in NN_NAMES if name not in TWINS]
    assert not missing, f"no independent torch implementation for {missing}: add one to TWINS in this file"


CONFIGS = [(n, label) for n in NN_NAMES if n in TWINS
           for label in ("default", *all_mechanisms()[n].edge_configs)]


@pytest.mark.parametrize(("name", "label"), CONFIGS, ids=[f"{n}[{label}]" for n, label in CONFIGS])
@pytest.mark.parametrize("seed", [0, 1])
def test_agrees_with_torch(name: str, label: str, seed: int, record_property) -> None:
    """At the registered configuration and at every edge configuration."""
    xp = namespace("numpy")
    mechanism = all_mechanisms()[name]
    case = mechanism.example(seed, xp.float64, xp, mechanism.edge_configs.get(label))
    outputs, cache = mechanism.forward(case)
    cot = random_cotangents(outputs, seed=seed)
    grads = mechanism.backward(cache, cot)

    leaves = {k: t(v).requires_grad_(True) for k, v in case.differentiable.items()}
    static = {k: t(v) for k, v in case.static.items()}
    torch_out = TWINS[name](leaves, static, case.config)
    assert set(torch_out) == set(outputs), f"{name}: torch outputs {sorted(torch_out)}, oracle {sorted(outputs)}"
    loss = sum((torch_out[k] * t(c)).sum() for k, c in cot.items())
    torch_grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)

    worst = 0.0
    for key, out in outputs.items():
        worst = max(worst, _max_abs(name, f"output {key}", torch_out[key].detach().numpy(), to_numpy(out)))
    for key, g in zip(leaves, torch_grads):
        got = np.zeros(tuple(leaves[key].shape)) if g is None else g.numpy()
        worst = max(worst, _max_abs(name, f"gradient d{key}", got, to_numpy(grads[key])))
    record_property("max_abs_difference", worst)
    print(f"{name} seed {seed}: max abs difference vs torch {worst:.2e}")


def test_comparison_can_fail() -> None:
    """A 1e-9 disagreement is reported, naming the tensor and both numbers."""
    want = np.linspace(0.0, 1.0, 6).reshape(2, 3)
    got = want.copy()
    got[1, 2] += 1e-9
    with pytest.raises(AssertionError, match=r"gradient dw at \(1, 2\): torch 1\.000000001.*oracle 1\.0"):
        _max_abs("nn.linear", "gradient dw", got, want)
