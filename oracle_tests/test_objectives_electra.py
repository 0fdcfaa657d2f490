"""objectives.electra and its sub-models: gradient checks, independent PyTorch versions at every edge
configuration, ELECTRA's properties (the authors' rules), the HF departures as options."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from objectives_checks import assert_joint_directional_derivative, assert_strict_matches_numpy
from torch_bert import act, mlm_head, sub, text_encoder

from gradients.check import check_mechanism
from gradients.compare import sweep_torch
from reference.backend import namespace, to_numpy
from reference.objectives.cases import electra as ex
from reference.objectives.electra import (
    DISALLOW_PENALTY,
    DISC_WEIGHT,
    MASK_TOKEN_PROB,
    electra_backward,
    sample_electra_masking,
    sample_gumbel,
    sample_replacements,
)
from reference.registry import get

NAME = "objectives.electra"
NAMES = [NAME, NAME + ".generator", NAME + ".discriminator"]
#: HF's additive mask value (finfo.min): a fully padded row attends uniformly instead of giving NaN.
MASKED = float(torch.finfo(torch.float64).min)
SHARED = {"tok": "tok", "pos": "pos", "ln_gamma": "emb_ln_gamma", "ln_beta": "emb_ln_beta"}


@pytest.mark.parametrize("name", NAMES)
def test_gradient_check_full_numpy(name: str) -> None:
    report = check_mechanism(get(name), backend="numpy", dtype="float64", mode="full")
    assert report.passed, "\n".join(f.describe() for f in report.failures)
    worst = max(r.max_rel_error for r in report.results if not r.tensor.endswith("b_k"))
    print(f"{name} [numpy, full]: worst rel error {worst:.2e} (b_k, structurally zero, excluded)")


@pytest.mark.parametrize("name", NAMES)
def test_array_api_strict(name: str) -> None:
    """Strict equals NumPy to 1e-12 and passes a joint dot-product test (the element-by-element strict check
    of every edge configuration is `python -m gradients check objectives.electra --backend array_api_strict`)."""
    same = assert_strict_matches_numpy(name)
    rel = assert_joint_directional_derivative(name)
    print(f"{name} [array_api_strict]: equals numpy to {same:.1e}; joint directional derivative rel error {rel:.1e}")


def _net(p: dict, prefix: str, untied: dict | None = None) -> dict:
    shared = {k: p[v] for k, v in SHARED.items()} if untied is None else {
        k: untied[prefix + "in_" + k] for k in SHARED}
    return {**shared, **{k: v for k, v in sub(p, prefix).items() if k.startswith(("layer", "proj"))}}


def _head_act(c) -> str:
    return c.activation if c.gen_head_activation == "same" else c.gen_head_activation


def torch_generator(p: dict, s: dict, c, untied: dict | None = None) -> dict:
    h = text_encoder(s["generator_ids"], s["pad"], _net(p, "gen_", untied), c.n_heads_gen, c.activation,
                     c.n_layers, eps=c.eps, mask_value=MASKED)
    head = {"w": p["gen_head_w"], "b": p["gen_head_b"], "ln_gamma": p["gen_head_ln_gamma"],
            "ln_beta": p["gen_head_ln_beta"], "out_bias": p["gen_out_bias"]}
    logits = mlm_head(h, head, p["tok"] if untied is None else untied["gen_out_tok"], _head_act(c), c.eps)
    return {"mlm_loss": F.cross_entropy(logits[s["masked"]], s["ids"][s["masked"]]), "logits": logits}


def torch_discriminator(p: dict, s: dict, c, untied: dict | None = None) -> dict:
    hd = text_encoder(s["corrupted"], s["pad"], _net(p, "disc_", untied), c.n_heads_disc, c.activation,
                      c.n_layers, eps=c.eps, mask_value=MASKED)
    scores = (act(hd @ p["disc_head_w"] + p["disc_head_b"], c.activation) @ p["disc_cls_w"] + p["disc_cls_b"])[..., 0]
    return {"disc_loss": F.binary_cross_entropy_with_logits(scores[s["pad"]], s["labels"][s["pad"]].double()),
            "scores": scores}


def torch_electra(p: dict, s: dict, c, untied: dict | None = None) -> dict:
    """ELECTRA from the paper's equations and the authors' sampling rule, written without the oracle."""
    gen = torch_generator(p, s, c, untied)
    with torch.no_grad():
        noisy = gen["logits"] / c.temperature + s["gumbel"]
        if c.disallow_correct:
            noisy = noisy - 1000.0 * F.one_hot(s["ids"], c.vocab)
        sampled = torch.argmax(noisy, dim=-1)
    corrupted = torch.where(s["masked"], sampled, s["ids"])
    labels = (corrupted != s["ids"]).long()
    disc = torch_discriminator(p, {**s, "corrupted": corrupted, "labels": labels}, c, untied)
    return {"loss": gen["mlm_loss"] + c.disc_weight * disc["disc_loss"], "mlm_loss": gen["mlm_loss"],
            "disc_loss": disc["disc_loss"], "corrupted": corrupted, "labels": labels}


@pytest.mark.parametrize("name, fn", [(NAMES[0], torch_electra), (NAMES[1], torch_generator),
                                      (NAMES[2], torch_discriminator)])
def test_torch_autograd_agrees_at_every_edge_configuration(name: str, fn) -> None:
    report = sweep_torch(name, lambda i, p, s, c: fn(p, s, c), seeds=(0, 1), rtol=1e-10, atol=1e-12)
    worst = max(report.results, key=lambda r: r.max_abs_error)
    print(f"{name}: torch agreement over {len(get(name).edge_configs) + 1} configurations x 2 seeds, "
          f"max abs error {worst.max_abs_error:.2e} ({worst.mechanism} {worst.tensor})")
    assert report.passed, "\n".join(f.describe() for f in report.failures)


def test_shared_embedding_gradient_is_the_sum_over_uses() -> None:
    """An untied torch model (one copy of each shared table per use) gives per-use gradients summing to the oracle's."""
    xp = namespace("numpy")
    mech = get(NAME)
    case = mech.example(0, xp.float64, xp)
    _, cache = mech.forward(case)
    grads = electra_backward(xp.asarray(1.0, dtype=xp.float64), cache)
    p = {k: torch.from_numpy(np.array(to_numpy(v))) for k, v in case.params.items()}
    s = {k: torch.from_numpy(np.array(to_numpy(v))) for k, v in case.static.items()}
    names = {"gen_out_tok": "tok", **{prefix + k: v for prefix in ("gen_in_", "disc_in_") for k, v in SHARED.items()}}
    untied = {k: p[v].clone().requires_grad_(True) for k, v in names.items()}
    loss = torch_electra(p, s, case.config, untied)["loss"]
    got = dict(zip(untied, torch.autograd.grad(loss, list(untied.values()))))
    for name in SHARED.values():
        parts = [k for k, v in names.items() if v == name]
        total = sum(got[k].numpy() for k in parts)
        err = np.max(np.abs(total - to_numpy(grads[name]))) / np.max(np.abs(total))
        assert err < 1e-10, f"{name}: sum over uses {total.ravel()[:4]} vs oracle {to_numpy(grads[name]).ravel()[:4]}"
        for k in parts:  # every use contributes: dropping one would be wrong
            assert np.max(np.abs(got[k].numpy())) > 1e-6 * np.max(np.abs(total)), f"{k} contributes nothing"


