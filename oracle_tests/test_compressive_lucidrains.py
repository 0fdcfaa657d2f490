"""The Compressive Transformer's memory update and reconstruction loss against lucidrains'
compressive-transformer-pytorch 0.4.0 (optional: skipped when the package is absent).

Compared on one ``SelfAttention`` module (no LayerNorm inside it, no positional embedding, no dropout),
with mem_len = seq_len, where its reconstruction target (the whole previous memory) equals the paper's
(the evicted rows): the new memory, the new compressed memory, the reconstruction loss (its F.mse_loss
is the oracle's ``reduction="mean"``) and the gradient of the conv compression. The rest of its layer
(pre-LN, GRU gating, learned relative positions) is a different function and is not compared.
"""

from __future__ import annotations

import numpy as np
import pytest

from reference.architecture.compressive import (
    CompressiveConfig,
    CompressiveState,
    compressive_layer_backward,
    compressive_layer_forward,
    init_compressive_layer,
)
from reference.backend import namespace, to_numpy
from reference.random import generator

lucid = pytest.importorskip("compressive_transformer_pytorch.compressive_transformer_pytorch")
torch = pytest.importorskip("torch")

B, T, N_CMEM, D, HEADS, RATE = 2, 6, 5, 4, 2, 3


def _run():
    torch.manual_seed(0)
    attn = lucid.SelfAttention(D, T, T, N_CMEM, cmem_ratio=RATE, heads=HEADS).double().train()
    rng = np.random.default_rng(1)
    x, mem, cmem = (torch.from_numpy(rng.standard_normal(s)) for s in [(B, T, D), (B, T, D), (B, N_CMEM, D)])
    logits, memory, aux = attn(x, memories=(mem, cmem))
    return attn, (x, mem, cmem), logits, memory, aux


def test_memory_update_and_reconstruction_loss_agree():
    attn, (x, mem, cmem), _, memory, aux = _run()
    aux.backward()
    xp = namespace("numpy")
    config = CompressiveConfig(HEADS, "conv", RATE, reduction="mean")
    params = init_compressive_layer(generator(0), D, 9, config, xp=xp, dtype=xp.float64)  # FFN and LNs: unused here
    n = lambda t: xp.asarray(t.detach().numpy().copy())  # noqa: E731
    w_kv = attn.to_kv.weight.detach()
    params.update({"w_q": n(attn.to_q.weight.T), "w_k": n(w_kv[:D].T), "w_v": n(w_kv[D:].T),
                   "b_q": xp.zeros(D), "b_k": xp.zeros(D), "b_v": xp.zeros(D),
                   "w_o": n(attn.to_out.weight.T), "b_o": n(attn.to_out.bias),
                   "w_c": n(attn.compress_mem_fn.conv.weight.permute(2, 1, 0)), "b_c": n(attn.compress_mem_fn.conv.bias)})
    state = CompressiveState(n(mem), n(cmem), xp.zeros((B, T)))
    out, cache = compressive_layer_forward(n(x), state, params, config)
    _, _, _, grads = compressive_layer_backward(xp.zeros_like(out.y), xp.asarray(1.0), cache)
    pairs = {"new memory": (memory.mem, out.state.mem), "new compressed memory": (memory.compressed_mem, out.state.cmem),
             "reconstruction loss": (aux, out.loss_attn),
             "dW_c": (attn.compress_mem_fn.conv.weight.grad.permute(2, 1, 0), grads["w_c"]),
             "db_c": (attn.compress_mem_fn.conv.bias.grad, grads["b_c"])}
    for name, (theirs, ours) in pairs.items():
        theirs, ours = theirs.detach().numpy(), to_numpy(ours)
        err = np.abs(theirs.reshape(ours.shape) - ours).max()
        assert err <= 1e-12 * max(1.0, np.abs(ours).max()), f"{name}: lucidrains vs oracle max abs diff {err:.3g}"


def test_finding_lucidrains_detach_freezes_the_main_key_value_projection():
    """``self.to_kv.weight.detach_()`` turns the main network's K/V weight into a leaf without grad:
    after one training forward, the language-model side cannot train it either (the paper stops only
    the reconstruction loss's gradient)."""
    attn, _, logits, _, _ = _run()
    assert attn.to_kv.weight.requires_grad is False
    logits.sum().backward()
    assert attn.to_kv.weight.grad is None and attn.to_q.weight.grad is not None
