"""ALBERT parameters: initialisation for the oracle, and the exact count behind the paper's tables.

Lan et al., ICLR 2020, arXiv:1909.11942v6, Tables 1, 3 and 4 (spec architecture.md §3.2, §3.8).

Exact count (V vocabulary, P = 512 positions, 2 token types, E embedding width, Hd hidden, F feed-forward):

    P_emb  = V E + P w + 2 w + 2 w          w = E (the released code) or Hd (``embedding_width="hidden"``)
    P_proj = E Hd + Hd                      only when E != Hd (official code); always in HuggingFace
    P_attn = 4 (Hd^2 + Hd) + 2 Hd           Q, K, V, O and the LN after attention
    P_ffn  = 2 Hd F + F + Hd + 2 Hd          W_1, W_2 and the LN after the feed-forward
    P_enc  = L (P_attn + P_ffn) | P_attn + P_ffn | P_attn + L P_ffn | L P_attn + P_ffn
             (none | all | attention | ffn shared)
    P_pool = Hd^2 + Hd;  P_MLM = Hd E + E + 2 E + V (decoder tied);  P_SOP = 2 Hd + 2

The paper's rounded millions: no single convention reproduces all 18 table entries (spec §3.8).
:func:`paper_millions` uses the rule that reproduces 17: embeddings (positions, types and their
LN counted at width Hd), projection and encoder, plus the pooler for the shared models only, rounded
to the nearest million. ALBERT-xxlarge (235M in Table 1) is 225M under it, and 223M counting the
released code's arrays (the HuggingFace model card's number): a paper inconsistency.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..nn.attention import init_attention
from ..nn.bert_embeddings import init_bert_embeddings
from ..nn.feed_forward import init_feed_forward
from ..nn.layer_norm import init_layer_norm
from ..nn.linear import init_linear
from ..nn.mlm_head import init_mlm_head
from .albert import ATTENTION_GROUP, FFN_GROUP, MLM_KEYS, SHARING, layer_keys


@dataclass(frozen=True)
class AlbertSize:
    n_layers: int  # L
    hidden: int  # Hd (the paper's H)
    embedding: int  # E
    n_heads: int
    d_ff: int  # F
    sharing: str = "all"
    vocab: int = 30000
    positions: int = 512
    types: int = 2

    def __post_init__(self) -> None:
        if self.sharing not in SHARING:
            raise ValueError(f"sharing must be one of {SHARING}, got {self.sharing!r}")


def count_parameters(size: AlbertSize, *, pooler: bool = True, heads: bool = False,
                     projection: str = "official", embedding_width: str = "embedding") -> int:
    """The exact number of parameters. heads: add the MLM and SOP heads. projection: "official" or "hf".
    embedding_width: "embedding" (the code) or "hidden" (positions, types and the embedding LN at width Hd)."""
    v, e, h, f, n = size.vocab, size.embedding, size.hidden, size.d_ff, size.n_layers
    w = {"embedding": e, "hidden": h}[embedding_width]
    total = v * e + size.positions * w + size.types * w + 2 * w
    if e != h or projection == "hf":
        total += e * h + h
    p_attn, p_ffn = 4 * (h * h + h) + 2 * h, 2 * h * f + f + h + 2 * h
    total += {"none": n * (p_attn + p_ffn), "all": p_attn + p_ffn, "attention": p_attn + n * p_ffn,
              "ffn": n * p_attn + p_ffn}[size.sharing]
    if pooler:
        total += h * h + h
    if heads:
        total += (h * e + e + 2 * e + v) + (2 * h + 2)
    return total


def paper_millions(size: AlbertSize) -> int:
    """The paper's rounded count (rule B of spec §3.8: pooler for shared models only, round half up)."""
    exact = count_parameters(size, pooler=size.sharing != "none", embedding_width="hidden")
    return (exact + 500_000) // 1_000_000


#: Paper rows: (table, label) -> (size, millions in the paper). Heads and F from the released configs.
PAPER_ROWS: dict[tuple[str, str], tuple[AlbertSize, int]] = {
    ("Table 1", "BERT-base"): (AlbertSize(12, 768, 768, 12, 3072, "none"), 108),
    ("Table 1", "BERT-large"): (AlbertSize(24, 1024, 1024, 16, 4096, "none"), 334),
    ("Table 1", "ALBERT-base"): (AlbertSize(12, 768, 128, 12, 3072, "all"), 12),
    ("Table 1", "ALBERT-large"): (AlbertSize(24, 1024, 128, 16, 4096, "all"), 18),
    ("Table 1", "ALBERT-xlarge"): (AlbertSize(24, 2048, 128, 16, 8192, "all"), 60),
    ("Table 1", "ALBERT-xxlarge"): (AlbertSize(12, 4096, 128, 64, 16384, "all"), 235),
    **{("Table 3", f"not-shared E={e}"): (AlbertSize(12, 768, e, 12, 3072, "none"), m)
       for e, m in ((64, 87), (128, 89), (256, 93), (768, 108))},
    **{("Table 3", f"all-shared E={e}"): (AlbertSize(12, 768, e, 12, 3072, "all"), m)
       for e, m in ((64, 10), (128, 12), (256, 16), (768, 31))},
    **{("Table 4", f"E={e} shared-{mode}"): (AlbertSize(12, 768, e, 12, 3072, s), m)
       for e, mode, s, m in ((768, "attention", "attention", 83), (768, "FFN", "ffn", 57),
                             (128, "attention", "attention", 64), (128, "FFN", "ffn", 38))},
}


