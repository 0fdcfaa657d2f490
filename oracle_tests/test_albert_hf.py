"""ALBERT against HuggingFace ``AlbertForPreTraining`` (optional: skipped when transformers is absent).

HF implements sharing by groups: ``num_hidden_groups = 1`` is the oracle's "all", ``num_hidden_groups = L``
its "none" (HF has no attention-only or FFN-only modes). Compared: every hidden state, the MLM and SOP
logits, the total loss, and the gradient of every parameter (the tied word embedding included), with
dropout off, "gelu_new" (the tanh GELU) and LayerNorm eps 1e-12.

Finding: HF builds the word embedding with ``padding_idx=pad_token_id`` (0 by default), so token id 0
gets no input-side gradient there (measured: only row 0 of dE_word differed, by 1.4e-2, with token 0 in
the batch). The official TF code has no such exception, nor does the oracle; the comparison sets
``pad_token_id=None``.
"""

from __future__ import annotations

import numpy as np
import pytest

from reference.architecture.albert import (
    AlbertConfig,
    albert_backward,
    albert_encoder_backward,
    albert_encoder_forward,
    albert_forward,
)
from reference.architecture.albert_params import init_albert, sample_albert_batch
from reference.architecture.cases.albert import AlbertCaseConfig
from reference.backend import namespace, to_numpy
from reference.random import generator

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

BLOCK = {"w_q": "attention.query", "w_k": "attention.key", "w_v": "attention.value", "w_o": "attention.dense",
         "w_1": "ffn", "w_2": "ffn_output"}
NORMS = {"ln1": "attention.LayerNorm", "ln2": "full_layer_layer_norm"}
EXAMPLE = AlbertCaseConfig()
LAYERS, HEADS = EXAMPLE.n_layers, EXAMPLE.n_heads


def example_size(sharing):
    return EXAMPLE.replace(sharing=sharing).size()


def sample_batch(rng, *, xp):
    return sample_albert_batch(rng, EXAMPLE.batch, EXAMPLE.seq_len, EXAMPLE.vocab, xp=xp)


TOP = {"proj": "albert.encoder.embedding_hidden_mapping_in", "pool": "albert.pooler",
       "sop": "sop_classifier.classifier", "mlm": "predictions.dense"}


def hf_names(sharing: str, n_layers: int = LAYERS) -> dict[str, tuple[str, bool]]:
    """oracle key -> (HF parameter name, transposed)."""
    names = {"tok": ("albert.embeddings.word_embeddings.weight", False),
             "pos": ("albert.embeddings.position_embeddings.weight", False),
             "seg": ("albert.embeddings.token_type_embeddings.weight", False),
             "ln_gamma": ("albert.embeddings.LayerNorm.weight", False),
             "ln_beta": ("albert.embeddings.LayerNorm.bias", False),
             "mlm_ln_gamma": ("predictions.LayerNorm.weight", False), "mlm_ln_beta": ("predictions.LayerNorm.bias", False),
             "mlm_out_bias": ("predictions.bias", False)}
    for ours, theirs in TOP.items():
        names[f"{ours}_w"], names[f"{ours}_b"] = (f"{theirs}.weight", True), (f"{theirs}.bias", False)
    groups = [("block_", 0)] if sharing == "all" else [(f"layer{g}_", g) for g in range(n_layers)]
    for prefix, g in groups:
        base = f"albert.encoder.albert_layer_groups.{g}.albert_layers.0."
        for ours, theirs in BLOCK.items():
            names[prefix + ours] = (base + theirs + ".weight", True)
            names[prefix + "b_" + ours[2:]] = (base + theirs + ".bias", False)
        for ours, theirs in NORMS.items():
            names[prefix + ours + "_gamma"] = (base + theirs + ".weight", False)
            names[prefix + ours + "_beta"] = (base + theirs + ".bias", False)
    return names


