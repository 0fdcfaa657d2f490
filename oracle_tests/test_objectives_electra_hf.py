"""ELECTRA's two heads against HuggingFace ``ElectraForMaskedLM`` (generator) and ``ElectraForPreTraining``
(discriminator), given the same weights (optional: skipped when transformers is absent).

HF builds neither the sampling nor the lambda-weighted sum, so each network is compared alone: the
generator's MLM loss and its gradients (the tied word embedding gets its input and output parts), and
the discriminator's loss on the oracle's corrupted sequence and labels and its gradients. Settings: dropout
off, eager attention, ``hidden_act="gelu_new"`` (the tanh GELU of the authors' code), LayerNorm eps 1e-5,
zero token-type embeddings, ``pad_token_id=None`` (HF's ``padding_idx`` would zero row 0's input gradient).

Findings: (1) HF's ``ElectraForPreTraining`` casts the labels with ``.float()``, so its loss is float32-exact
only (3e-8 relative here); the float64 comparison applies HF's own rule (BCE-with-logits over positions with
``attention_mask == 1``) to HF's float64 logits. (2) HF's ``ElectraGeneratorPredictions`` hard-codes ``get_activation("gelu")`` (exact erf GELU)
whatever ``hidden_act`` says, while the authors' TF head uses the configured activation; the oracle
therefore runs with ``gen_head_activation="gelu"`` here.
"""

from __future__ import annotations

import numpy as np
import pytest

from reference.backend import namespace, to_numpy
from reference.objectives import electra_example as ex
from reference.objectives.electra import electra_backward, electra_forward
from reference.registry import get

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

LAYER = {"w_q": "attention.self.query", "w_k": "attention.self.key", "w_v": "attention.self.value",
         "w_o": "attention.output.dense", "w_1": "intermediate.dense", "w_2": "output.dense"}
NORMS = {"ln1": "attention.output.LayerNorm", "ln2": "output.LayerNorm"}


def _mapping(prefix: str) -> dict[str, tuple[str, bool]]:
    """oracle name -> (HF parameter name, transpose)."""
    m = {"tok": ("electra.embeddings.word_embeddings.weight", False),
         "pos": ("electra.embeddings.position_embeddings.weight", False),
         "emb_ln_gamma": ("electra.embeddings.LayerNorm.weight", False),
         "emb_ln_beta": ("electra.embeddings.LayerNorm.bias", False)}
    for ours, theirs in LAYER.items():
        m[f"{prefix}layer0_{ours}"] = (f"electra.encoder.layer.0.{theirs}.weight", True)
        m[f"{prefix}layer0_b_{ours[2:]}"] = (f"electra.encoder.layer.0.{theirs}.bias", False)
    for ours, theirs in NORMS.items():
        m[f"{prefix}layer0_{ours}_gamma"] = (f"electra.encoder.layer.0.{theirs}.weight", False)
        m[f"{prefix}layer0_{ours}_beta"] = (f"electra.encoder.layer.0.{theirs}.bias", False)
    return m


def _config(hidden: int, heads: int, ff: int):
    return transformers.ElectraConfig(vocab_size=ex.V, embedding_size=ex.E, hidden_size=hidden, num_hidden_layers=1,
                                      num_attention_heads=heads, intermediate_size=ff, hidden_act="gelu_new",
                                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                      max_position_embeddings=ex.T + 1, type_vocab_size=1, layer_norm_eps=1e-5,
                                      pad_token_id=None, attn_implementation="eager")


def _load(model, params: dict, mapping: dict) -> dict:
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for ours, (theirs, transpose) in mapping.items():
        value = torch.from_numpy(np.array(to_numpy(params[ours])))
        state[theirs] = value.T.contiguous() if transpose else value
    if "generator_lm_head.weight" in state:  # tied to the word embeddings: a stale copy would overwrite them
        state["generator_lm_head.weight"] = state["electra.embeddings.word_embeddings.weight"]
    state["electra.embeddings.token_type_embeddings.weight"] = torch.zeros_like(
        state["electra.embeddings.token_type_embeddings.weight"])
    model.load_state_dict(state)
    return dict(model.named_parameters())


def _compare(name: str, ours: dict, theirs_params: dict, mapping: dict) -> float:
    worst = 0.0
    for key, (theirs, transpose) in mapping.items():
        g = theirs_params[theirs].grad
        g = np.zeros(tuple(theirs_params[theirs].shape)) if g is None else g.numpy()
        g = g.T if transpose else g
        o = to_numpy(ours[key])
        err = float(np.max(np.abs(g - o))) / max(1.0, float(np.max(np.abs(o))))
        assert err < 1e-10, f"{name}: gradient of {key} ({theirs}): HF {g.ravel()[:3]}, oracle {o.ravel()[:3]}"
        worst = max(worst, err)
    return worst


