"""ELECTRA replaced-token detection (Clark, Luong, Le, Manning, ICLR 2020; arXiv:2003.10555v1).

A small generator (a masked language model) fills masked positions with samples;
a discriminator labels every token "original" or "replaced". Both share the
token and position embeddings (and the embedding layer norm). The generator and
the discriminator are also public alone (``electra_generator_forward``,
``electra_discriminator_forward``), for implementations of one network.

The authors' code is google-research/electra at commit 8a46635 ("the code" below).

Data construction (no gradient; ``sample_electra_masking``, ``sample_gumbel``):
    k = max(1, min(N, round(mask_rate * n_real))) positions among non-special real tokens,
        N = max_predictions_per_seq                                   pretrain_helpers.py l.174-175
    x^masked_t = [MASK] with probability 0.85 for t in M, else x_t     pretrain_helpers.py l.201-202

Forward (the sample is taken inside, from explicit Gumbel noise). The paper's Sec. 2 displays
its equations unnumbered; (1)-(5) below number them in the order they appear there:
    logits^G = MLMHead(Encoder_G(x^masked))                            (B, T, V)     Eq. (1) p_G
    L_MLM = mean_{t in M} -log softmax(logits^G_t)[x_t]                               Eq. (3)
    x̂_t = argmax_v (logits^G_t[v] / temperature - 1000 [disallow_correct and v = x_t] + g_t[v])
          (Gumbel-max; the code's sample_from_softmax, pretrain_helpers.py l.222-229)
    x^c_t = x̂_t for t in M, x_t elsewhere                              corrupted sequence
    y_t = 1 if x^c_t != x_t else 0  (the code's is_fake_tokens, run_pretraining.py l.234-235)
    s_t = w_2^T act(W_1 Encoder_D(x^c)_t + b_1) + b_2                   Eq. (2) D = sigmoid(s)
    L_Disc = mean_{t real} BCEWithLogits(s_t, y_t)                                    Eq. (4)
    L = L_MLM + lambda L_Disc,  lambda = 50                                           Eq. (5)

Backward:
    ds_t = lambda (sigmoid(s_t) - y_t) / n_real on real positions
    dlogits^G_t = (softmax(logits^G_t) - onehot(x_t)) / |M| on masked positions
    No gradient flows through x̂ (the code's tf.stop_gradient, run_pretraining.py l.226).
    Shared tables (Sec. 3.2): d tok = d tok[generator input] + d tok[generator output, tied]
    + d tok[discriminator input]; d pos and the embedding layer norm sum both networks' parts.

Axes: B batch, T sequence, V vocabulary, E embedding width, Hg / Hd generator /
discriminator width, Fg / Fd their feed-forward widths.

Paper symbol -> name: x -> ids, m -> masked, x^masked -> generator_ids, p_G -> softmax(gen_logits),
x̂ -> sampled, x^corrupt -> corrupted, D(x, t) -> sigmoid(disc_scores) (see the label sense below),
lambda -> disc_weight, e (shared embeddings) -> params "tok", "pos", "emb_ln_gamma", "emb_ln_beta".

Parameter names: shared "tok" (V, E), "pos" (P, E), "emb_ln_gamma/beta" (E,);
generator "gen_proj_w/b", "gen_layer{l}_*", "gen_head_w/b", "gen_head_ln_gamma/beta", "gen_out_bias";
discriminator "disc_proj_w/b" (when E != Hd), "disc_layer{l}_*", "disc_head_w/b", "disc_cls_w/b".

Defaults and their sources: the exact (erf) GELU everywhere (model/modeling.py l.298-311, and
``hidden_act="gelu"`` l.45); lambda = 50, temperature 1 (configure_pretraining.py l.39, l.79);
N = int((mask_rate + 0.005) * T) (configure_pretraining.py l.106-107); disallow_correct off (l.76).

Deviations:
- Label sense: y = 1 means *replaced* (the code's is_fake_tokens); the paper's D(x, t) is the
  probability that token t is *real* [paper, recalled], so sigmoid(s) here is the paper's 1 - D.
- Generator head: the code's dense + activation + LayerNorm + tied projection + bias (the
  ``generator_predictions`` scope of run_pretraining.py); the paper writes softmax(e(x)^T h_G)
  [paper, recalled].
- Mask count: the code's round(rate * n_real) capped at N, at least 1, n_real counting every real
  token (special ones included); the paper's k = ceil(0.15 n) [paper, recalled] is not offered. The
  code draws positions with ``tf.random.categorical`` (with replacement: duplicates collapse, so
  fewer than k may be masked, pretrain_helpers.py l.188); here exactly k, without replacement.
- The code computes generator logits only at the gathered masked positions; here everywhere, the
  loss ignoring unmasked positions (same values and gradients). The code divides summed losses by
  (1e-6 + count) (run_pretraining.py l.208); here by the count exactly.
- HuggingFace departures, as options (transformers 4.57.6, models/electra/modeling_electra.py):
  ``gen_head_activation="gelu"`` (l.625 hard-codes the exact GELU in the generator head whatever
  hidden_act says); ``padding_idx`` (l.137: nn.Embedding drops the pad token's input gradient);
  ``hf_label_cast`` (l.1102: ``labels.float()`` makes the discriminator loss a float32 value; its
  gradient stays that of the unrounded loss, as torch's cast backward gives).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..backend import array_namespace, from_numpy, one_hot, to_numpy
from ..nn.bert_embeddings import require_ids, require_tables
from ..nn.gelu import ActivationCache, activation_backward, activation_forward
from ..nn.linear import LinearCache, init_linear, linear_backward, linear_forward
from ..nn.losses import (
    IGNORE_INDEX,
    BCECache,
    CrossEntropyCache,
    cross_entropy_backward,
    cross_entropy_forward,
    sigmoid_bce_backward,
    sigmoid_bce_forward,
)
from ..nn.mlm_head import MLMHeadCache, init_mlm_head, mlm_head_backward, mlm_head_forward, mlm_head_keys
from ..nn.text_encoder import (
    EMBEDDING_KEYS,
    TextEncoderCache,
    init_text_encoder,
    text_encoder_backward,
    text_encoder_forward,
)
from ..validate import require_bool, require_finite, require_float, require_int, require_shape

#: The discriminator weight lambda (configure_pretraining.py l.39; the paper's Sec. 3.1).
DISC_WEIGHT = 50.0
#: Share of masked positions that show [MASK] to the generator (pretrain_helpers.py l.202).
MASK_TOKEN_PROB = 0.85
#: What disallow_correct subtracts from the original token's logit (pretrain_helpers.py l.224).
DISALLOW_PENALTY = 1000.0
SHARED_KEYS = {"tok": "tok", "pos": "pos", "ln_gamma": "emb_ln_gamma", "ln_beta": "emb_ln_beta"}
GEN_HEAD = mlm_head_keys("gen_head_", "gen_out_bias")


class ElectraMasking(NamedTuple):
    masked: Any  # (B, T) bool, the positions M
    generator_ids: Any  # (B, T) int, x^masked


class ElectraOutputs(NamedTuple):
    loss: Any  # () L = L_MLM + lambda L_Disc
    mlm_loss: Any  # ()
    disc_loss: Any  # ()
    sampled: Any  # (B, T) int, argmax of the Gumbel-perturbed logits (meaningful on masked positions)
    corrupted: Any  # (B, T) int, x^c
    labels: Any  # (B, T) int, 1 = replaced


class GeneratorCache(NamedTuple):
    encoder: TextEncoderCache  # h^G (B, T, Hg)
    head: MLMHeadCache  # logits (B, T, V)
    mlm: CrossEntropyCache


class DiscriminatorCache(NamedTuple):
    encoder: TextEncoderCache  # h^D (B, T, Hd)
    head: LinearCache  # (B, T, Hd) -> (B, T, Hd)
    act: ActivationCache  # (B, T, Hd)
    cls: LinearCache  # (B, T, Hd) -> (B, T, 1)
    bce: BCECache  # scores (B, T)


class ElectraCache(NamedTuple):
    generator: GeneratorCache
    discriminator: DiscriminatorCache
    disc_weight: float


def network_params(params: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The shared embeddings plus one network's own encoder keys, named as text_encoder expects."""
    own = {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}
    return {**{k: params[name] for k, name in SHARED_KEYS.items()}, **own}


