"""Registered cases of ``objectives.electra`` and its sub-models (see ../electra.py for the mechanism).

``objectives.electra``: the whole objective (generator, Gumbel-max sampling, discriminator).
``objectives.electra.generator``: the generator alone (encoder + MLM head on x^masked, L_MLM).
``objectives.electra.discriminator``: the discriminator alone, given replaced ids and their labels
(encoder + head, L_Disc); no generator, no sampling.

Token ids: 0 [PAD], 1 [CLS], 2 [SEP], 3 [MASK], ordinary tokens from 4. Each real row is
[CLS] w ... w [SEP]; the last row ends in ``n_padded`` padding positions, and the last
``n_empty_rows`` rows are fully padded. The Gumbel noise of every masked position is redrawn until
its top two perturbed logits differ by at least ``MARGIN_EXAMPLE`` (the checker then asserts
``MARGIN_CHECK``), and with ``force_original`` one masked position gets noise that makes the sample
equal the original token (label 0), so the checks exercise that rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...backend import from_numpy, to_numpy
from ...config import Config, option
from ...nn.mlm_head import mlm_head_forward
from ...nn.text_encoder import text_encoder_forward, text_encoder_intermediates
from ...random import generator
from ...registry import Case, Mechanism, register
from ..electra import (
    DISALLOW_PENALTY,
    DISC_WEIGHT,
    GEN_HEAD,
    SHARED_KEYS,
    electra_backward,
    electra_discriminator_backward,
    electra_discriminator_forward,
    electra_forward,
    electra_generator_backward,
    electra_generator_forward,
    init_electra,
    network_params,
    sample_electra_masking,
    sample_gumbel,
)

PAD, CLS, SEP, MASK = 0, 1, 2, 3
SPECIAL = (PAD, CLS, SEP, MASK)
MARGIN_EXAMPLE = 0.2
MARGIN_CHECK = 0.02
PAPER = "ELECTRA (Clark et al., ICLR 2020)"


@dataclass(frozen=True)
class ElectraConfig(Config):
    title = "ELECTRA's generator and discriminator on (batch, seq_len) ids"
    batch: int = option(2, "batch size B", minimum=1)
    seq_len: int = option(6, "sequence length T ([CLS] ... [SEP] and padding)", minimum=3)
    vocab: int = option(11, "vocabulary V (ids 0-3 are [PAD], [CLS], [SEP], [MASK])", minimum=6)
    width: int = option(4, "shared embedding width E", minimum=2)
    d_gen: int = option(5, "generator width Hg (a projection E -> Hg when they differ)", minimum=2)
    d_disc: int = option(6, "discriminator width Hd (a projection E -> Hd when they differ)", minimum=2)
    n_heads_gen: int = option(1, "generator heads (divide d_gen)", minimum=1)
    n_heads_disc: int = option(3, "discriminator heads (divide d_disc)", minimum=1)
    ff_gen: int = option(8, "generator feed-forward width Fg", minimum=1)
    ff_disc: int = option(7, "discriminator feed-forward width Fd", minimum=1)
    n_layers: int = option(1, "encoder layers per network", minimum=1)
    n_padded: int = option(1, "padding positions at the end of the last real row", minimum=0)
    n_empty_rows: int = option(0, "fully padded rows at the end of the batch", minimum=0)
    mask_rate: float = option(0.4, "share of real tokens masked (the authors' mask_prob is 0.15, "
                              "configure_pretraining.py l.40; 0.4 masks two per row at T=6)",
                              minimum=0.01, maximum=0.99)
    max_predictions_per_seq: int = option(0, "cap N on masked positions; 0: the authors' int((mask_rate + 0.005) "
                                          "* seq_len), configure_pretraining.py l.106-107", minimum=0)
    temperature: float = option(1.0, "sampling temperature (configure_pretraining.py l.79)", minimum=1e-3)
    disallow_correct: bool = option(False, "never sample the original token (configure_pretraining.py l.76; "
                                    "pretrain_helpers.py l.223-224)")
    force_original: bool = option(True, "force one masked sample to equal its original (label 0)")
    disc_weight: float = option(DISC_WEIGHT, "lambda (configure_pretraining.py l.39)", minimum=0.0)
    activation: str = option("gelu", "hidden activation (exact GELU: model/modeling.py l.298-311)",
                             choices=("gelu", "gelu_tanh", "relu"))
    gen_head_activation: str = option("same", "generator head activation; 'gelu' is HF's hard-coded choice "
                                      "(modeling_electra.py l.625)", choices=("same", "gelu", "gelu_tanh", "relu"))
    eps: float = option(1e-12, "layer norm epsilon (HF ElectraConfig layer_norm_eps, configuration_electra.py "
                        "l.135)", minimum=0.0)
    padding_idx: int = option(-1, "HF's padding_idx (modeling_electra.py l.137): this token's input-embedding "
                              "gradient is dropped; -1: none", minimum=-1)
    hf_label_cast: bool = option(False, "HF's labels.float() (modeling_electra.py l.1102): the discriminator "
                                 "loss value rounded to float32; forward only (a finite difference of a rounded "
                                 "value is not a gradient)")

    def validate(self) -> None:
        name = type(self).__name__
        for width, heads in (("d_gen", "n_heads_gen"), ("d_disc", "n_heads_disc")):
            if getattr(self, width) % getattr(self, heads):
                raise ValueError(f"{name}.{width} ({getattr(self, width)}) must be a multiple of {heads} "
                                 f"({getattr(self, heads)})")
        if self.n_empty_rows >= self.batch:
            raise ValueError(f"{name}.n_empty_rows ({self.n_empty_rows}) must be < batch ({self.batch})")
        if self.n_padded > self.seq_len - 3:
            raise ValueError(f"{name}.n_padded ({self.n_padded}) must leave [CLS] w [SEP]: at most seq_len - 3 "
                             f"({self.seq_len - 3})")
        if self.disallow_correct and self.force_original:
            raise ValueError(f"{name}.force_original cannot hold with disallow_correct (the original is never "
                             "sampled); set force_original=False")
        if self.padding_idx >= self.vocab:
            raise ValueError(f"{name}.padding_idx ({self.padding_idx}) must be < vocab ({self.vocab})")

    @property
    def cap(self) -> int:
        return self.max_predictions_per_seq or int((self.mask_rate + 0.005) * self.seq_len)

    def options(self) -> dict[str, Any]:
        """The keyword options every ELECTRA forward shares."""
        return {"n_layers": self.n_layers, "activation": self.activation, "eps": self.eps,
                "padding_idx": None if self.padding_idx < 0 else self.padding_idx}


def _ids(rng: np.random.Generator, c: ElectraConfig) -> np.ndarray:
    """[CLS] w ... w [SEP] per real row, padding at the end of the last real row; empty rows all [PAD]."""
    ids = np.full((c.batch, c.seq_len), PAD)
    for row in range(c.batch - c.n_empty_rows):
        n = c.seq_len - (c.n_padded if row == c.batch - c.n_empty_rows - 1 else 0)
        ids[row, :n] = [CLS, *rng.integers(4, c.vocab, n - 2), SEP]
    return ids


def _noisy(case: Case) -> np.ndarray:
    """The generator's logits / temperature (minus the disallow penalty): what the Gumbel noise is added to."""
    c, p, s = case.config, case.params, case.static
    h, _ = text_encoder_forward(s["generator_ids"], s["pad"], network_params(p, "gen_"), n_heads=c.n_heads_gen,
                                **c.options())  # (B, T, Hg)
    head_activation = c.activation if c.gen_head_activation == "same" else c.gen_head_activation
    logits, _ = mlm_head_forward(h, {k: p[name] for k, name in GEN_HEAD.items()}, p["tok"],
                                 activation=head_activation, eps=c.eps)  # (B, T, V)
    noisy = to_numpy(logits) / c.temperature
    if c.disallow_correct:
        noisy = noisy - DISALLOW_PENALTY * np.eye(c.vocab)[to_numpy(s["ids"])]
    return noisy