def test_losses_and_labels_follow_the_authors_rules(xp) -> None:
    """L = L_MLM + 50 L_Disc; labels follow x^c != x, so a sample equal to its original is labelled original."""
    mech = get(NAME)
    case = mech.example(0, xp.float64, xp)
    outputs, _ = mech.forward(case)
    assert DISC_WEIGHT == 50.0
    loss, mlm, disc = (float(to_numpy(outputs[k])) for k in ("loss", "mlm_loss", "disc_loss"))
    assert abs(loss - (mlm + 50.0 * disc)) <= 1e-12 * abs(loss), (loss, mlm, disc)
    ids, masked = to_numpy(case.static["ids"]), to_numpy(case.static["masked"])
    corrupted, labels = to_numpy(outputs["corrupted"]), to_numpy(outputs["labels"])
    assert np.array_equal(corrupted[~masked], ids[~masked]), "unmasked positions must keep their token"
    assert np.array_equal(labels, (corrupted != ids).astype(labels.dtype))
    assert np.any(masked & (corrupted == ids)), "the example should contain a masked position sampled as itself"
    assert np.any(labels == 1), "the example should contain a replaced token"


def test_disallow_correct_never_samples_the_original() -> None:
    """pretrain_helpers.py l.223-224: logits - 1000 onehot(x); every masked position becomes a replacement."""
    mech = get(NAME)
    case = mech.example(0, config={"disallow_correct": True, "force_original": False, "mask_rate": 0.95,
                                   "max_predictions_per_seq": 6})
    outputs, _ = mech.forward(case)
    masked = to_numpy(case.static["masked"])
    assert masked.sum() >= 6 and np.all(to_numpy(outputs["labels"])[masked] == 1)
    assert DISALLOW_PENALTY == 1000.0