def _network_grads(grads: dict[str, Any], prefix: str) -> dict[str, Any]:
    """A text encoder's gradients under the model's names (shared tables unprefixed)."""
    return {SHARED_KEYS.get(k, prefix + k): v for k, v in grads.items() if k in SHARED_KEYS or k not in EMBEDDING_KEYS}


def _require_common(pad: Any, params: dict[str, Any], ids_name: str, ids: Any) -> None:
    require_tables(params, (*SHARED_KEYS.values(), *params))  # every parameter a finite float array
    require_shape("params['tok']", params["tok"], ["vocab", "dim"], [None, None])
    require_ids(ids_name, ids, params["tok"].shape[0])
    require_bool("pad", pad)
    require_shape("pad", pad, ["batch", "seq"], list(ids.shape))


def electra_generator_forward(generator_ids: Any, pad: Any, ids: Any, masked: Any, params: dict[str, Any], *,
                              n_heads: int, n_layers: int = 1, activation: str = "gelu",
                              head_activation: str | None = None, eps: float = 1e-12,
                              padding_idx: int | None = None,
                              dropout: list | None = None) -> tuple[tuple[Any, Any], GeneratorCache]:
    """The generator alone: (L_MLM, logits (B, T, V)) on x^masked, predicting ``ids`` at ``masked``."""
    xp = array_namespace(params["tok"])
    _require_common(pad, params, "generator_ids", generator_ids)
    require_ids("ids", ids, params["tok"].shape[0])
    require_shape("ids", ids, ["batch", "seq"], list(generator_ids.shape))
    require_bool("masked", masked)
    require_shape("masked", masked, ["batch", "seq"], list(generator_ids.shape))
    if bool(xp.any(masked & ~pad)):
        raise ValueError("masked must select real tokens only (masked & ~pad is nonempty)")
    if not bool(xp.any(masked)):
        raise ValueError("masked selects no position: the generator's MLM loss would be empty")
    h, encoder = text_encoder_forward(generator_ids, pad, network_params(params, "gen_"), n_heads=n_heads,
                                      n_layers=n_layers, dropout=dropout, activation=activation, eps=eps,
                                      padding_idx=padding_idx)  # (B, T, Hg)
    head = {k: params[name] for k, name in GEN_HEAD.items()}
    logits, head_cache = mlm_head_forward(h, head, params["tok"], activation=head_activation or activation,
                                          eps=eps)  # (B, T, V)  Eq. (1)
    targets = xp.where(masked, ids, xp.full_like(ids, IGNORE_INDEX))  # (B, T)
    mlm_loss, mlm = cross_entropy_forward(logits, targets)  # Eq. (3)
    return (mlm_loss, logits), GeneratorCache(encoder, head_cache, mlm)