@pytest.mark.parametrize("sharing", ["all", "none"])
def test_huggingface_albert_agrees(sharing):
    xp = namespace("numpy")
    size = example_size(sharing)
    rng = generator(11)
    params = init_albert(rng, size, xp=xp, dtype=xp.float64)
    s = sample_batch(rng, xp=xp)
    out, cache = albert_forward(s["ids"], s["segments"], s["pad"], params, AlbertConfig(LAYERS, HEADS, sharing),
                                mlm_targets=s["mlm_targets"], sop_labels=s["sop_labels"])
    grads = albert_backward(xp.asarray(1.0), cache)

    config = transformers.AlbertConfig(
        vocab_size=size.vocab, embedding_size=size.embedding, hidden_size=size.hidden, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, intermediate_size=size.d_ff, hidden_act="gelu_new", hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, classifier_dropout_prob=0.0, max_position_embeddings=size.positions,
        type_vocab_size=2, layer_norm_eps=1e-12, num_hidden_groups=1 if sharing == "all" else LAYERS,
        inner_group_num=1, attn_implementation="eager", pad_token_id=None)
    model = transformers.AlbertForPreTraining(config).double().eval()
    names = hf_names(sharing)
    hf_params = dict(model.named_parameters())
    assert set(n for n, _ in names.values()) == set(hf_params), "parameter maps differ"
    with torch.no_grad():
        for key, (name, transposed) in names.items():
            value = torch.from_numpy(np.array(to_numpy(params[key])))
            hf_params[name].copy_(value.T if transposed else value)
    t = lambda a: torch.from_numpy(np.array(to_numpy(a))).long()  # noqa: E731
    result = model(input_ids=t(s["ids"]), attention_mask=t(s["pad"]), token_type_ids=t(s["segments"]),
                   labels=t(s["mlm_targets"]), sentence_order_label=t(s["sop_labels"]), output_hidden_states=True)
    result.loss.backward()

    def close(name, theirs, ours):
        theirs, ours = np.asarray(theirs), np.asarray(to_numpy(ours))
        err = np.abs(theirs - ours).max()
        assert err <= 1e-10 * max(1.0, np.abs(ours).max()), f"{name}: HF vs oracle max abs diff {err:.3g}"

    for layer, (theirs, ours) in enumerate(zip(result.hidden_states, out.hidden_states)):
        close(f"hidden state {layer}", theirs.detach().numpy(), ours)
    close("MLM logits", result.prediction_logits.detach().numpy(), out.mlm_logits)
    close("SOP logits", result.sop_logits.detach().numpy(), out.sop_logits)
    close("loss", result.loss.detach().numpy(), out.loss)
    for key, (name, transposed) in names.items():
        g = hf_params[name].grad.numpy()
        close(f"d{key}", g.T if transposed else g, grads[key])


@pytest.mark.parametrize("sharing", ["all", "none"])
def test_huggingface_albert_model_agrees_with_the_encoder_at_other_sizes(sharing):
    """Issue 14.3: ``AlbertModel`` (no pretraining heads) against ``architecture.albert.encoder`` without dummy
    head parameters, at non-default sizes (E = 5, Hd = 12, 4 heads, 3 layers, T = 9, the last 3 tokens padded)."""
    xp = namespace("numpy")
    c = AlbertCaseConfig(batch=3, seq_len=9, vocab=17, positions=16, embedding=5, hidden=12, n_heads=4, d_ff=10,
                         n_layers=3, sharing=sharing, padded=3)
    rng = generator(5)
    params = init_albert(rng, c.size(), xp=xp, dtype=xp.float64, heads=False)
    s = sample_albert_batch(rng, c.batch, c.seq_len, c.vocab, xp=xp, padded=c.padded)
    out, cache = albert_encoder_forward(s["ids"], s["segments"], s["pad"], params, c.model())
    dh = xp.asarray(np.random.default_rng(0).standard_normal(tuple(out.h.shape)))
    dp = xp.asarray(np.random.default_rng(1).standard_normal(tuple(out.pooled.shape)))
    grads = albert_encoder_backward(dh, cache, dpooled=dp)

    config = transformers.AlbertConfig(
        vocab_size=c.vocab, embedding_size=c.embedding, hidden_size=c.hidden, num_hidden_layers=c.n_layers,
        num_attention_heads=c.n_heads, intermediate_size=c.d_ff, hidden_act="gelu_new", hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, max_position_embeddings=c.positions, type_vocab_size=2,
        layer_norm_eps=1e-12, num_hidden_groups=1 if sharing == "all" else c.n_layers, inner_group_num=1,
        attn_implementation="eager", pad_token_id=None)
    model = transformers.AlbertModel(config).double().eval()
    names = {k: (n[len("albert."):], tr) for k, (n, tr) in hf_names(sharing, c.n_layers).items()
             if n.startswith("albert.")}
    hf_params = dict(model.named_parameters())
    assert set(n for n, _ in names.values()) == set(hf_params) and set(names) == set(params), "parameter maps differ"
    with torch.no_grad():
        for key, (name, transposed) in names.items():
            value = torch.from_numpy(np.array(to_numpy(params[key])))
            hf_params[name].copy_(value.T if transposed else value)
    t = lambda a: torch.from_numpy(np.array(to_numpy(a))).long()  # noqa: E731
    result = model(input_ids=t(s["ids"]), attention_mask=t(s["pad"]), token_type_ids=t(s["segments"]),
                   output_hidden_states=True)
    loss = (result.last_hidden_state * torch.from_numpy(to_numpy(dh))).sum() \
        + (result.pooler_output * torch.from_numpy(to_numpy(dp))).sum()
    loss.backward()
    for layer, (theirs, ours) in enumerate(zip(result.hidden_states, out.hidden_states)):
        err = np.abs(theirs.detach().numpy() - to_numpy(ours)).max()
        assert err <= 1e-10, f"hidden state {layer}: HF vs oracle max abs diff {err:.3g}"
    err = np.abs(result.pooler_output.detach().numpy() - to_numpy(out.pooled)).max()
    assert err <= 1e-10, f"pooled: {err:.3g}"
    for key, (name, transposed) in names.items():
        g = hf_params[name].grad.numpy()
        g = g.T if transposed else g
        err = np.abs(g - to_numpy(grads[key])).max()
        assert err <= 1e-10 * max(1.0, np.abs(g).max()), f"d{key}: HF vs oracle max abs diff {err:.3g}"