def _gaps(noisy: np.ndarray, gumbel: np.ndarray) -> np.ndarray:
    top = np.sort(noisy + gumbel, axis=-1)
    return top[..., -1] - top[..., -2]  # (B, T)


def margin_check(case: Case) -> None:
    gaps = _gaps(_noisy(case), to_numpy(case.static["gumbel"]))[to_numpy(case.static["masked"])]
    if float(np.min(gaps)) < MARGIN_CHECK:
        raise ValueError(f"objectives.electra: a sample is within {float(np.min(gaps)):.3g} of a tie (need "
                         f"{MARGIN_CHECK}); a finite difference could flip it")


def _masking(rng, c: ElectraConfig, ids: np.ndarray, xp):
    pad = ids != PAD
    masking = sample_electra_masking(rng, xp.asarray(ids), xp.asarray(pad), mask_rate=c.mask_rate, mask_id=MASK,
                                     special_ids=SPECIAL, max_predictions_per_seq=c.cap, xp=xp)
    return pad, masking


def _draw(rng, c: ElectraConfig, xp, dtype):
    """What every ELECTRA case starts from: ids, both networks' parameters, padding and masking."""
    ids = _ids(rng, c)
    params = init_electra(rng, vocab=c.vocab, n_positions=c.seq_len + 2, width=c.width, d_gen=c.d_gen,
                          d_disc=c.d_disc, ff_gen=c.ff_gen, ff_disc=c.ff_disc, n_layers=c.n_layers, xp=xp,
                          dtype=dtype)
    pad, masking = _masking(rng, c, ids, xp)
    return ids, params, pad, masking


