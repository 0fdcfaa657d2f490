"""ELECTRA replaced-token detection (Clark, Luong, Le, Manning, ICLR 2020; arXiv:2003.10555v1).

A small generator (a masked language model) fills masked positions with samples;
a discriminator labels every token "original" or "replaced". Both share the
token and position embeddings (and the embedding layer norm).

Data construction (no gradient; ``sample_electra_masking``, ``sample_gumbel``):
    M = a set of round(mask_rate * n_real) positions drawn among non-special real
        tokens (at least 1)                                           Sec. 2 / pretrain_helpers.mask
    x^masked_t = [MASK] with probability 0.85 for t in M, else x_t     (15% of M keep their token)

Forward (one call; the sample is taken inside, from explicit Gumbel noise). The anchors [p_G], [D],
[L_MLM], [L_Disc], [combined loss] name the displayed equations of the paper's Sec. 2 by their content:
    logits^G = MLMHead(Encoder_G(x^masked))                            (B, T, V)   [p_G]
    L_MLM = mean_{t in M} -log softmax(logits^G_t)[x_t]                 [L_MLM]
    x̂_t = argmax_v (logits^G_t[v] / temperature + g_t[v]),  t in M     sample from softmax, Gumbel-max
    x^c_t = x̂_t for t in M, x_t elsewhere                               corrupted sequence
    y_t = 1 if x^c_t != x_t else 0  (a sample equal to the original counts as original)
    s_t = w_2^T GELU(W_1 Encoder_D(x^c)_t + b_1) + b_2                  [D(x, t) = sigmoid(s_t)]
    L_Disc = mean_{t real} BCEWithLogits(s_t, y_t)                      [L_Disc]
    L = L_MLM + lambda L_Disc,  lambda = 50                             [combined loss]

Backward:
    ds_t = lambda (sigmoid(s_t) - y_t) / n_real on real positions
    dlogits^G_t = (softmax(logits^G_t) - onehot(x_t)) / |M| on masked positions
    No gradient flows through x̂ (the sample is discrete; the paper notes that the
    discriminator loss is not back-propagated through the generator's sampling).
    Shared tables (Sec. 3.2, weight sharing): d tok = d tok[generator input]
    + d tok[generator output projection, tied] + d tok[discriminator input];
    d pos and the embedding layer norm sum the two networks' contributions.

Axes: B batch, T sequence, V vocabulary, E embedding width, Hg / Hd generator /
discriminator width, Fg / Fd their feed-forward widths.

Paper symbol -> name: x -> ids, m -> masked, x^masked -> generator_ids, p_G -> softmax(gen_logits),
x̂ -> sampled, x^corrupt -> corrupted, D(x, t) -> sigmoid(disc_scores), lambda -> disc_weight,
e (shared embeddings) -> params "tok", "pos", "emb_ln_gamma", "emb_ln_beta".

Parameter names: shared "tok" (V, E), "pos" (P, E), "emb_ln_gamma/beta" (E,);
generator "gen_proj_w/b", "gen_layer0_*" (encoder layer), "gen_head_w/b", "gen_head_ln_gamma/beta",
"gen_out_bias"; discriminator "disc_proj_w/b", "disc_layer0_*", "disc_head_w/b", "disc_cls_w/b".

Deviations:
- The authors' ``pretrain_helpers.mask`` draws its positions with ``tf.random.categorical``,
  i.e. with replacement (duplicates collapse, so fewer than round(rate * n) may be masked);
  here the count is exact (without replacement). The count rule round(rate * n_real) with
  n_real counting every real token (special ones included), and the 85% [MASK] / 15% keep
  split, follow the authors' code. No random-token replacement (unlike BERT).
- The authors compute generator logits only at the gathered masked positions; here they are
  computed everywhere and the loss ignores unmasked positions (same values and gradients).
- The authors divide the summed losses by (1e-6 + count); here by the count exactly.
- One encoder layer per network in the registered example; ``n_layers`` selects more.
  BERT's tanh GELU is used (the authors' modeling.py form). Dropout masks are optional inputs.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..backend import array_namespace, from_numpy, to_numpy
from ..nn.linear import LinearCache, linear_backward, linear_forward
from ..nn.gelu import ActivationCache, activation_backward, activation_forward
from ..nn.losses import (IGNORE_INDEX, BCECache, CrossEntropyCache, cross_entropy_backward, cross_entropy_forward,
                         sigmoid_bce_backward, sigmoid_bce_forward)
from ..nn.mlm_head import MLMHeadCache, mlm_head_backward, mlm_head_forward
from ..nn.text_encoder import TextEncoderCache, text_encoder_backward, text_encoder_forward
from ..validate import require_bool, require_float, require_index_range, require_shape

#: The paper's discriminator weight (Sec. 3.1: lambda = 50).
DISC_WEIGHT = 50.0
#: Share of masked positions that show [MASK] to the generator (the authors' pretrain_helpers.mask).
MASK_TOKEN_PROB = 0.85
SHARED_KEYS = ("tok", "pos", "emb_ln_gamma", "emb_ln_beta")
GEN_HEAD_KEYS = ("w", "b", "ln_gamma", "ln_beta", "out_bias")


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


class ElectraCache(NamedTuple):
    gen_encoder: TextEncoderCache  # h^G (B, T, Hg)
    gen_head: MLMHeadCache  # logits (B, T, V)
    mlm: CrossEntropyCache
    disc_encoder: TextEncoderCache  # h^D (B, T, Hd)
    disc_head: LinearCache  # (B, T, Hd) -> (B, T, Hd)
    disc_act: ActivationCache  # (B, T, Hd)
    disc_cls: LinearCache  # (B, T, Hd) -> (B, T, 1)
    disc: BCECache  # scores (B, T)
    disc_weight: float


def network_params(params: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The shared embeddings plus one network's own encoder keys, named as text_encoder expects."""
    own = {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}
    return {"tok": params["tok"], "pos": params["pos"], "ln_gamma": params["emb_ln_gamma"],
            "ln_beta": params["emb_ln_beta"], **own}


