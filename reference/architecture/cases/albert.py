"""Registered cases of ALBERT: the pretraining model at every sharing mode of the paper (Table 4), and the
encoder alone (HF ``AlbertModel``: embeddings, projection, shared layers and the pooler, no heads).

Outputs: the final hidden states ``h``, then the SOP logits and the total loss L_MLM + L_SOP (pretraining) or
the pooled [CLS] vector (encoder). No margins are needed: nothing discrete depends on the differentiated arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...config import Config, option
from ...nn.encoder_layer import sample_encoder_dropout
from ...random import dropout_mask, generator
from ...registry import Case, Mechanism, register
from ..albert import (
    SHARING,
    AlbertConfig,
    albert_backward,
    albert_encoder_backward,
    albert_encoder_forward,
    albert_forward,
)
from ..albert_params import AlbertSize, init_albert, sample_albert_batch

PAPER = "ALBERT: A Lite BERT (Lan et al., ICLR 2020)"


@dataclass(frozen=True)
class AlbertCaseConfig(Config):
    title = "ALBERT on one batch of sentence pairs (B, T)"
    batch: int = option(2, "batch size B", minimum=1)
    seq_len: int = option(7, "sequence length T (<= positions)", minimum=1)
    vocab: int = option(11, "vocabulary V", minimum=2)
    positions: int = option(8, "position table size P", minimum=1)
    embedding: int = option(6, "embedding width E (the projection exists when E != hidden)", minimum=1)
    hidden: int = option(15, "hidden width Hd (the paper's H; divisible by n_heads)", minimum=1)
    n_heads: int = option(3, "attention heads", minimum=1)
    d_ff: int = option(9, "feed-forward width F", minimum=1)
    n_layers: int = option(4, "layers L", minimum=1)
    sharing: str = option("all", "cross-layer sharing (§3.1, Table 4)", choices=SHARING)
    padded: int = option(1, "padded tokens at the end of the last sequence (seq_len: a fully padded row)",
                         minimum=0)
    dropout: float = option(0.0, "dropout rate of explicit masks at every site (0: none)", minimum=0.0, maximum=0.5)
    pooler: bool = option(True, "encoder only: include the tanh pooler of [CLS] (HF AlbertModel's default)")

    def validate(self) -> None:
        if self.hidden % self.n_heads:
            raise ValueError(f"hidden={self.hidden} must be divisible by n_heads={self.n_heads}")
        if self.seq_len > self.positions:
            raise ValueError(f"seq_len={self.seq_len} must be at most positions={self.positions}")
        if self.padded > self.seq_len:
            raise ValueError(f"padded={self.padded} must be at most seq_len={self.seq_len}")

    def size(self) -> AlbertSize:
        return AlbertSize(self.n_layers, self.hidden, self.embedding, self.n_heads, self.d_ff, self.sharing,
                          vocab=self.vocab, positions=self.positions)

    def model(self) -> AlbertConfig:
        return AlbertConfig(self.n_layers, self.n_heads, self.sharing)


def _builder(heads: bool):
    def build(seed: int, dtype: Any, xp, config: AlbertCaseConfig) -> Case:
        c = config
        rng = generator(seed)
        params = init_albert(rng, c.size(), xp=xp, dtype=dtype, pooler=c.pooler or heads, heads=heads)
        static: dict[str, Any] = sample_albert_batch(rng, c.batch, c.seq_len, c.vocab, xp=xp, padded=c.padded)
        if c.dropout > 0:
            static["dropout"] = {
                "emb": dropout_mask(rng, (c.batch, c.seq_len, c.embedding), c.dropout, xp=xp, dtype=dtype),
                "layers": [sample_encoder_dropout(rng, c.batch, c.seq_len, c.hidden, c.d_ff, c.n_heads, c.dropout,
                                                  xp=xp, dtype=dtype) for _ in range(c.n_layers)]}
        if not heads:
            static = {k: static[k] for k in ("ids", "segments", "pad", "dropout") if k in static}
        return Case(inputs={}, params=params, static=static)

    return build


def forward(case: Case):
    s = case.static
    out, cache = albert_forward(s["ids"], s["segments"], s["pad"], case.params, case.config.model(),
                                mlm_targets=s["mlm_targets"], sop_labels=s["sop_labels"], dropout=s.get("dropout"))
    return {"h": out.h, "sop_logits": out.sop_logits, "loss": out.loss}, cache


def backward(cache, cot):
    return albert_backward(cot["loss"], cache, dh=cot["h"], dsop_logits=cot["sop_logits"])


def encoder_forward(case: Case):
    s = case.static
    out, cache = albert_encoder_forward(s["ids"], s["segments"], s["pad"], case.params, case.config.model(),
                                        pooler=case.config.pooler, dropout=s.get("dropout"))
    return ({"h": out.h} if out.pooled is None else {"h": out.h, "pooled": out.pooled}), cache


def encoder_backward(cache, cot):
    return albert_encoder_backward(cot.get("h"), cache, dpooled=cot.get("pooled"))


def encoder_intermediates(cache) -> dict[str, Any]:
    """H^0, then per layer l = 1..L in forward order its attention probabilities (B, H, T, T) and its output H^l."""
    out: dict[str, Any] = {"hidden0": cache.hidden_states[0]}
    for layer, block in enumerate(cache.layers, start=1):
        out[f"layer{layer}.attention_probs"] = block.attention.attention.softmax.p
        out[f"hidden{layer}"] = cache.hidden_states[layer]
    return out


def intermediates(cache) -> dict[str, Any]:
    return encoder_intermediates(cache.encoder)


EDGE_CONFIGS = {
    "depth_1": {"n_layers": 1},
    "batch_1": {"batch": 1},
    "length_1": {"seq_len": 1, "padded": 0},
    "fully_padded_row": {"padded": 7},
    "no_projection": {"embedding": 15},  # E == Hd: the official code has no projection
    "odd_sizes": {"batch": 3, "seq_len": 5, "vocab": 13, "embedding": 7, "hidden": 10, "n_heads": 5, "d_ff": 11,
                  "n_layers": 2},
}
#: The all-shared model and the encoder also run a deep stack (ALBERT-base's 12 layers) and one head; the
#: encoder, which has no sharing variants of its own, every sharing mode.
DEEP_EDGES = {"deep_stack": {"n_layers": 12, "batch": 1, "seq_len": 3}, "one_head": {"n_heads": 1}}
ENCODER_EDGES = {**EDGE_CONFIGS, **DEEP_EDGES, "no_pooler": {"pooler": False},
                 **{f"sharing_{mode}": {"sharing": mode} for mode in SHARING if mode != "all"}}
REALISTIC = {"batch": 2, "seq_len": 128, "vocab": 30000, "positions": 512, "embedding": 128, "hidden": 768,
             "n_heads": 12, "d_ff": 3072, "n_layers": 12}  # ALBERT-base (Table 1), 12 layers

#: Registered pretraining variants: name suffix → defaults.
VARIANTS = {"": {"sharing": "all", "dropout": 0.1}, ".attention_shared": {"sharing": "attention"},
            ".ffn_shared": {"sharing": "ffn"}, ".not_shared": {"sharing": "none"}}

for _suffix, _defaults in VARIANTS.items():
    register(Mechanism(f"architecture.albert{_suffix}", PAPER, "architecture", _builder(True), forward, backward,
                       config=AlbertCaseConfig, defaults=_defaults,
                       edge_configs={**EDGE_CONFIGS, **(DEEP_EDGES if _suffix == "" else {})}, realistic=REALISTIC,
                       intermediates=intermediates))
register(Mechanism("architecture.albert.encoder", PAPER, "architecture", _builder(False), encoder_forward,
                   encoder_backward, config=AlbertCaseConfig,
                   edge_configs=ENCODER_EDGES, realistic=REALISTIC,
                   intermediates=encoder_intermediates))
