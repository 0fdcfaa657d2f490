"""objectives.electra: gradient checks, an independent PyTorch version, ELECTRA's properties, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gradients.check import check_mechanism
from gradients.compare import compare_torch
from objectives_checks import assert_joint_directional_derivative, assert_strict_matches_numpy
from reference.backend import namespace, to_numpy
from reference.objectives import electra_example as ex
from reference.objectives.electra import (DISC_WEIGHT, MASK_TOKEN_PROB, electra_backward, electra_forward,
                                          sample_electra_masking, sample_gumbel, sample_replacements)
from reference.registry import get
from torch_bert import mlm_head, sub, text_encoder

NAME = "objectives.electra"
SHARED = ("tok", "pos", "ln_gamma", "ln_beta")


def test_gradient_check_full_numpy() -> None:
    report = check_mechanism(get(NAME), backend="numpy", dtype="float64", mode="full")
    assert report.passed, "\n".join(f.describe() for f in report.failures)
    worst = max(r.max_rel_error for r in report.results if r.tensor not in ("gen_layer0_b_k", "disc_layer0_b_k"))
    print(f"{NAME} [numpy, full]: worst rel error {worst:.2e} (b_k, structurally zero, excluded)")


def test_array_api_strict() -> None:
    """Strict equals NumPy to 1e-12 and passes a joint dot-product test. The element-by-element strict
    check (about a minute here) is `python -m gradients check objectives.electra --backend array_api_strict`."""
    same = assert_strict_matches_numpy(NAME)
    rel = assert_joint_directional_derivative(NAME)
    print(f"{NAME} [array_api_strict]: equals numpy to {same:.1e}; joint directional derivative rel error {rel:.1e}")




def _gen_params(p: dict, untied: dict | None = None) -> tuple[dict, dict]:
    """The generator's and discriminator's parameters; ``untied`` replaces shared tables per network."""
    nets = []
    for prefix in ("gen_", "disc_"):
        shared = {"tok": p["tok"], "pos": p["pos"], "ln_gamma": p["emb_ln_gamma"], "ln_beta": p["emb_ln_beta"]}
        if untied is not None:
            shared = {k: untied[prefix + "in_" + k] for k in SHARED}
        nets.append({**shared, **{k: v for k, v in sub(p, prefix).items() if k.startswith(("layer", "proj"))}})
    return nets[0], nets[1]


def torch_electra(p: dict, s: dict, untied: dict | None = None) -> dict:
    """ELECTRA from the paper's equations; ``untied`` gives every use of a shared table its own copy."""
    ids, pad, masked = s["ids"], s["pad"], s["masked"]
    gen, disc = _gen_params(p, untied)
    h = text_encoder(s["generator_ids"], pad, gen, ex.HEADS_GEN, "gelu_tanh")
    head = {"w": p["gen_head_w"], "b": p["gen_head_b"], "ln_gamma": p["gen_head_ln_gamma"],
            "ln_beta": p["gen_head_ln_beta"], "out_bias": p["gen_out_bias"]}
    out_table = p["tok"] if untied is None else untied["gen_out_tok"]
    logits = mlm_head(h, head, out_table, "gelu_tanh")  # (B, T, V)
    mlm_loss = F.cross_entropy(logits[masked], ids[masked])  # mean over masked positions
    with torch.no_grad():
        sampled = torch.argmax(logits / s["temperature"] + s["gumbel"], dim=-1)
    corrupted = torch.where(masked, sampled, ids)
    labels = (corrupted != ids).long()
    hd = text_encoder(corrupted, pad, disc, ex.HEADS_DISC, "gelu_tanh")
    scores = (F.gelu(hd @ p["disc_head_w"] + p["disc_head_b"], approximate="tanh") @ p["disc_cls_w"]
              + p["disc_cls_b"])[..., 0]
    disc_loss = F.binary_cross_entropy_with_logits(scores[pad], labels[pad].double())  # mean over real tokens
    return {"loss": mlm_loss + 50.0 * disc_loss, "mlm_loss": mlm_loss, "disc_loss": disc_loss,
            "corrupted": corrupted, "labels": labels}