def electra_generator_backward(dmlm_loss: Any, cache: GeneratorCache, *, dlogits: Any | None = None) -> dict[str, Any]:
    """Gradients of ``dmlm_loss * L_MLM + <dlogits, logits>``; ``tok`` holds the input and the tied output parts."""
    dz = cross_entropy_backward(dmlm_loss, cache.mlm)  # (B, T, V): (softmax - onehot) / |M|
    if dlogits is not None:
        dz = dz + dlogits  # (B, T, V)
    dh, head, dtok_out = mlm_head_backward(dz, cache.head)  # (B, T, Hg), (V, E)
    grads = _network_grads(text_encoder_backward(dh, cache.encoder), "gen_")
    grads["tok"] = grads["tok"] + dtok_out  # tied output projection: the sum over uses
    grads.update({GEN_HEAD[k]: v for k, v in head.items()})
    return grads


def electra_discriminator_forward(corrupted: Any, pad: Any, labels: Any, params: dict[str, Any], *, n_heads: int,
                                  n_layers: int = 1, activation: str = "gelu", eps: float = 1e-12,
                                  padding_idx: int | None = None, hf_label_cast: bool = False,
                                  dropout: list | None = None) -> tuple[tuple[Any, Any], DiscriminatorCache]:
    """The discriminator alone: (L_Disc, scores (B, T)) on the replaced ids; labels (B, T) int, 1 = replaced."""
    xp = array_namespace(params["tok"])
    _require_common(pad, params, "corrupted", corrupted)
    require_int("labels", labels)
    require_shape("labels", labels, ["batch", "seq"], list(corrupted.shape))
    if bool(xp.any((labels != 0) & (labels != 1))):
        raise ValueError(f"labels must be 0 (original) or 1 (replaced), got values in "
                         f"[{int(xp.min(labels))}, {int(xp.max(labels))}]")
    h, encoder = text_encoder_forward(corrupted, pad, network_params(params, "disc_"), n_heads=n_heads,
                                      n_layers=n_layers, dropout=dropout, activation=activation, eps=eps,
                                      padding_idx=padding_idx)  # (B, T, Hd)
    u, head = linear_forward(h, params["disc_head_w"], params["disc_head_b"])  # (B, T, Hd)
    a, act = activation_forward(u, activation)  # (B, T, Hd)
    s, cls = linear_forward(a, params["disc_cls_w"], params["disc_cls_b"])  # (B, T, 1)
    scores = s[..., 0]  # (B, T)  Eq. (2): sigmoid(s_t)
    disc_loss, bce = sigmoid_bce_forward(scores, xp.astype(labels, scores.dtype),
                                         xp.astype(pad, scores.dtype))  # Eq. (4)
    if hf_label_cast:  # HF modeling_electra.py l.1102: the loss value is a float32
        disc_loss = xp.astype(xp.astype(disc_loss, xp.float32), scores.dtype)  # not gradient-checked: a rounding of the value (test_hf_label_cast_rounds_the_loss_to_float32)
    return (disc_loss, scores), DiscriminatorCache(encoder, head, act, cls, bce)


