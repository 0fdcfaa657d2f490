"""The ELECTRA sub-models against HuggingFace ``ElectraForMaskedLM`` (``objectives.electra.generator``) and
``ElectraForPreTraining`` (``objectives.electra.discriminator``) with the same weights, float64, at non-default
sizes (optional: skipped when transformers is absent).

HF's documented departures are the oracle's named options, applied to the oracle side (transformers 4.57.6,
``models/electra/modeling_electra.py``): ``padding_idx`` (l.137, HF's ``pad_token_id=0`` drops [PAD]'s
input-embedding gradient), ``gen_head_activation="gelu"`` (l.625, the generator head's exact GELU whatever
``hidden_act`` says) and ``hf_label_cast`` (l.1102, ``labels.float()`` makes the loss a float32 value).
With them, outputs and every parameter gradient agree to 1e-10; without ``padding_idx`` the [PAD] row differs.
Settings: dropout off, eager attention, zero token-type embeddings.
"""

from __future__ import annotations

import numpy as np
import pytest

from reference.backend import to_numpy
from reference.registry import get

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

LAYER = {"w_q": "attention.self.query", "w_k": "attention.self.key", "w_v": "attention.self.value",
         "w_o": "attention.output.dense", "w_1": "intermediate.dense", "w_2": "output.dense"}
NORMS = {"ln1": "attention.output.LayerNorm", "ln2": "output.LayerNorm"}
HF_ACT = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}
#: Non-default sizes: two layers, E < H in both networks, several heads.
SIZES = {"batch": 3, "seq_len": 9, "vocab": 13, "width": 4, "d_gen": 6, "n_heads_gen": 2, "ff_gen": 7,
         "d_disc": 10, "n_heads_disc": 5, "ff_disc": 11, "n_layers": 2, "n_padded": 3, "padding_idx": 0}


def _mapping(prefix: str, n_layers: int, project: bool) -> dict[str, tuple[str, bool]]:
    """oracle name -> (HF parameter name, transpose)."""
    m = {"tok": ("electra.embeddings.word_embeddings.weight", False),
         "pos": ("electra.embeddings.position_embeddings.weight", False),
         "emb_ln_gamma": ("electra.embeddings.LayerNorm.weight", False),
         "emb_ln_beta": ("electra.embeddings.LayerNorm.bias", False)}
    if project:
        m[prefix + "proj_w"] = ("electra.embeddings_project.weight", True)
        m[prefix + "proj_b"] = ("electra.embeddings_project.bias", False)
    for layer in range(n_layers):
        base = f"electra.encoder.layer.{layer}."
        for ours, theirs in LAYER.items():
            m[f"{prefix}layer{layer}_{ours}"] = (base + theirs + ".weight", True)
            m[f"{prefix}layer{layer}_b_{ours[2:]}"] = (base + theirs + ".bias", False)
        for ours, theirs in NORMS.items():
            m[f"{prefix}layer{layer}_{ours}_gamma"] = (base + theirs + ".weight", False)
            m[f"{prefix}layer{layer}_{ours}_beta"] = (base + theirs + ".bias", False)
    return m


def _model(cls, c, hidden: int, heads: int, ff: int):
    config = transformers.ElectraConfig(
        vocab_size=c.vocab, embedding_size=c.width, hidden_size=hidden, num_hidden_layers=c.n_layers,
        num_attention_heads=heads, intermediate_size=ff, hidden_act=HF_ACT[c.activation], hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, max_position_embeddings=c.seq_len + 2, type_vocab_size=1,
        layer_norm_eps=c.eps, pad_token_id=0, attn_implementation="eager")
    torch.manual_seed(0)
    return cls(config).double().eval()


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


def _compare(name: str, ours: dict, theirs_params: dict, mapping: dict, skip: tuple[str, ...] = ()) -> float:
    worst = 0.0
    for key, (theirs, transpose) in mapping.items():
        if key in skip:
            continue
        g = theirs_params[theirs].grad
        g = np.zeros(tuple(theirs_params[theirs].shape)) if g is None else g.numpy()
        g = g.T if transpose else g
        o = to_numpy(ours[key])
        err = float(np.max(np.abs(g - o))) / max(1.0, float(np.max(np.abs(o))))
        assert err < 1e-10, f"{name}: gradient of {key} ({theirs}): HF {g.ravel()[:3]}, oracle {o.ravel()[:3]}"
        worst = max(worst, err)
    return worst