def build(seed: int, dtype: Any, xp, config: ElectraConfig) -> Case:
    c, rng = config, generator(seed)
    ids, params, pad, masking = _draw(rng, c, xp, dtype)
    masked = to_numpy(masking.masked)
    static = {"ids": xp.asarray(ids), "pad": xp.asarray(pad), "masked": masking.masked,
              "generator_ids": masking.generator_ids}
    noisy = _noisy(Case(inputs={}, params=params, static=static, config=c))  # (B, T, V)
    gumbel = to_numpy(sample_gumbel(rng, noisy.shape, xp=xp, dtype=dtype)).astype(np.float64)
    if c.force_original:
        first = tuple(int(i) for i in np.argwhere(masked)[0])
        gumbel[first + (int(ids[first]),)] += 20.0 + float(np.ptp(noisy[first]))  # this sample equals the original
    for _ in range(100):  # redraw the noise of every masked position near a tie
        near = masked & (_gaps(noisy, gumbel) < MARGIN_EXAMPLE)
        if not near.any():
            return Case(inputs={}, params=params, static={**static, "gumbel": from_numpy(gumbel, xp, dtype)})
        gumbel[near] = to_numpy(sample_gumbel(rng, (int(near.sum()), c.vocab), xp=xp, dtype=dtype))
    raise ValueError(f"objectives.electra: could not draw Gumbel noise {MARGIN_EXAMPLE} away from ties in 100 "
                     f"redraws (temperature={c.temperature}); raise the temperature")


def forward(case: Case):
    c, s = case.config, case.static
    out, cache = electra_forward(s["ids"], s["pad"], s["masked"], s["generator_ids"], s["gumbel"], case.params,
                                 n_heads_gen=c.n_heads_gen, n_heads_disc=c.n_heads_disc, temperature=c.temperature,
                                 disc_weight=c.disc_weight, disallow_correct=c.disallow_correct,
                                 gen_head_activation=None if c.gen_head_activation == "same" else
                                 c.gen_head_activation, hf_label_cast=c.hf_label_cast, **c.options())
    return {"loss": out.loss, "mlm_loss": out.mlm_loss, "disc_loss": out.disc_loss, "corrupted": out.corrupted,
            "labels": out.labels}, cache


def backward(cache, cot):
    return electra_backward(cot["loss"], cache, dmlm_loss=cot.get("mlm_loss", 0.0),
                            ddisc_loss=cot.get("disc_loss", 0.0))


def intermediates(cache) -> dict[str, Any]:
    return {**text_encoder_intermediates(cache.generator.encoder, "gen_"),
            **text_encoder_intermediates(cache.discriminator.encoder, "disc_")}


def _own(params: dict[str, Any], prefix: str) -> dict[str, Any]:
    shared = set(SHARED_KEYS.values())
    return {k: v for k, v in params.items() if k in shared or k.startswith(prefix)}


def build_generator(seed: int, dtype: Any, xp, config: ElectraConfig) -> Case:
    c, rng = config, generator(seed)
    ids, params, pad, masking = _draw(rng, c, xp, dtype)
    return Case(inputs={}, params=_own(params, "gen_"),
                static={"ids": xp.asarray(ids), "pad": xp.asarray(pad), "masked": masking.masked,
                        "generator_ids": masking.generator_ids})


def forward_generator(case: Case):
    c, s = case.config, case.static
    (mlm_loss, logits), cache = electra_generator_forward(
        s["generator_ids"], s["pad"], s["ids"], s["masked"], case.params, n_heads=c.n_heads_gen,
        head_activation=None if c.gen_head_activation == "same" else c.gen_head_activation, **c.options())
    return {"mlm_loss": mlm_loss, "logits": logits}, cache