def electra_discriminator_backward(ddisc_loss: Any, cache: DiscriminatorCache, *,
                                   dscores: Any | None = None) -> dict[str, Any]:
    """Gradients of ``ddisc_loss * L_Disc + <dscores, scores>``."""
    ds = sigmoid_bce_backward(ddisc_loss, cache.bce)  # (B, T): (sigmoid(s) - y) / n_real on real tokens
    if dscores is not None:
        ds = ds + dscores
    da, cls = linear_backward(ds[..., None], cache.cls)  # (B, T, Hd)
    dh, head = linear_backward(activation_backward(da, cache.act), cache.head)  # (B, T, Hd)
    grads = _network_grads(text_encoder_backward(dh, cache.encoder), "disc_")
    grads.update({"disc_head_w": head["w"], "disc_head_b": head["b"], "disc_cls_w": cls["w"],
                  "disc_cls_b": cls["b"]})
    return grads


def sample_replacements(gen_logits: Any, gumbel: Any, ids: Any, masked: Any, *, temperature: float = 1.0,
                        disallow_correct: bool = False) -> tuple[Any, Any, Any]:
    """Gumbel-max sampling from softmax(logits / temperature) at masked positions; no gradient.

    ``disallow_correct`` subtracts 1000 from the original token's logit first (pretrain_helpers.py l.223-224).
    Returns ``sampled`` (B, T), ``corrupted`` (B, T) and ``labels`` (B, T) int (1 = replaced).
    """
    xp = array_namespace(gen_logits, gumbel)
    noisy = gen_logits / temperature + gumbel  # (B, T, V)
    if disallow_correct:
        noisy = noisy - DISALLOW_PENALTY * one_hot(ids, gen_logits.shape[-1], dtype=noisy.dtype)  # (B, T, V)
    sampled = xp.astype(xp.argmax(noisy, axis=-1), ids.dtype)  # (B, T)
    corrupted = xp.where(masked, sampled, ids)  # (B, T)
    labels = xp.astype(corrupted != ids, ids.dtype)  # a sample equal to the original is "original"
    return sampled, corrupted, labels


