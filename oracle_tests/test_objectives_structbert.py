"""objectives.structbert_word and objectives.structbert_sentence: gradient checks, independent PyTorch
versions, the construction's properties, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import CPU_BACKENDS
from objectives_checks import assert_strict_matches_numpy
from torch_bert import mlm_head, text_encoder

from gradients.check import check_mechanism
from gradients.compare import sweep_torch
from reference.backend import namespace, to_numpy
from reference.nn.losses import IGNORE_INDEX
from reference.objectives import structbert_sentence as sent
from reference.objectives import structbert_word as word
from reference.objectives.cases import structbert_word as word_case
from reference.registry import get

MASKED = float(torch.finfo(torch.float64).min)  # HF's additive mask value: fully padded rows stay finite

NAMES = ["objectives.structbert_word", "objectives.structbert_sentence"]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("name", NAMES)
def test_gradient_check(name: str, backend: str) -> None:
    report = check_mechanism(get(name), backend=backend, dtype="float64", mode="full")
    assert report.passed, "\n".join(f.describe() for f in report.failures)
    worst = max((r for r in report.results if not r.tensor.endswith("b_k")), key=lambda r: r.max_rel_error)
    print(f"{name} [{backend}, full]: worst rel error {worst.max_rel_error:.2e} ({worst.tensor}; b_k excluded)")




def torch_word(p: dict, s: dict, c) -> dict:
    h = text_encoder(s["input_ids"], s["pad"], p, c.n_heads, c.activation, c.n_layers, mask_value=MASKED)
    head = {"w": p["head_w"], "b": p["head_b"], "ln_gamma": p["head_ln_gamma"], "ln_beta": p["head_ln_beta"],
            "out_bias": p["out_bias"]}
    logits = mlm_head(h, head, p["tok"], c.activation).reshape(-1, c.vocab)
    mlm = F.cross_entropy(logits, s["mlm_targets"].reshape(-1), ignore_index=-100)
    reduction = "sum" if c.word_reduction == "sum" else "mean"  # Eq. (1) is a sum
    wl = F.cross_entropy(logits, s["word_targets"].reshape(-1), ignore_index=-100, reduction=reduction)
    return {"loss": mlm + wl, "mlm_loss": mlm, "word_loss": wl}


def torch_sentence(p: dict, s: dict, c) -> dict:
    h = text_encoder(s["ids"], s["pad"], p, c.n_heads, c.activation, c.n_layers, segments=s["segments"])
    logits = torch.tanh(h[:, 0] @ p["pool_w"] + p["pool_b"]) @ p["cls_w"] + p["cls_b"]
    return {"loss": F.cross_entropy(logits, s["labels"]), "logits": logits}


@pytest.mark.parametrize("name, fn", [(NAMES[0], torch_word), (NAMES[1], torch_sentence)])
def test_torch_autograd_agrees_at_every_edge_configuration(name: str, fn) -> None:
    report = sweep_torch(name, lambda i, p, s, c: fn(p, s, c), seeds=(0, 1), rtol=1e-10, atol=1e-12)
    worst = max(report.results, key=lambda r: r.max_abs_error)
    print(f"{name}: torch agreement, max abs error {worst.max_abs_error:.2e} ({worst.mechanism} {worst.tensor})")
    assert report.passed, "\n".join(f.describe() for f in report.failures)


@pytest.mark.parametrize("name", NAMES)
def test_intermediates_are_each_layers_hidden_states(name: str) -> None:
    mech = get(name)
    _, cache = mech.forward(mech.example(0, config={"n_layers": 2}))
    assert list(mech.intermediates(cache)) == ["embeddings", "layer0", "layer1"]


def _word_batch(seed: int, batch: int = 50, seq: int = 40):
    rng = np.random.default_rng(seed)
    ids = rng.integers(4, 30, (batch, seq))
    ids[:, 0], ids[:, -1] = word_case.CLS, word_case.SEP
    pad = np.ones_like(ids, dtype=bool)
    xp = namespace("numpy")
    built = word.sample_structbert_word(rng, xp.asarray(ids), xp.asarray(pad), mask_id=word_case.MASK, vocab_size=30,
                                        special_ids=(word_case.PAD, word_case.CLS, word_case.SEP, word_case.MASK))
    return ids, built


def test_trigrams_are_unmasked_disjoint_and_shuffled_by_non_identity() -> None:
    ids, built = _word_batch(0)
    inp, mlm_t, word_t = (to_numpy(a) for a in (built.input_ids, built.mlm_targets, built.word_targets))
    for row, (starts, perms) in enumerate(zip(built.trigram_starts, built.shuffles)):
        free = (mlm_t[row] == IGNORE_INDEX) & (ids[row] >= 4)  # unmasked ordinary tokens
        n_windows = int(np.sum(free[:-2] & free[1:-1] & free[2:]))
        assert len(starts) == max(1, round(0.05 * n_windows)), f"row {row}: {len(starts)} trigrams of {n_windows}"
        assert all(abs(a - b) >= 3 for i, a in enumerate(starts) for b in starts[i + 1:]), "trigrams overlap"
        for start, perm in zip(starts, perms):
            assert perm != (0, 1, 2) and sorted(perm) == [0, 1, 2]
            span = slice(start, start + 3)
            assert np.all(mlm_t[row, span] == IGNORE_INDEX), "a trigram contains a masked position"
            assert np.array_equal(inp[row, span], ids[row, span][list(perm)]), "shuffle is not x~_{t+j}=x_{t+pi(j)}"
            assert np.array_equal(word_t[row, span], ids[row, span]), "targets are not the original tokens"
    assert np.all((word_t == IGNORE_INDEX) | (mlm_t == IGNORE_INDEX)), "a position is both masked and shuffled"
    # every position outside masks and trigrams is untouched
    untouched = (word_t == IGNORE_INDEX) & (mlm_t == IGNORE_INDEX)
    assert np.array_equal(inp[untouched], ids[untouched])


def test_word_loss_is_the_mean_over_shuffled_positions(xp) -> None:
    mech = get(NAMES[0])
    case = mech.example(0, xp.float64, xp)
    outputs, cache = mech.forward(case)
    logits = to_numpy(cache.head.z) @ to_numpy(case.params["tok"]).T + to_numpy(case.params["out_bias"])
    logp = logits - np.log(np.sum(np.exp(logits), axis=-1, keepdims=True))
    t = to_numpy(case.static["word_targets"])
    sel = t != IGNORE_INDEX
    expected = -np.mean(np.take_along_axis(logp, np.where(sel, t, 0)[..., None], -1)[..., 0][sel])
    got = float(to_numpy(outputs["word_loss"]))
    assert abs(got - expected) <= 1e-12 * abs(expected), (got, expected)
    total = float(to_numpy(outputs["loss"]))
    assert abs(total - got - float(to_numpy(outputs["mlm_loss"]))) <= 1e-12 * total


def test_sentence_pairs_follow_their_labels() -> None:
    xp = namespace("numpy")
    docs = [[[4, 5], [6, 7, 8], [9]], [[10, 11], [12]], [[13]]]
    rng = np.random.default_rng(1)
    pairs = sent.sample_sentence_pairs(rng, docs, 600, seq_len=10, cls_id=1, sep_id=2, pad_id=0, xp=xp)
    ids, seg, labels = (to_numpy(a) for a in (pairs.ids, pairs.segments, pairs.labels))
    counts = np.bincount(labels, minlength=3) / len(labels)
    assert np.all(np.abs(counts - 1 / 3) < 0.06), f"label shares {counts}, expected 1/3 each"
    where = {tuple(s): (d, i) for d, doc in enumerate(docs) for i, s in enumerate(doc)}
    for row in range(len(labels)):
        seps = np.flatnonzero(ids[row] == 2)
        s1, s2 = tuple(ids[row, 1:seps[0]]), tuple(ids[row, seps[0] + 1:seps[1]])
        (d1, i1), (d2, i2) = where[s1], where[s2]
        expect = {0: (d1, i1 + 1), 1: (d1, i1 - 1)}.get(int(labels[row]))
        if expect is None:
            assert d2 != d1, f"row {row}: random sentence from the same document"
        else:
            assert (d2, i2) == expect, f"row {row}: label {labels[row]} but S2 is {(d2, i2)}"
        assert np.all(seg[row, :seps[0] + 1] == 0) and np.all(seg[row, seps[0] + 1:seps[1] + 1] == 1)


def test_bad_input() -> None:
    xp = namespace("numpy")
    rng = np.random.default_rng(0)
    short = np.array([[1, 5, 6, 2]])
    with pytest.raises(ValueError, match="too short for a trigram"):
        word.sample_structbert_word(rng, xp.asarray(short), xp.asarray(short > 0), mask_id=3, vocab_size=11,
                                    special_ids=(0, 1, 2, 3), mask_rate=0.2)
    with pytest.raises(ValueError, match="mask_rate must lie in \\(0, 1\\)"):
        word.sample_structbert_word(rng, xp.asarray(short), xp.asarray(short > 0), mask_id=3, vocab_size=11,
                                    mask_rate=1.0)
    with pytest.raises(ValueError, match="ids must lie in \\[0, 11\\)"):
        word.sample_structbert_word(rng, xp.asarray(short + 10), xp.asarray(short > 0), mask_id=3, vocab_size=11)
    with pytest.raises(ValueError, match="one sentence: it cannot give a next pair"):
        sent.build_sentence_pair([[[4]], [[5]]], 0, 0, sent.NEXT, seq_len=8, cls_id=1, sep_id=2, pad_id=0)
    with pytest.raises(ValueError, match="no previous sentence"):
        sent.build_sentence_pair([[[4], [6]], [[5]]], 0, 0, sent.PREVIOUS, seq_len=8, cls_id=1, sep_id=2, pad_id=0)
    with pytest.raises(ValueError, match="every document has one sentence"):
        sent.sample_sentence_pairs(rng, [[[4]], [[5]]], 2, seq_len=8, cls_id=1, sep_id=2, pad_id=0, xp=xp)
    case = get(NAMES[0]).example(0, xp.float64, xp)
    s = case.static
    bad = to_numpy(s["input_ids"]).copy()
    bad[0, 1] = 11
    with pytest.raises(ValueError, match="input_ids must lie in \\[0, 11\\)"):
        word.structbert_word_forward(xp.asarray(bad), s["pad"], s["mlm_targets"], s["word_targets"], case.params,
                                     n_heads=2)
    case = get(NAMES[1]).example(0, xp.float64, xp)
    s = case.static
    with pytest.raises(ValueError, match="labels must lie in \\[0, 3\\)"):
        sent.structbert_sentence_forward(s["ids"], s["segments"], s["pad"], s["labels"] + 1, case.params, n_heads=2)


@pytest.mark.parametrize("name", NAMES)
def test_array_api_strict_equals_numpy(name: str) -> None:
    assert_strict_matches_numpy(name)