def test_torch_autograd_agrees() -> None:
    report = compare_torch(NAME, lambda i, p, s: torch_electra(p, s), rtol=1e-10, atol=1e-12)
    worst = max(report.results, key=lambda r: r.max_abs_error)
    print(f"{NAME}: torch agreement, max abs error {worst.max_abs_error:.2e} ({worst.tensor})")
    assert report.passed, "\n".join(f.describe() for f in report.failures)


def test_shared_embedding_gradient_is_the_sum_over_uses() -> None:
    """An untied torch model (one copy of tok per use) gives per-use gradients whose sum is the oracle's."""
    xp = namespace("numpy")
    mech = get(NAME)
    case = mech.example(0, xp.float64, xp)
    outputs, cache = mech.forward(case)
    grads = electra_backward(xp.asarray(1.0, dtype=xp.float64), cache)
    p = {k: torch.from_numpy(np.array(to_numpy(v))) for k, v in case.params.items()}
    s = {k: torch.from_numpy(np.array(to_numpy(v))) if hasattr(v, "shape") else v for k, v in case.static.items()}
    names = {"gen_in_tok": "tok", "gen_out_tok": "tok", "disc_in_tok": "tok"}
    for prefix in ("gen_in_", "disc_in_"):
        names.update({prefix + k: {"tok": "tok", "pos": "pos", "ln_gamma": "emb_ln_gamma",
                                   "ln_beta": "emb_ln_beta"}[k] for k in SHARED})
    untied = {k: p[v].clone().requires_grad_(True) for k, v in names.items()}
    loss = torch_electra(p, s, untied)["loss"]
    got = dict(zip(untied, torch.autograd.grad(loss, list(untied.values()))))
    uses = {"tok": ["gen_in_tok", "gen_out_tok", "disc_in_tok"], "pos": ["gen_in_pos", "disc_in_pos"],
            "emb_ln_gamma": ["gen_in_ln_gamma", "disc_in_ln_gamma"],
            "emb_ln_beta": ["gen_in_ln_beta", "disc_in_ln_beta"]}
    for name, parts in uses.items():
        total = sum(got[k].numpy() for k in parts)
        err = np.max(np.abs(total - to_numpy(grads[name]))) / np.max(np.abs(total))
        assert err < 1e-10, f"{name}: sum over uses {total.ravel()[:4]} vs oracle {to_numpy(grads[name]).ravel()[:4]}"
        for k in parts:  # every use contributes: dropping one would be wrong
            assert np.max(np.abs(got[k].numpy())) > 1e-6 * np.max(np.abs(total)), f"{k} contributes nothing"


def test_losses_match_hand_computation(xp) -> None:
    """L = L_MLM + 50 L_Disc; L_Disc is the mean BCE over real tokens; labels follow x^c != x."""
    mech = get(NAME)
    case = mech.example(0, xp.float64, xp)
    outputs, cache = mech.forward(case)
    assert DISC_WEIGHT == 50.0
    loss, mlm, disc = (float(to_numpy(outputs[k])) for k in ("loss", "mlm_loss", "disc_loss"))
    assert abs(loss - (mlm + 50.0 * disc)) <= 1e-12 * abs(loss), (loss, mlm, disc)
    ids, masked = to_numpy(case.static["ids"]), to_numpy(case.static["masked"])
    corrupted, labels = to_numpy(outputs["corrupted"]), to_numpy(outputs["labels"])
    assert np.array_equal(corrupted[~masked], ids[~masked]), "unmasked positions must keep their token"
    assert np.array_equal(labels, (corrupted != ids).astype(labels.dtype))
    # the example forces one sample to equal its original: it is labelled original, although masked
    assert np.any(masked & (corrupted == ids)), "the example should contain a masked position sampled as itself"
    assert np.all(labels[masked & (corrupted == ids)] == 0)
    assert np.any(labels == 1), "the example should contain a replaced token"


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
    """Only L_MLM moves generator-only parameters (no gradient through the sample)."""
    xp = namespace("numpy")
    mech = get(NAME)
    case = mech.example(0, xp.float64, xp)
    _, cache = mech.forward(case)
    one, zero = xp.asarray(1.0, dtype=xp.float64), xp.asarray(0.0, dtype=xp.float64)
    grads = electra_backward(zero, cache, ddisc_loss=one)
    for k, v in grads.items():
        if k.startswith("gen_"):
            assert float(np.max(np.abs(to_numpy(v)))) == 0.0, f"{k} receives discriminator gradient"
    assert float(np.max(np.abs(to_numpy(grads["disc_cls_w"])))) > 0