def test_exact_gelu_is_the_default_and_differs_from_tanh() -> None:
    mech = get(NAME)
    assert mech.make_config().activation == "gelu"
    exact = float(to_numpy(mech.run(mech.example(0))["loss"]))
    tanh = float(to_numpy(mech.run(mech.example(0, config={"activation": "gelu_tanh"}))["loss"]))
    assert exact != tanh, "the activation option must change the loss"


def test_sampling_is_gumbel_max_of_the_generator_softmax() -> None:
    """Gumbel-max samples follow softmax(logits / temperature) (frequencies over many draws)."""
    xp = namespace("numpy")
    rng = np.random.default_rng(3)
    logits = np.array([1.0, 0.0, -1.0, 2.0])
    n = 20000
    g = to_numpy(sample_gumbel(rng, (1, n, 4), xp=xp, dtype=xp.float64))
    for temperature in (1.0, 2.0):
        sampled, _, _ = sample_replacements(xp.asarray(np.broadcast_to(logits, (1, n, 4)).copy()), xp.asarray(g),
                                            xp.asarray(np.zeros((1, n), dtype=np.int64)),
                                            xp.asarray(np.ones((1, n), dtype=bool)), temperature=temperature)
        freq = np.bincount(to_numpy(sampled).ravel(), minlength=4) / n
        p = np.exp(logits / temperature) / np.sum(np.exp(logits / temperature))
        assert np.max(np.abs(freq - p)) < 0.015, f"T={temperature}: frequencies {freq}, softmax {p}"


def test_discriminator_loss_does_not_reach_the_generator() -> None:
    xp = namespace("numpy")
    mech = get(NAME)
    _, cache = mech.forward(mech.example(0, xp.float64, xp))
    grads = electra_backward(xp.asarray(0.0), cache, ddisc_loss=xp.asarray(1.0))
    for k, v in grads.items():
        if k.startswith("gen_"):
            assert float(np.max(np.abs(to_numpy(v)))) == 0.0, f"{k} receives discriminator gradient"
    assert float(np.max(np.abs(to_numpy(grads["disc_cls_w"])))) > 0