def test_generator_and_discriminator_match_huggingface() -> None:
    xp = namespace("numpy")
    case = get("objectives.electra").example(0, xp.float64, xp)
    p, s = case.params, case.static
    out, cache = electra_forward(s["ids"], s["pad"], s["masked"], s["generator_ids"], s["gumbel"], p,
                                 n_heads_gen=ex.HEADS_GEN, n_heads_disc=ex.HEADS_DISC, gen_head_activation="gelu")
    one, zero = xp.asarray(1.0, dtype=xp.float64), xp.asarray(0.0, dtype=xp.float64)
    gen_grads = electra_backward(zero, cache, dmlm_loss=one)
    disc_grads = electra_backward(zero, cache, ddisc_loss=one)
    ids = torch.from_numpy(to_numpy(s["ids"]))
    pad = torch.from_numpy(to_numpy(s["pad"])).long()
    masked = torch.from_numpy(to_numpy(s["masked"]))

    # Generator: ElectraForMaskedLM on x^masked, labels at masked positions.
    torch.manual_seed(0)
    gen = transformers.ElectraForMaskedLM(_config(ex.HG, ex.HEADS_GEN, ex.FG)).double().eval()
    gen_map = {**_mapping("gen_"), "gen_proj_w": ("electra.embeddings_project.weight", True),
               "gen_proj_b": ("electra.embeddings_project.bias", False),
               "gen_head_w": ("generator_predictions.dense.weight", True),
               "gen_head_b": ("generator_predictions.dense.bias", False),
               "gen_head_ln_gamma": ("generator_predictions.LayerNorm.weight", False),
               "gen_head_ln_beta": ("generator_predictions.LayerNorm.bias", False),
               "gen_out_bias": ("generator_lm_head.bias", False)}
    named = _load(gen, p, gen_map)
    assert gen.generator_lm_head.weight.data_ptr() == gen.electra.embeddings.word_embeddings.weight.data_ptr(), \
        "HF's generator output projection should be tied to the word embeddings"
    labels = torch.where(masked, ids, torch.full_like(ids, -100))
    result = gen(input_ids=torch.from_numpy(to_numpy(s["generator_ids"])), attention_mask=pad, labels=labels)
    assert abs(result.loss.item() - float(out.mlm_loss)) <= 1e-12 * abs(float(out.mlm_loss)), \
        f"MLM loss: HF {result.loss.item()!r}, oracle {float(out.mlm_loss)!r}"
    result.loss.backward()
    worst_gen = _compare("generator", gen_grads, named, gen_map)

    # Discriminator: ElectraForPreTraining on the oracle's corrupted sequence and labels.
    disc = transformers.ElectraForPreTraining(_config(ex.HD, ex.HEADS_DISC, ex.FD)).double().eval()
    disc_map = {**_mapping("disc_"), "disc_head_w": ("discriminator_predictions.dense.weight", True),
                "disc_head_b": ("discriminator_predictions.dense.bias", False),
                "disc_cls_w": ("discriminator_predictions.dense_prediction.weight", True),
                "disc_cls_b": ("discriminator_predictions.dense_prediction.bias", False)}
    named = _load(disc, p, disc_map)
    corrupted, labels = torch.from_numpy(to_numpy(out.corrupted)), torch.from_numpy(to_numpy(out.labels))
    hf_loss = disc(input_ids=corrupted, attention_mask=pad, labels=labels).loss
    # HF casts the labels with .float() (float32), so its own loss is only float32-exact (finding).
    assert abs(hf_loss.item() - float(out.disc_loss)) <= 1e-6 * abs(float(out.disc_loss)), \
        f"discriminator loss: HF {hf_loss.item()!r}, oracle {float(out.disc_loss)!r}"
    logits = disc(input_ids=corrupted, attention_mask=pad).logits  # (B, T) float64
    active = pad == 1  # HF's rule: positions with attention_mask == 1, labels in float64 here
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits[active], labels[active].double())
    assert abs(loss.item() - float(out.disc_loss)) <= 1e-12 * abs(float(out.disc_loss)), \
        f"discriminator loss on HF logits: {loss.item()!r}, oracle {float(out.disc_loss)!r}"
    loss.backward()
    worst_disc = _compare("discriminator", disc_grads, named, disc_map)
    print(f"HF ELECTRA: generator grads within {worst_gen:.1e}, discriminator grads within {worst_disc:.1e}")