def test_masking_follows_the_authors_rule() -> None:
    xp = namespace("numpy")
    rng = np.random.default_rng(0)
    ids = np.full((400, 20), 9)
    ids[:, 0], ids[:, -1] = ex.CLS, ex.SEP
    pad = np.ones_like(ids, dtype=bool)
    pad[:, 15:] = False
    ids[:, 15:] = ex.PAD
    m = sample_electra_masking(rng, xp.asarray(ids), xp.asarray(pad), mask_rate=0.15, mask_id=ex.MASK,
                               special_ids=(ex.PAD, ex.CLS, ex.SEP, ex.MASK))
    masked, gen_ids = to_numpy(m.masked), to_numpy(m.generator_ids)
    assert np.all(masked.sum(axis=1) == round(15 * 0.15)), "count must be round(rate * n_real)"
    assert not np.any(masked & ~pad) and not np.any(masked[:, 0]), "never padding or special tokens"
    share = np.mean(gen_ids[masked] == ex.MASK)
    assert abs(share - MASK_TOKEN_PROB) < 0.06, f"[MASK] share {share}, expected {MASK_TOKEN_PROB}"
    assert np.all(gen_ids[~masked] == ids[~masked])


@pytest.mark.parametrize("rate", [0.0, 1.0, -0.1, 1.5])
def test_bad_mask_rate(rate: float) -> None:
    xp = namespace("numpy")
    with pytest.raises(ValueError, match="mask_rate must lie in \\(0, 1\\)"):
        sample_electra_masking(np.random.default_rng(0), xp.asarray([[1, 5, 2]]), xp.asarray([[True] * 3]),
                               mask_rate=rate, mask_id=3)


def test_bad_vocabulary_id_and_shapes() -> None:
    xp = namespace("numpy")
    case = get(NAME).example(0, xp.float64, xp)
    s = dict(case.static)
    kw = dict(n_heads_gen=ex.HEADS_GEN, n_heads_disc=ex.HEADS_DISC)
    bad = to_numpy(s["ids"]).copy()
    bad[0, 1] = ex.V
    with pytest.raises(ValueError, match="ids must lie in \\[0, 7\\)"):
        electra_forward(xp.asarray(bad), s["pad"], s["masked"], s["generator_ids"], s["gumbel"], case.params, **kw)
    with pytest.raises(ValueError, match="gumbel must have shape"):
        electra_forward(s["ids"], s["pad"], s["masked"], s["generator_ids"], s["gumbel"][..., :3], case.params, **kw)
    with pytest.raises(ValueError, match="masked must select real tokens"):
        electra_forward(s["ids"], s["pad"], s["masked"] | ~s["pad"], s["generator_ids"], s["gumbel"], case.params,
                        **kw)
    with pytest.raises(ValueError, match="no maskable token"):
        sample_electra_masking(np.random.default_rng(0), xp.asarray([[1, 2, 0]]), xp.asarray([[True, True, False]]),
                               mask_rate=0.5, mask_id=3, special_ids=(0, 1, 2, 3))