def sample_replacements(gen_logits: Any, gumbel: Any, ids: Any, masked: Any, *,
                        temperature: float = 1.0) -> tuple[Any, Any, Any]:
    """Gumbel-max sampling from softmax(logits / temperature) at masked positions; no gradient.

    Returns ``sampled`` (B, T), ``corrupted`` (B, T) and ``labels`` (B, T) int (1 = replaced).
    """
    xp = array_namespace(gen_logits, gumbel)
    noisy = gen_logits / temperature + gumbel  # (B, T, V)
    sampled = xp.argmax(noisy, axis=-1)  # (B, T)
    sampled = xp.astype(sampled, ids.dtype)
    corrupted = xp.where(masked, sampled, ids)  # (B, T)
    labels = xp.astype(corrupted != ids, ids.dtype)  # a sample equal to the original is "original"
    return sampled, corrupted, labels


def electra_forward(ids: Any, pad: Any, masked: Any, generator_ids: Any, gumbel: Any, params: dict[str, Any], *,
                    n_heads_gen: int, n_heads_disc: int, n_layers: int = 1, temperature: float = 1.0,
                    disc_weight: float = DISC_WEIGHT, gen_dropout: list | None = None,
                    disc_dropout: list | None = None, activation: str = "gelu_tanh",
                    gen_head_activation: str | None = None, eps: float = 1e-5) -> tuple[ElectraOutputs, ElectraCache]:
    """ids, generator_ids (B, T) int; pad, masked (B, T) bool; gumbel (B, T, V) float.

    ``activation`` is the hidden activation everywhere (the authors' tanh GELU by default);
    ``gen_head_activation`` overrides it in the generator's head (HuggingFace hard-codes the exact
    GELU there); ``eps`` is every layer norm's epsilon."""
    gen_head_activation = gen_head_activation or activation
    xp = array_namespace(params["tok"])
    vocab = params["tok"].shape[0]
    require_index_range("ids", ids, vocab)
    require_index_range("generator_ids", generator_ids, vocab)
    require_bool("pad", pad)
    require_bool("masked", masked)
    for name, a in (("pad", pad), ("masked", masked), ("generator_ids", generator_ids)):
        require_shape(name, a, ["batch", "seq"], list(ids.shape))
    require_float("gumbel", gumbel)
    require_shape("gumbel", gumbel, ["batch", "seq", "vocab"], [*ids.shape, vocab])
    if bool(xp.any(masked & ~pad)):
        raise ValueError("masked must select real tokens only (masked & ~pad is nonempty)")
    if not bool(xp.any(masked)):
        raise ValueError("masked selects no position: the generator's MLM loss would be empty")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")

    # Generator: masked LM over the shared embeddings, output projection tied to tok.   [p_G], [L_MLM]
    h_gen, gen_encoder = text_encoder_forward(generator_ids, pad, network_params(params, "gen_"),
                                              n_heads=n_heads_gen, n_layers=n_layers, dropout=gen_dropout,
                                              activation=activation, eps=eps)  # (B, T, Hg)
    head = {k: params["gen_head_" + k] if k != "out_bias" else params["gen_out_bias"] for k in GEN_HEAD_KEYS}
    gen_logits, gen_head = mlm_head_forward(h_gen, head, params["tok"], activation=gen_head_activation,
                                            eps=eps)  # (B, T, V)
    targets = xp.where(masked, ids, xp.full_like(ids, IGNORE_INDEX))  # (B, T)
    mlm_loss, mlm = cross_entropy_forward(gen_logits, targets)

    # Sampling (static: no gradient through x̂) and the corrupted sequence with its labels.
    sampled, corrupted, labels = sample_replacements(gen_logits, gumbel, ids, masked, temperature=temperature)

    # Discriminator: per-token replaced / original score.                                [D], [L_Disc]
    h_disc, disc_encoder = text_encoder_forward(corrupted, pad, network_params(params, "disc_"),
                                                n_heads=n_heads_disc, n_layers=n_layers, dropout=disc_dropout,
                                                activation=activation, eps=eps)  # (B, T, Hd)
    u, disc_head = linear_forward(h_disc, params["disc_head_w"], params["disc_head_b"])  # (B, T, Hd)
    a, disc_act = activation_forward(u, activation)
    s, disc_cls = linear_forward(a, params["disc_cls_w"], params["disc_cls_b"])  # (B, T, 1)
    scores = s[..., 0]  # (B, T)
    disc_loss, disc = sigmoid_bce_forward(scores, xp.astype(labels, scores.dtype), xp.astype(pad, scores.dtype))

    loss = mlm_loss + disc_weight * disc_loss  # [combined loss]
    outputs = ElectraOutputs(loss, mlm_loss, disc_loss, sampled, corrupted, labels)
    return outputs, ElectraCache(gen_encoder, gen_head, mlm, disc_encoder, disc_head, disc_act, disc_cls, disc,
                                 disc_weight)


