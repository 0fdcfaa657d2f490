"""The registered example of ``objectives.electra`` (see electra.py for the mechanism).

Sizes are small (B=2, T=5, V=7, E=4, Hg=3, Hd=4, Fg=5, Fd=6; E = Hd as in ELECTRA-Base, so
only the generator projects E -> Hg; widths >= 3 so layer norms are not degenerate) so that
the array-api-strict full check stays within about a minute. The Gumbel noise is redrawn
until every masked position's top two perturbed logits differ by at least
``MARGIN_EXAMPLE``, and one masked position gets noise that makes the sample equal the
original token (label 0), so the checks exercise that rule.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import from_numpy, to_numpy
from ..nn.linear import init_linear
from ..nn.mlm_head import init_mlm_head, mlm_head_forward
from ..nn.text_encoder import init_text_encoder, text_encoder_forward
from ..random import generator
from ..registry import Case, Mechanism, register
from .electra import (GEN_HEAD_KEYS, electra_backward, electra_forward, network_params, sample_electra_masking,
                      sample_gumbel)

PAD, CLS, SEP, MASK = 0, 1, 2, 3
B, T, V, E, HG, HD, FG, FD = 2, 5, 7, 4, 3, 4, 5, 6
HEADS_GEN, HEADS_DISC = 1, 2
MARGIN_EXAMPLE = 0.2
MARGIN_CHECK = 0.02


def init_electra(rng, *, vocab: int, n_positions: int, width: int, d_gen: int, d_disc: int, ff_gen: int,
                 ff_disc: int, xp, dtype) -> dict[str, Any]:
    """Shared embeddings, a generator and a discriminator (one encoder layer each)."""
    gen = init_text_encoder(rng, vocab, n_positions, width, d_gen, ff_gen, xp=xp, dtype=dtype)
    disc = init_text_encoder(rng, vocab, n_positions, width, d_disc, ff_disc, xp=xp, dtype=dtype)
    params = {"tok": gen["tok"], "pos": gen["pos"], "emb_ln_gamma": gen["ln_gamma"], "emb_ln_beta": gen["ln_beta"]}
    for prefix, net in (("gen_", gen), ("disc_", disc)):
        params.update({prefix + k: v for k, v in net.items() if k not in ("tok", "pos", "ln_gamma", "ln_beta")})
    head = init_mlm_head(rng, d_gen, width, vocab, xp=xp, dtype=dtype)
    params.update({"gen_head_w": head["w"], "gen_head_b": head["b"], "gen_head_ln_gamma": head["ln_gamma"],
                   "gen_head_ln_beta": head["ln_beta"], "gen_out_bias": head["out_bias"]})
    dense = init_linear(rng, d_disc, d_disc, xp=xp, dtype=dtype)
    cls = init_linear(rng, d_disc, 1, xp=xp, dtype=dtype)
    params.update({"disc_head_w": dense["w"], "disc_head_b": dense["b"],
                   "disc_cls_w": cls["w"], "disc_cls_b": cls["b"]})
    return params


def noisy_gap(case: Case) -> float:
    """The smallest gap between the best and second-best Gumbel-perturbed logit over masked positions."""
    p, s = case.params, case.static
    h, _ = text_encoder_forward(s["generator_ids"], s["pad"], network_params(p, "gen_"), n_heads=HEADS_GEN,
                                activation="gelu_tanh")  # the generator only: (B, T, Hg)
    head = {k: p["gen_head_" + k] if k != "out_bias" else p["gen_out_bias"] for k in GEN_HEAD_KEYS}
    logits, _ = mlm_head_forward(h, head, p["tok"], activation="gelu_tanh")  # (B, T, V)
    noisy = to_numpy(logits) / s["temperature"] + to_numpy(s["gumbel"])
    top = np.sort(noisy, axis=-1)
    gaps = (top[..., -1] - top[..., -2])[to_numpy(case.static["masked"])]
    return float(np.min(gaps))


def margin_check(case: Case, step: float) -> None:
    gap = noisy_gap(case)
    if gap < MARGIN_CHECK:
        raise ValueError(f"objectives.electra: a sample is within {gap:.3g} of a tie (need {MARGIN_CHECK}); "
                         "a finite difference could flip it")


def example(seed: int, dtype: Any, xp) -> Case:
    rng = generator(seed)
    body = rng.integers(4, V, (B, T))
    ids = np.where(np.arange(T)[None, :] == 0, CLS, body)
    ids[0, T - 1] = SEP
    ids[1, 3], ids[1, 4] = SEP, PAD
    pad = ids != PAD
    params = init_electra(rng, vocab=V, n_positions=T + 1, width=E, d_gen=HG, d_disc=HD, ff_gen=FG, ff_disc=FD,
                          xp=xp, dtype=dtype)
    masking = sample_electra_masking(rng, xp.asarray(ids), xp.asarray(pad), mask_rate=0.4, mask_id=MASK,
                                     special_ids=(PAD, CLS, SEP, MASK), xp=xp)
    masked = to_numpy(masking.masked)
    first = tuple(int(i) for i in np.argwhere(masked)[0])
    for _ in range(100):  # redraw the noise until no sample is near a tie
        gumbel = to_numpy(sample_gumbel(rng, (B, T, V), xp=xp, dtype=dtype)).copy()
        gumbel[first + (int(ids[first]),)] += 20.0  # this sample equals the original: label 0
        case = Case(inputs={}, params=params,
                    static={"ids": xp.asarray(ids), "pad": xp.asarray(pad), "masked": masking.masked,
                            "generator_ids": masking.generator_ids, "gumbel": from_numpy(gumbel, xp, dtype),
                            "temperature": 1.0})
        if noisy_gap(case) >= MARGIN_EXAMPLE:
            return case
    raise RuntimeError("could not draw Gumbel noise away from ties")


def forward(case: Case):
    s = case.static
    out, cache = electra_forward(s["ids"], s["pad"], s["masked"], s["generator_ids"], s["gumbel"], case.params,
                                 n_heads_gen=HEADS_GEN, n_heads_disc=HEADS_DISC, temperature=s["temperature"])
    return {"loss": out.loss, "mlm_loss": out.mlm_loss, "disc_loss": out.disc_loss, "corrupted": out.corrupted,
            "labels": out.labels}, cache


def backward(cache, cot):
    zero = 0.0
    return electra_backward(cot["loss"], cache, dmlm_loss=cot.get("mlm_loss", zero),
                            ddisc_loss=cot.get("disc_loss", zero))


register(Mechanism("objectives.electra", "ELECTRA (Clark et al., ICLR 2020)", "objectives", example, forward,
                   backward, margin_check=margin_check))