def _run(name: str, config: dict):
    mech = get(name)
    case = mech.example(0, config=config)
    outputs, cache = mech.forward(case)
    cot = {k: np.random.default_rng(1).standard_normal(np.shape(v)) if np.ndim(v) else np.float64(1.0)
           for k, v in outputs.items()}
    return case, outputs, cot, mech.backward(cache, cot)


@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh"])
def test_generator_matches_electra_for_masked_lm(activation: str) -> None:
    """Loss, logits and every gradient (a random cotangent on the logits, padded positions included)."""
    config = {**SIZES, "activation": activation, "gen_head_activation": "gelu"}
    case, out, cot, grads = _run("objectives.electra.generator", config)
    c, s = case.config, case.static
    model = _model(transformers.ElectraForMaskedLM, c, c.d_gen, c.n_heads_gen, c.ff_gen)
    mapping = {**_mapping("gen_", c.n_layers, c.width != c.d_gen),
               "gen_head_w": ("generator_predictions.dense.weight", True),
               "gen_head_b": ("generator_predictions.dense.bias", False),
               "gen_head_ln_gamma": ("generator_predictions.LayerNorm.weight", False),
               "gen_head_ln_beta": ("generator_predictions.LayerNorm.bias", False),
               "gen_out_bias": ("generator_lm_head.bias", False)}
    named = _load(model, case.params, mapping)
    ids, masked = (torch.from_numpy(to_numpy(s[k])) for k in ("ids", "masked"))
    result = model(input_ids=torch.from_numpy(to_numpy(s["generator_ids"])),
                   attention_mask=torch.from_numpy(to_numpy(s["pad"])).long(),
                   labels=torch.where(masked, ids, torch.full_like(ids, -100)))
    assert abs(result.loss.item() - float(out["mlm_loss"])) <= 1e-12 * abs(float(out["mlm_loss"]))
    assert np.max(np.abs(result.logits.detach().numpy() - to_numpy(out["logits"]))) < 1e-10
    (result.loss + (result.logits * torch.from_numpy(cot["logits"])).sum()).backward()
    worst = _compare("generator", grads, named, mapping)
    print(f"HF ElectraForMaskedLM ({activation}, 2 layers): gradients within {worst:.1e}")


def test_discriminator_matches_electra_for_pretraining_with_the_label_cast() -> None:
    config = {**SIZES, "hf_label_cast": True}
    case, out, cot, grads = _run("objectives.electra.discriminator", config)
    c, s = case.config, case.static
    model = _model(transformers.ElectraForPreTraining, c, c.d_disc, c.n_heads_disc, c.ff_disc)
    mapping = {**_mapping("disc_", c.n_layers, c.width != c.d_disc),
               "disc_head_w": ("discriminator_predictions.dense.weight", True),
               "disc_head_b": ("discriminator_predictions.dense.bias", False),
               "disc_cls_w": ("discriminator_predictions.dense_prediction.weight", True),
               "disc_cls_b": ("discriminator_predictions.dense_prediction.bias", False)}
    named = _load(model, case.params, mapping)
    result = model(input_ids=torch.from_numpy(to_numpy(s["corrupted"])),
                   attention_mask=torch.from_numpy(to_numpy(s["pad"])).long(),
                   labels=torch.from_numpy(to_numpy(s["labels"])))
    assert result.loss.dtype == torch.float32, "HF's loss is float32 (labels.float())"
    assert result.loss.item() == float(out["disc_loss"]), (result.loss.item(), float(out["disc_loss"]))
    assert np.max(np.abs(result.logits.detach().numpy() - to_numpy(out["scores"]))) < 1e-10
    (result.loss + (result.logits * torch.from_numpy(cot["scores"])).sum()).backward()
    worst = _compare("discriminator", grads, named, mapping)
    print(f"HF ElectraForPreTraining (2 layers, label cast): gradients within {worst:.1e}")


def test_without_padding_idx_only_the_pad_row_differs() -> None:
    """The departure is real: without the option the oracle's [PAD] row keeps the lookup gradient HF drops."""
    config = {**SIZES, "gen_head_activation": "gelu"}
    _, _, _, with_option = _run("objectives.electra.generator", config)
    _, _, _, without = _run("objectives.electra.generator", {**config, "padding_idx": -1})
    diff = np.abs(to_numpy(with_option["tok"]) - to_numpy(without["tok"]))
    assert np.all(diff[1:] == 0) and np.max(diff[0]) > 1e-6
