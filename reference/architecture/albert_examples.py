"""Registered examples of ALBERT, one per sharing mode of the paper (Table 4).

Sizes are small and pairwise distinct (B=2, T=5, V=11, P=8, E=4, Hd=6, F=7, L=3, 2 heads).
The base example "architecture.albert" is all-shared with dropout masks at every site; the variants
``.attention_shared``, ``.ffn_shared`` and ``.not_shared`` have none. Outputs: the final hidden
states ``h``, the SOP logits and the total loss L_MLM + L_SOP.
"""

from __future__ import annotations

from typing import Any

from ..nn.encoder_layer import sample_encoder_dropout
from ..random import dropout_mask, generator, integers
from ..registry import Case, Mechanism, register
from .albert import AlbertConfig, albert_backward, albert_forward
from .albert_params import AlbertSize, init_albert

B, T, V, P, E, HIDDEN, F, LAYERS, HEADS = 2, 5, 11, 8, 4, 6, 7, 3, 2
PAPER = "ALBERT: A Lite BERT (Lan et al., ICLR 2020)"
IGNORE = -100

#: Registered variants: name suffix → (sharing, with dropout).
VARIANTS = {"": ("all", True), ".attention_shared": ("attention", False), ".ffn_shared": ("ffn", False),
            ".not_shared": ("none", False)}


def example_size(sharing: str) -> AlbertSize:
    return AlbertSize(LAYERS, HIDDEN, E, HEADS, F, sharing, vocab=V, positions=P)


def sample_batch(rng, *, xp) -> dict[str, Any]:
    """Token ids, segment ids, a padding mask, MLM targets at three positions and SOP labels (0: in order, 1: swapped)."""
    ids = integers(rng, V, (B, T), xp=xp)
    segments = xp.asarray([[0, 0, 1, 1, 1], [0, 0, 0, 1, 1]])
    pad = xp.asarray([[True] * T, [True] * (T - 1) + [False]])
    targets = integers(rng, V, (B, T), xp=xp)
    predicted = xp.asarray([[False, True, False, False, True], [False, False, True, False, False]])
    mlm_targets = xp.where(predicted, targets, xp.full_like(targets, IGNORE))
    return {"ids": ids, "segments": segments, "pad": pad, "mlm_targets": mlm_targets,
            "sop_labels": xp.asarray([0, 1])}


def _example(sharing: str, noisy: bool):
    def example(seed: int, dtype: Any, xp) -> Case:
        rng = generator(seed)
        params = init_albert(rng, example_size(sharing), xp=xp, dtype=dtype)
        static: dict[str, Any] = sample_batch(rng, xp=xp)
        if noisy:
            static["dropout"] = {"emb": dropout_mask(rng, (B, T, E), 0.1, xp=xp, dtype=dtype),
                                 "layers": [sample_encoder_dropout(rng, B, T, HIDDEN, F, HEADS, 0.1, xp=xp, dtype=dtype)
                                            for _ in range(LAYERS)]}
        return Case(inputs={}, params=params, static=static)

    return example


def _forward(sharing: str):
    config = AlbertConfig(LAYERS, HEADS, sharing)

    def forward(case: Case):
        s = case.static
        out, cache = albert_forward(s["ids"], s["segments"], s["pad"], case.params, config,
                                    mlm_targets=s["mlm_targets"], sop_labels=s["sop_labels"], dropout=s.get("dropout"))
        return {"h": out.h, "sop_logits": out.sop_logits, "loss": out.loss}, cache

    return forward


def _backward(cache, cot):
    return albert_backward(cot["loss"], cache, dh=cot["h"], dsop_logits=cot["sop_logits"])


for _suffix, (_sharing, _noisy) in VARIANTS.items():
    register(Mechanism(f"architecture.albert{_suffix}", PAPER, "architecture", _example(_sharing, _noisy),
                       _forward(_sharing), _backward))