def electra_backward(dloss: Any, cache: ElectraCache, *, dmlm_loss: Any = 0.0,
                     ddisc_loss: Any = 0.0) -> dict[str, Any]:
    """Gradients of ``dloss * L + dmlm_loss * L_MLM + ddisc_loss * L_Disc`` for every parameter."""
    # [combined loss]: L = L_MLM + lambda L_Disc.
    d_mlm = dloss + dmlm_loss
    d_disc = cache.disc_weight * dloss + ddisc_loss

    # Discriminator, top down.
    dscores = sigmoid_bce_backward(d_disc, cache.disc)  # (B, T): lambda (sigmoid(s) - y) / n_real
    da, cls = linear_backward(dscores[..., None], cache.disc_cls)  # (B, T, Hd)
    dh_disc, head = linear_backward(activation_backward(da, cache.disc_act), cache.disc_head)  # (B, T, Hd)
    disc = text_encoder_backward(dh_disc, cache.disc_encoder)

    # Generator, top down (the sample passed no gradient).
    dlogits = cross_entropy_backward(d_mlm, cache.mlm)  # (B, T, V): (softmax - onehot) / |M|
    dh_gen, gen_head, dtok_out = mlm_head_backward(dlogits, cache.gen_head)  # (B, T, Hg), (V, E)
    gen = text_encoder_backward(dh_gen, cache.gen_encoder)

    grads = {
        # Shared embeddings: the sum over every use (generator input, tied generator output, discriminator input).
        "tok": gen["tok"] + dtok_out + disc["tok"],
        "pos": gen["pos"] + disc["pos"],
        "emb_ln_gamma": gen["ln_gamma"] + disc["ln_gamma"],
        "emb_ln_beta": gen["ln_beta"] + disc["ln_beta"],
        "disc_head_w": head["w"], "disc_head_b": head["b"], "disc_cls_w": cls["w"], "disc_cls_b": cls["b"],
        "gen_out_bias": gen_head["out_bias"],
    }
    for k in ("w", "b", "ln_gamma", "ln_beta"):
        grads["gen_head_" + k] = gen_head[k]
    for prefix, net in (("gen_", gen), ("disc_", disc)):
        grads.update({prefix + k: v for k, v in net.items() if k not in ("tok", "pos", "ln_gamma", "ln_beta")})
    return grads