def test_masking_follows_the_authors_count_rule_and_cap() -> None:
    """k = max(1, min(N, round(rate * n_real))) (pretrain_helpers.py l.174-175); 85% show [MASK] (l.202)."""
    xp = namespace("numpy")
    ids = np.full((400, 20), 9)
    ids[:, 0], ids[:, -1] = ex.CLS, ex.SEP
    pad = np.ones_like(ids, dtype=bool)
    pad[:, 15:] = False
    ids[:, 15:] = ex.PAD
    for cap, expect in ((None, round(15 * 0.15)), (1, 1)):
        m = sample_electra_masking(np.random.default_rng(0), xp.asarray(ids), xp.asarray(pad), mask_rate=0.15,
                                   mask_id=ex.MASK, special_ids=ex.SPECIAL, max_predictions_per_seq=cap)
        masked, gen_ids = to_numpy(m.masked), to_numpy(m.generator_ids)
        assert np.all(masked.sum(axis=1) == expect), f"cap {cap}: count must be {expect}"
    assert not np.any(masked & ~pad) and not np.any(masked[:, 0]), "never padding or special tokens"
    m = sample_electra_masking(np.random.default_rng(0), xp.asarray(ids), xp.asarray(pad), mask_rate=0.15,
                               mask_id=ex.MASK, special_ids=ex.SPECIAL)
    masked, gen_ids = to_numpy(m.masked), to_numpy(m.generator_ids)
    share = np.mean(gen_ids[masked] == ex.MASK)
    assert abs(share - MASK_TOKEN_PROB) < 0.06, f"[MASK] share {share}, expected {MASK_TOKEN_PROB}"
    assert np.all(gen_ids[~masked] == ids[~masked])
    # the authors' default cap N = int((rate + 0.005) * T) (configure_pretraining.py l.106)
    assert get(NAME).make_config({"mask_rate": 0.15, "seq_len": 128}).cap == 19


def test_padding_idx_drops_the_pad_rows_input_gradient() -> None:
    """HF's nn.Embedding padding_idx: the [PAD] row's lookup gradient is zero; its tied-output part stays."""
    mech = get(NAME + ".generator")
    case = mech.example(0)
    cot = {"mlm_loss": np.float64(1.0), "logits": np.random.default_rng(0).standard_normal((2, 6, 11))}
    plain = mech.backward(mech.forward(case)[1], cot)["tok"]
    case_hf = mech.example(0, config={"padding_idx": ex.PAD})
    dropped = mech.backward(mech.forward(case_hf)[1], cot)["tok"]
    assert np.array_equal(plain[1:], dropped[1:]), "only the [PAD] row may change"
    assert not np.allclose(plain[0], dropped[0]) and np.any(dropped[0] != 0), "the tied output part must remain"


def test_hf_label_cast_rounds_the_loss_to_float32() -> None:
    mech = get(NAME + ".discriminator")
    exact = to_numpy(mech.run(mech.example(0))["disc_loss"])
    cast = to_numpy(mech.run(mech.example(0, config={"hf_label_cast": True}))["disc_loss"])
    assert cast.dtype == np.float64 and float(cast) == float(np.float32(exact)) and float(cast) != float(exact)


@pytest.mark.parametrize("name", NAMES)
def test_intermediates_are_each_layers_hidden_states(name: str) -> None:
    mech = get(name)
    case = mech.example(0, config={"n_layers": 2})
    _, cache = mech.forward(case)
    found = mech.intermediates(cache)
    nets = {"generator": ["gen_"], "discriminator": ["disc_"]}.get(name.rsplit(".", 1)[-1], ["gen_", "disc_"])
    assert list(found) == [f"{p}{k}" for p in nets for k in ("embeddings", "layer0", "layer1")]
    widths = {"gen_": case.config.d_gen, "disc_": case.config.d_disc}
    for key, value in found.items():
        assert tuple(value.shape) == (2, 6, widths[key[:key.index("_") + 1]]), key


def test_margin_holds_at_every_temperature() -> None:
    """The builder keeps the Gumbel margin at every temperature (it redraws per position)."""
    mech = get(NAME)
    for t in (0.01, 1.0, 3.0):
        case = mech.example(0, config={"temperature": t})
        mech.margin_check(case)