def electra_forward(ids: Any, pad: Any, masked: Any, generator_ids: Any, gumbel: Any, params: dict[str, Any], *,
                    n_heads_gen: int, n_heads_disc: int, n_layers: int = 1, temperature: float = 1.0,
                    disc_weight: float = DISC_WEIGHT, disallow_correct: bool = False,
                    gen_dropout: list | None = None, disc_dropout: list | None = None, activation: str = "gelu",
                    gen_head_activation: str | None = None, eps: float = 1e-12, padding_idx: int | None = None,
                    hf_label_cast: bool = False) -> tuple[ElectraOutputs, ElectraCache]:
    """ids, generator_ids (B, T) int; pad, masked (B, T) bool; gumbel (B, T, V) float.

    ``activation`` is the hidden activation everywhere (the exact GELU by default); ``gen_head_activation``
    overrides it in the generator's head; ``eps`` is every layer norm's epsilon."""
    _require_common(pad, params, "ids", ids)
    vocab = params["tok"].shape[0]
    require_float("gumbel", gumbel)
    require_shape("gumbel", gumbel, ["batch", "seq", "vocab"], [*ids.shape, vocab])
    require_finite("gumbel", gumbel)
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    (mlm_loss, gen_logits), generator = electra_generator_forward(
        generator_ids, pad, ids, masked, params, n_heads=n_heads_gen, n_layers=n_layers, activation=activation,
        head_activation=gen_head_activation, eps=eps, padding_idx=padding_idx, dropout=gen_dropout)
    # Sampling (static: no gradient through x̂) and the corrupted sequence with its labels.
    sampled, corrupted, labels = sample_replacements(gen_logits, gumbel, ids, masked, temperature=temperature,
                                                     disallow_correct=disallow_correct)
    (disc_loss, _), discriminator = electra_discriminator_forward(
        corrupted, pad, labels, params, n_heads=n_heads_disc, n_layers=n_layers, activation=activation, eps=eps,
        padding_idx=padding_idx, hf_label_cast=hf_label_cast, dropout=disc_dropout)
    loss = mlm_loss + disc_weight * disc_loss  # Eq. (5)
    outputs = ElectraOutputs(loss, mlm_loss, disc_loss, sampled, corrupted, labels)
    return outputs, ElectraCache(generator, discriminator, disc_weight)


def electra_backward(dloss: Any, cache: ElectraCache, *, dmlm_loss: Any = 0.0,
                     ddisc_loss: Any = 0.0) -> dict[str, Any]:
    """Gradients of ``dloss * L + dmlm_loss * L_MLM + ddisc_loss * L_Disc`` for every parameter."""
    gen = electra_generator_backward(dloss + dmlm_loss, cache.generator)  # Eq. (5): dL/dL_MLM = 1
    disc = electra_discriminator_backward(cache.disc_weight * dloss + ddisc_loss, cache.discriminator)  # lambda
    shared = {k: gen[k] + disc[k] for k in SHARED_KEYS.values()}  # the sum over both networks' uses
    return {**gen, **disc, **shared}