def sample_electra_masking(rng: np.random.Generator, ids: Any, pad: Any, *, mask_rate: float, mask_id: int,
                           special_ids: tuple[int, ...] = (), mask_token_prob: float = MASK_TOKEN_PROB,
                           xp=None) -> ElectraMasking:
    """Choose round(mask_rate * n_real) (at least 1) positions among non-special real tokens per sequence;
    show [MASK] at each with probability ``mask_token_prob``, else keep the token."""
    if not 0.0 < mask_rate < 1.0:
        raise ValueError(f"mask_rate must lie in (0, 1), got {mask_rate}")
    if not 0.0 <= mask_token_prob <= 1.0:
        raise ValueError(f"mask_token_prob must lie in [0, 1], got {mask_token_prob}")
    xp = xp or array_namespace(ids)
    host_ids = np.asarray(to_numpy(ids))
    host_pad = np.asarray(to_numpy(pad)).astype(bool)
    if host_ids.ndim != 2 or host_pad.shape != host_ids.shape:
        raise ValueError(f"ids and pad must have shape (batch, seq), got {host_ids.shape} and {host_pad.shape}")
    masked = np.zeros(host_ids.shape, dtype=bool)
    for row in range(host_ids.shape[0]):  # per sequence: a count, then positions without replacement
        candidates = np.flatnonzero(host_pad[row] & ~np.isin(host_ids[row], special_ids))
        if candidates.size == 0:
            raise ValueError(f"sequence {row} has no maskable token (all special or padding)")
        count = int(min(max(1, np.round(host_pad[row].sum() * mask_rate)), candidates.size))
        masked[row, rng.choice(candidates, size=count, replace=False)] = True
    show_mask = masked & (rng.uniform(size=host_ids.shape) < mask_token_prob)
    generator_ids = np.where(show_mask, mask_id, host_ids)
    return ElectraMasking(from_numpy(masked, xp), from_numpy(generator_ids, xp, xp.int64))


def sample_gumbel(rng: np.random.Generator, shape: tuple[int, ...], *, xp, dtype) -> Any:
    """Standard Gumbel noise g = -log(-log u), u ~ Uniform(0, 1) (the open interval)."""
    u = rng.uniform(np.finfo(np.float64).tiny, 1.0, size=tuple(shape))
    return from_numpy(-np.log(-np.log(u)), xp, dtype)