def init_albert(rng, size: AlbertSize, *, xp, dtype, pooler: bool = True, heads: bool = True) -> dict[str, Any]:
    """Every parameter of the model once: a shared tensor is one array keyed "block_<name>".

    pooler / heads: include the pooler (pool_w, pool_b) / the SOP and MLM heads; the draws of the other
    parameters do not depend on them."""
    params = init_bert_embeddings(rng, size.vocab, size.positions, size.embedding, xp=xp, dtype=dtype,
                                  n_segments=size.types)
    if size.embedding != size.hidden:
        proj = init_linear(rng, size.embedding, size.hidden, xp=xp, dtype=dtype)
        params["proj_w"], params["proj_b"] = proj["w"], proj["b"]
    for layer in range(size.n_layers):
        keys = layer_keys(size.sharing, layer)
        block = {**init_attention(rng, size.hidden, xp=xp, dtype=dtype),
                 **init_feed_forward(rng, size.hidden, size.d_ff, xp=xp, dtype=dtype)}
        for name in ("ln1", "ln2"):
            ln = init_layer_norm(rng, size.hidden, xp=xp, dtype=dtype)
            block[f"{name}_gamma"], block[f"{name}_beta"] = ln["gamma"], ln["beta"]
        for name in ATTENTION_GROUP + FFN_GROUP:
            params.setdefault(keys[name], block[name])  # a shared key keeps its first draw
    pool = init_linear(rng, size.hidden, size.hidden, xp=xp, dtype=dtype)
    sop = init_linear(rng, size.hidden, 2, xp=xp, dtype=dtype)
    mlm = init_mlm_head(rng, size.hidden, size.embedding, size.vocab, xp=xp, dtype=dtype)
    if pooler:
        params.update({"pool_w": pool["w"], "pool_b": pool["b"]})
    if heads:
        params.update({"sop_w": sop["w"], "sop_b": sop["b"], **{k: mlm[v] for k, v in MLM_KEYS.items()}})
    return params


def sample_albert_batch(rng, batch: int, seq_len: int, vocab: int, *, xp, padded: int = 1,
                        n_targets: int = 2) -> dict[str, Any]:
    """Token ids, segment ids (A then B, the split drawn per row), a padding mask (the last ``padded`` tokens of
    the last row), MLM targets at ``n_targets`` real positions per row (-100 elsewhere) and SOP labels
    alternating 0 (in order), 1 (swapped)."""
    ids = rng.integers(0, vocab, (batch, seq_len))
    split = rng.integers(1, seq_len + 1, (batch, 1)) if seq_len > 1 else np.ones((batch, 1), dtype=np.int64)
    segments = (np.arange(seq_len)[None, :] >= split).astype(np.int64)
    pad = np.ones((batch, seq_len), dtype=bool)
    pad[-1, seq_len - padded:] = False
    targets = np.full((batch, seq_len), -100, dtype=np.int64)
    for row in range(batch):
        real = np.flatnonzero(pad[row])
        chosen = rng.choice(real, size=min(n_targets, real.size), replace=False)
        targets[row, chosen] = rng.integers(0, vocab, chosen.size)
    return {"ids": xp.asarray(ids, dtype=xp.int64), "segments": xp.asarray(segments, dtype=xp.int64),
            "pad": xp.asarray(pad), "mlm_targets": xp.asarray(targets, dtype=xp.int64),
            "sop_labels": xp.asarray(np.arange(batch) % 2, dtype=xp.int64)}


def untie(params: dict[str, Any], n_layers: int, sharing: str) -> dict[str, Any]:
    """The same model with every block parameter copied per layer (sharing "none")."""
    out = {k: v for k, v in params.items() if not k.startswith(("block_", "layer"))}
    for layer in range(n_layers):
        shared, own = layer_keys(sharing, layer), layer_keys("none", layer)
        out.update({own[name]: params[shared[name]] for name in shared})
    return out
