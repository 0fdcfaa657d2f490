"""Independent PyTorch (autograd) versions of the BERT pieces the objectives tests need.

Written from the equations (BERT: Devlin et al., 2019; Vaswani et al., 2017), not by
calling the oracle: token + position (+ segment) embeddings with layer norm, an optional
projection, post-LN encoder layers with padding-masked multi-head attention, and the
MLM head tied to the token table. Linear weights are (d_in, d_out), applied x @ w + b,
as in the oracle. Only the objectives' test files import this module.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

EPS = 1e-5


def act(x: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "relu":
        return torch.relu(x)
    if kind == "gelu_tanh":
        return F.gelu(x, approximate="tanh")
    if kind == "gelu":
        return F.gelu(x)
    raise ValueError(kind)


def layer_norm(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), gamma, beta, eps)


def attention(x: torch.Tensor, p: dict, n_heads: int, pad: torch.Tensor,
              mask_value: float = float("-inf")) -> torch.Tensor:
    """``mask_value``: the masked logits' value; a finite one (HF's finfo.min) gives a fully padded row
    uniform weights instead of NaN."""
    b, t, d = x.shape
    dh = d // n_heads

    def heads(z: torch.Tensor) -> torch.Tensor:
        return z.reshape(b, t, n_heads, dh).transpose(1, 2)  # (B, H, T, Dh)

    q, k, v = (heads(x @ p[f"w_{s}"] + p[f"b_{s}"]) for s in "qkv")
    scores = q @ k.transpose(-1, -2) / math.sqrt(dh)  # (B, H, T, T)
    scores = scores.masked_fill(~pad[:, None, None, :], mask_value)
    o = torch.softmax(scores, dim=-1) @ v  # (B, H, T, Dh)
    return o.transpose(1, 2).reshape(b, t, d) @ p["w_o"] + p["b_o"]


def encoder_layer(x: torch.Tensor, p: dict, n_heads: int, pad: torch.Tensor, kind: str,
                  eps: float = EPS, mask_value: float = float("-inf")) -> torch.Tensor:
    h = layer_norm(x + attention(x, p, n_heads, pad, mask_value), p["ln1_gamma"], p["ln1_beta"], eps)
    f = act(h @ p["w_1"] + p["b_1"], kind) @ p["w_2"] + p["b_2"]
    return layer_norm(h + f, p["ln2_gamma"], p["ln2_beta"], eps)


def text_encoder(ids: torch.Tensor, pad: torch.Tensor, p: dict, n_heads: int, kind: str, n_layers: int = 1,
                 segments: torch.Tensor | None = None, eps: float = EPS,
                 mask_value: float = float("-inf")) -> torch.Tensor:
    t = ids.shape[1]
    s = p["tok"][ids] + p["pos"][:t][None]
    if segments is not None:
        s = s + p["seg"][segments]
    x = layer_norm(s, p["ln_gamma"], p["ln_beta"], eps)
    if "proj_w" in p:
        x = x @ p["proj_w"] + p["proj_b"]
    for layer in range(n_layers):
        prefix = f"layer{layer}_"
        x = encoder_layer(x, {k[len(prefix):]: v for k, v in p.items() if k.startswith(prefix)}, n_heads, pad, kind,
                          eps, mask_value)
    return x


def mlm_head_transform(h: torch.Tensor, p: dict, kind: str, eps: float = EPS) -> torch.Tensor:
    """z = LayerNorm(act(h W + b)): the MLM head before its tied projection."""
    return layer_norm(act(h @ p["w"] + p["b"], kind), p["ln_gamma"], p["ln_beta"], eps)


def mlm_head(h: torch.Tensor, p: dict, table: torch.Tensor, kind: str, eps: float = EPS) -> torch.Tensor:
    return mlm_head_transform(h, p, kind, eps) @ table.T + p["out_bias"]


def sub(params: dict, prefix: str) -> dict:
    """The entries of ``params`` whose key starts with ``prefix``, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}