def init_electra(rng, *, vocab: int, n_positions: int, width: int, d_gen: int, d_disc: int, ff_gen: int,
                 ff_disc: int, xp, dtype, n_layers: int = 1) -> dict[str, Any]:
    """Shared embeddings, a generator and a discriminator (``n_layers`` encoder layers each)."""
    gen = init_text_encoder(rng, vocab, n_positions, width, d_gen, ff_gen, xp=xp, dtype=dtype, n_layers=n_layers)
    disc = init_text_encoder(rng, vocab, n_positions, width, d_disc, ff_disc, xp=xp, dtype=dtype, n_layers=n_layers)
    params = {**_network_grads(gen, "gen_"), **_network_grads(disc, "disc_")}
    params.update({name: gen[k] for k, name in SHARED_KEYS.items()})  # one copy of the shared tables (the generator's draw)
    head = init_mlm_head(rng, d_gen, width, vocab, xp=xp, dtype=dtype)
    params.update({GEN_HEAD[k]: v for k, v in head.items()})
    dense, cls = init_linear(rng, d_disc, d_disc, xp=xp, dtype=dtype), init_linear(rng, d_disc, 1, xp=xp, dtype=dtype)
    params.update({"disc_head_w": dense["w"], "disc_head_b": dense["b"], "disc_cls_w": cls["w"], "disc_cls_b": cls["b"]})
    return params


def sample_electra_masking(rng: np.random.Generator, ids: Any, pad: Any, *, mask_rate: float, mask_id: int,
                           special_ids: tuple[int, ...] = (), mask_token_prob: float = MASK_TOKEN_PROB,
                           max_predictions_per_seq: int | None = None, xp=None) -> ElectraMasking:
    """Per sequence, k = max(1, min(N, round(mask_rate * n_real))) positions among non-special real tokens
    (pretrain_helpers.py l.174-175; N = ``max_predictions_per_seq``, None: no cap), fewer when fewer are
    maskable; a row without real tokens gets none. Each shows [MASK] with probability ``mask_token_prob``."""
    if not 0.0 < mask_rate < 1.0:
        raise ValueError(f"mask_rate must lie in (0, 1), got {mask_rate}")
    if not 0.0 <= mask_token_prob <= 1.0:
        raise ValueError(f"mask_token_prob must lie in [0, 1], got {mask_token_prob}")
    if max_predictions_per_seq is not None and max_predictions_per_seq < 0:
        raise ValueError(f"max_predictions_per_seq must be >= 0 or None, got {max_predictions_per_seq}")
    xp = xp or array_namespace(ids)
    host_ids = np.asarray(to_numpy(ids))
    host_pad = np.asarray(to_numpy(pad)).astype(bool)
    if host_ids.ndim != 2 or host_pad.shape != host_ids.shape:
        raise ValueError(f"ids and pad must have shape (batch, seq), got {host_ids.shape} and {host_pad.shape}")
    cap = host_ids.shape[1] if max_predictions_per_seq is None else max_predictions_per_seq
    masked = np.zeros(host_ids.shape, dtype=bool)
    for row in range(host_ids.shape[0]):  # per sequence: a count, then positions without replacement
        if not host_pad[row].any():
            continue  # a fully padded row: nothing to mask
        candidates = np.flatnonzero(host_pad[row] & ~np.isin(host_ids[row], special_ids))
        if candidates.size == 0:
            raise ValueError(f"sequence {row} has no maskable token (all special or padding)")
        count = int(min(max(1, min(cap, np.round(host_pad[row].sum() * mask_rate))), candidates.size))
        masked[row, rng.choice(candidates, size=count, replace=False)] = True
    show_mask = masked & (rng.uniform(size=host_ids.shape) < mask_token_prob)
    generator_ids = np.where(show_mask, mask_id, host_ids)
    return ElectraMasking(from_numpy(masked, xp), from_numpy(generator_ids, xp, xp.int64))


def sample_gumbel(rng: np.random.Generator, shape: tuple[int, ...], *, xp, dtype) -> Any:
    """Standard Gumbel noise g = -log(-log u), u ~ Uniform(0, 1) (the open interval)."""
    u = rng.uniform(np.finfo(np.float64).tiny, 1.0, size=tuple(shape))
    return from_numpy(-np.log(-np.log(u)), xp, dtype)
