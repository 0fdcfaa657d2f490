"""PyTorch eager autograd equivalents of the benchmarked mechanisms.

Two kinds, and the table says which one ran:

* ``torch``: idiomatic PyTorch for the dense building blocks (``torch.nn.functional``
  linear, layer_norm, softmax, gelu, conv1d, cross_entropy, embedding; attention written
  with matmuls, or ``scaled_dot_product_attention`` where no explicit dropout mask is
  needed), so the oracle is measured against what a PyTorch user would write.
* ``torch(oracle)``: the oracle's own forward code run on ``torch`` tensors through
  array-api-compat, differentiated by torch autograd. The arithmetic is identical, so
  the ratio isolates the hand-derived backward against autograd's tape. Used for every
  mechanism without an idiomatic version.

Both take the same numpy case (converted once, outside the timed region) and return
``run()``: one forward + backward with fixed cotangents.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from reference.registry import Case


def to_torch(value: Any, *, grad: bool = False, device: str = "cpu") -> Any:
    """numpy arrays (also inside dicts, lists, tuples and NamedTuples) to torch tensors."""
    if isinstance(value, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(value).reshape(value.shape)).to(device)
        if grad and (t.is_floating_point() or t.is_complex()):
            t.requires_grad_(True)
        return t
    if isinstance(value, np.generic):
        return to_torch(np.asarray(value), grad=grad, device=device)
    if isinstance(value, dict):
        return {k: to_torch(v, grad=grad, device=device) for k, v in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(to_torch(v, grad=grad, device=device) for v in value))
    if isinstance(value, (list, tuple)):
        return type(value)(to_torch(v, grad=grad, device=device) for v in value)
    return value


def torch_case(case: Case, device: str = "cpu") -> Case:
    return Case(inputs=to_torch(case.inputs, grad=True, device=device),
                params=to_torch(case.params, grad=True, device=device), static=to_torch(case.static, device=device),
                config=case.config)


# ------------------------------------------------------------------ idiomatic versions
# Each: (case of torch tensors, its configuration) -> dict of outputs, the same keys as the oracle's.

def _linear(c, cfg):
    y = c.inputs["x"] @ c.params["w"]
    return {"y": y + c.params["b"] if "b" in c.params else y}  # (D_in, D_out) weights, as the oracle


def _layer_norm(c, cfg):
    x = c.inputs["x"]
    eps = cfg.eps if cfg is not None else 1e-5
    return {"y": F.layer_norm(x, x.shape[-1:], c.params["gamma"], c.params["beta"], eps=eps)}


def _activation(kind):
    def run(c, cfg):
        x = c.inputs["x"]
        return {"y": F.relu(x) if kind == "relu" else F.gelu(x, approximate="tanh" if kind == "gelu_tanh" else "none")}
    return run


def _feed_forward(c, cfg):
    p = c.params
    kind = getattr(cfg, "activation", "gelu")
    act = F.relu if kind == "relu" else (lambda z: F.gelu(z, approximate="tanh" if kind == "gelu_tanh" else "none"))
    inner = act(c.inputs["x"] @ p["w_1"] + p["b_1"])
    if "dropout" in c.static:
        inner = inner * c.static["dropout"]
    return {"y": inner @ p["w_2"] + p["b_2"]}


def _heads(x, n):
    b, t, d = x.shape
    return x.reshape(b, t, n, d // n).transpose(1, 2)  # (B, H, T, Dh)


def _mha(c, h, x_q, x_kv, *, mask=None, bias=None, dropout=None, causal=False):
    p = c.params
    q, k, v = (_heads(x @ p[f"w_{n}"] + p[f"b_{n}"], h) for x, n in ((x_q, "q"), (x_kv, "k"), (x_kv, "v")))
    if dropout is None and bias is None:
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    else:
        s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, H, T, S)
        if bias is not None:
            s = s + bias
        if mask is not None:
            s = s.masked_fill(~mask, -1e9)
        a = torch.softmax(s, dim=-1)
        if dropout is not None:
            a = a * dropout
        o = a @ v
    b, _, t, dh = o.shape
    return o.transpose(1, 2).reshape(b, t, h * dh) @ p["w_o"] + p["b_o"]


def _attention(c, cfg):
    return {"y": _mha(c, cfg.n_heads, c.inputs["x_q"], c.inputs["x_kv"], mask=c.static["mask"],
                      bias=c.inputs.get("bias"), dropout=c.static.get("dropout"))}


def _attention_causal(c, cfg):
    x = c.inputs["x"]
    return {"y": _mha(c, cfg.n_heads, x, x, causal=True)}


def _softmax(c, cfg):
    return {"p": torch.softmax(c.inputs["z"], dim=-1)}


def _log_softmax(c, cfg):
    return {"log_p": torch.log_softmax(c.inputs["z"], dim=-1)}


def _cross_entropy(c, cfg):
    logits = c.inputs["logits"]
    return {"loss": F.cross_entropy(logits.reshape(-1, logits.shape[-1]), c.static["targets"].reshape(-1),
                                    ignore_index=-100)}


def _sigmoid_bce(c, cfg):
    logits = c.inputs["logits"]
    weights = c.static.get("weights")
    weights = torch.ones_like(logits) if weights is None else weights
    loss = F.binary_cross_entropy_with_logits(logits, c.static["targets"], weight=weights, reduction="sum")
    return {"loss": loss / weights.sum()}


def _embedding(c, cfg):
    return {"y": F.embedding(c.static["ids"], c.params["table"])}


def _dropout(c, cfg):
    return {"y": c.inputs["x"] * c.static["mask"]}


def _conv(padding):
    def run(c, cfg):
        x, w = c.inputs["x"], c.params["w"]
        k = w.shape[1]
        left = k - 1 if padding == "causal" else (k - 1) // 2
        xt = F.pad(x.transpose(1, 2), (left, k - 1 - left))  # (B, C, T + K - 1)
        return {"y": F.conv1d(xt, w[:, None, :], c.params.get("bias"), groups=w.shape[0]).transpose(1, 2)}
    return run


IDIOMATIC: dict[str, Callable] = {
    "nn.linear": _linear, "nn.layer_norm": _layer_norm, "nn.gelu": _activation("gelu"),
    "nn.gelu_tanh": _activation("gelu_tanh"), "nn.relu": _activation("relu"), "nn.feed_forward": _feed_forward,
    "nn.attention": _attention, "nn.attention.causal": _attention_causal, "nn.softmax": _softmax,
    "nn.log_softmax": _log_softmax, "nn.cross_entropy": _cross_entropy, "nn.sigmoid_bce": _sigmoid_bce, "nn.embedding": _embedding,
    "nn.dropout": _dropout, "nn.depthwise_conv1d.causal": _conv("causal"),
    "nn.depthwise_conv1d.centred": _conv("centred"),
}


def torch_runner(name: str, forward: Callable, case: Case, cotangents: dict[str, np.ndarray], *,
                 device: str = "cpu", idiomatic: bool = True) -> tuple[str, Callable[[], None]]:
    """(kind, run): ``run()`` does one torch forward + backward of ``case``: idiomatic PyTorch where
    :data:`IDIOMATIC` has the mechanism (and ``idiomatic``), else the oracle's forward under autograd."""
    tcase = torch_case(case, device)
    if idiomatic and name in IDIOMATIC:
        kind, fn = "torch", (lambda: IDIOMATIC[name](tcase, case.config))
    else:
        kind, fn = "torch(oracle)", (lambda: forward(tcase)[0])
    leaves = [v for v in tcase.differentiable.values() if isinstance(v, torch.Tensor) and v.requires_grad]
    tcot = {k: torch.from_numpy(np.ascontiguousarray(v).reshape(np.shape(v))).to(device) for k, v in cotangents.items()}

    def run() -> None:
        for leaf in leaves:
            leaf.grad = None
        out = fn()
        keys = [k for k in tcot if isinstance(out.get(k), torch.Tensor) and out[k].requires_grad]
        torch.autograd.backward([out[k] for k in keys], [tcot[k].to(out[k].dtype) for k in keys])

    return kind, run