def build_discriminator(seed: int, dtype: Any, xp, config: ElectraConfig) -> Case:
    """Replaced ids without a generator: each masked position takes a random ordinary token."""
    c, rng = config, generator(seed)
    ids, params, pad, masking = _draw(rng, c, xp, dtype)
    masked = to_numpy(masking.masked)
    corrupted = np.where(masked, rng.integers(4, c.vocab, ids.shape), ids)
    if c.force_original:  # one masked position keeps its token: label 0
        first = tuple(int(i) for i in np.argwhere(masked)[0])
        corrupted[first] = ids[first]
    labels = (corrupted != ids).astype(np.int64)
    return Case(inputs={}, params=_own(params, "disc_"),
                static={"corrupted": from_numpy(corrupted, xp, xp.int64), "pad": xp.asarray(pad),
                        "labels": from_numpy(labels, xp, xp.int64)})


def forward_discriminator(case: Case):
    c, s = case.config, case.static
    (disc_loss, scores), cache = electra_discriminator_forward(
        s["corrupted"], s["pad"], s["labels"], case.params, n_heads=c.n_heads_disc, hf_label_cast=c.hf_label_cast,
        **c.options())
    return {"disc_loss": disc_loss, "scores": scores}, cache


EDGE_CONFIGS = {
    "batch_1": {"batch": 1, "n_padded": 0},
    "two_layers": {"n_layers": 2},
    "fully_padded_row": {"batch": 3, "n_empty_rows": 1},
    "one_masked": {"mask_rate": 0.05},
    "all_masked": {"mask_rate": 0.95, "max_predictions_per_seq": 6},
    "capped": {"mask_rate": 0.9, "max_predictions_per_seq": 1},
    "disallow_correct": {"disallow_correct": True, "force_original": False},
    "cold_sampling": {"temperature": 0.5},
    "hf_departures": {"gen_head_activation": "gelu", "activation": "gelu_tanh", "padding_idx": PAD},
    "equal_widths": {"width": 6, "d_gen": 6, "n_heads_gen": 2},
    "odd_sizes": {"batch": 3, "seq_len": 9, "vocab": 13, "width": 5, "d_gen": 7, "n_heads_gen": 7, "d_disc": 9,
                  "n_heads_disc": 3, "ff_gen": 11, "ff_disc": 2, "n_padded": 4},
}
#: The sub-models output scores or logits at padded positions too, which depend on the [PAD] row of tok:
#: HF's padding_idx drops a true gradient there, so their HF edge configuration leaves it out.
SUB_EDGE_CONFIGS = {**{k: EDGE_CONFIGS[k] for k in ("batch_1", "two_layers", "fully_padded_row", "all_masked",
                                                    "odd_sizes")},
                    "hf_activations": {"gen_head_activation": "gelu", "activation": "gelu_tanh"}}
#: ELECTRA-Small (the paper's Table 6 as the authors' configure_pretraining.py sizes it [paper, recalled]).
REALISTIC = {"batch": 2, "seq_len": 128, "vocab": 30522, "width": 128, "d_gen": 64, "n_heads_gen": 1,
             "ff_gen": 256, "d_disc": 256, "n_heads_disc": 4, "ff_disc": 1024, "n_layers": 12, "mask_rate": 0.15}

register(Mechanism("objectives.electra", PAPER, "objectives", build, forward, backward, margin_check=margin_check,
                   config=ElectraConfig, edge_configs=EDGE_CONFIGS, realistic=REALISTIC,
                   intermediates=intermediates))
register(Mechanism("objectives.electra.generator", PAPER, "objectives", build_generator, forward_generator,
                   lambda cache, cot: electra_generator_backward(cot["mlm_loss"], cache, dlogits=cot.get("logits")),
                   config=ElectraConfig, edge_configs=SUB_EDGE_CONFIGS, realistic=REALISTIC,
                   intermediates=lambda cache: text_encoder_intermediates(cache.encoder, "gen_")))
register(Mechanism("objectives.electra.discriminator", PAPER, "objectives", build_discriminator,
                   forward_discriminator,
                   lambda cache, cot: electra_discriminator_backward(cot["disc_loss"], cache,
                                                                     dscores=cot.get("scores")),
                   config=ElectraConfig, edge_configs=SUB_EDGE_CONFIGS, realistic=REALISTIC,
                   intermediates=lambda cache: text_encoder_intermediates(cache.encoder, "disc_")))
