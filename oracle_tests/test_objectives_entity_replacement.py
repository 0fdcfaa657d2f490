"""objectives.entity_replacement (WKLM): gradient checks, an independent PyTorch version, the construction's
properties, the boundary scatter, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import CPU_BACKENDS
from gradients.check import check_mechanism
from gradients.compare import compare_torch
from objectives_checks import assert_strict_matches_numpy
from reference.backend import namespace, to_numpy
from reference.objectives import entity_replacement_data as data
from reference.objectives.entity_replacement import entity_replacement_forward
from reference.registry import get
from torch_bert import mlm_head, text_encoder

NAME = "objectives.entity_replacement"


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_gradient_check(backend: str) -> None:
    report = check_mechanism(get(NAME), backend=backend, dtype="float64", mode="full")
    assert report.passed, "\n".join(f.describe() for f in report.failures)
    worst = max((r for r in report.results if not r.tensor.endswith("b_k")), key=lambda r: r.max_rel_error)
    print(f"{NAME} [{backend}, full]: worst rel error {worst.max_rel_error:.2e} ({worst.tensor}; b_k excluded)")




def torch_wklm(p: dict, s: dict) -> dict:
    h = text_encoder(s["ids"], s["pad"], p, data.HEADS, "gelu_tanh")  # (B, T, D)
    valid = s["mention_valid"]
    rows = torch.arange(h.shape[0])[:, None].expand_as(s["mention_start"])
    r = torch.cat([h[rows, s["mention_start"]], h[rows, s["mention_end"]]], dim=-1)  # (B, M, 2D) by indexing
    z = (r @ p["ent_w"] + p["ent_b"])[..., 0]
    ent = F.binary_cross_entropy_with_logits(z[valid], s["mention_labels"][valid])
    head = {"w": p["head_w"], "b": p["head_b"], "ln_gamma": p["head_ln_gamma"], "ln_beta": p["head_ln_beta"],
            "out_bias": p["out_bias"]}
    logits = mlm_head(h, head, p["tok"], "gelu_tanh")
    mlm = F.cross_entropy(logits.reshape(-1, data.V), s["mlm_targets"].reshape(-1), ignore_index=-100)
    return {"loss": ent + mlm, "ent_loss": ent, "mlm_loss": mlm}


def test_torch_autograd_agrees() -> None:
    report = compare_torch(NAME, lambda i, p, s: torch_wklm(p, s), rtol=1e-10, atol=1e-12)
    worst = max(report.results, key=lambda r: r.max_abs_error)
    print(f"{NAME}: torch agreement, max abs error {worst.max_abs_error:.2e} ({worst.tensor})")
    assert report.passed, "\n".join(f.describe() for f in report.failures)


def test_replacements_keep_the_type_and_never_touch_two_adjacent_mentions() -> None:
    rng = np.random.default_rng(0)
    table = {"city": {"Paris": [7], "Berlin": [8, 9], "Rome": [10]}, "person": {"Curie": [11], "Bohr": [12, 7]}}
    type_of = {name: t for t, ents in table.items() for name in ents}
    tokens = [11, 4, 7, 5, 10, 6, 12, 7, 4, 8, 9]
    mentions = [(0, 0, "person", "Curie"), (2, 2, "city", "Paris"), (4, 4, "city", "Rome"),
                (6, 7, "person", "Bohr"), (9, 10, "city", "Berlin")]
    seen = 0
    for _ in range(300):
        out = data.replace_entities(rng, tokens, mentions, table)
        assert all(not (a and b) for a, b in zip(out.labels, out.labels[1:])), f"adjacent replaced: {out.labels}"
        for (s, e), label, shown, (_, _, etype, orig) in zip(out.mentions, out.labels, out.entities, mentions):
            assert type_of[shown] == etype, f"{orig} replaced by {shown} of another type"
            assert (shown != orig) == bool(label)
            assert out.tokens[s:e + 1] == table[etype][shown], "the new span must hold the shown entity's tokens"
        seen += sum(out.labels)
    # with p = 0.5 and the adjacency rule, a mention right after a replaced one is kept: rate below 1/2
    assert 0.25 < seen / (300 * len(mentions)) < 0.5


def test_one_token_mention_boundary_receives_both_halves() -> None:
    """dh at a one-token mention = dr_start + dr_end: compare with a forward where start and end are separate."""
    xp = namespace("numpy")
    case = get(NAME).example(0, xp.float64, xp)
    s = case.static
    assert np.any(to_numpy(s["mention_start"] == s["mention_end"]) & to_numpy(s["mention_valid"]))
    (_, _, _), cache = entity_replacement_forward(s["ids"], s["pad"], s["mention_start"], s["mention_end"],
                                                  s["mention_valid"], s["mention_labels"], s["mlm_targets"],
                                                  case.params, n_heads=data.HEADS)
    # the gradient w.r.t. h is S^T dr_start + E^T dr_end; rebuild it from the cached selectors by hand
    z = to_numpy(cache.classifier.x) @ to_numpy(case.params["ent_w"]) + to_numpy(case.params["ent_b"])
    valid = to_numpy(s["mention_valid"])
    dz = (1 / (1 + np.exp(-z[..., 0])) - to_numpy(s["mention_labels"])) * valid / valid.sum()
    dr = dz[..., None] * to_numpy(case.params["ent_w"])[:, 0]  # (B, M, 2D)
    d = dr.shape[-1] // 2
    dh = np.zeros((data.B, data.T, d))
    for b in range(data.B):
        for m in range(data.M):
            dh[b, to_numpy(s["mention_start"])[b, m]] += dr[b, m, :d]
            dh[b, to_numpy(s["mention_end"])[b, m]] += dr[b, m, d:]
    got = np.einsum("bmt,bmd->btd", to_numpy(cache.start_hot), dr[..., :d]) + \
        np.einsum("bmt,bmd->btd", to_numpy(cache.end_hot), dr[..., d:])
    assert np.allclose(got, dh, rtol=1e-13, atol=1e-15), (got, dh)
    b, m = np.argwhere((to_numpy(s["mention_start"]) == to_numpy(s["mention_end"])) & valid)[0]
    t = to_numpy(s["mention_start"])[b, m]
    assert np.allclose(dh[b, t], dr[b, m, :d] + dr[b, m, d:]) and np.any(dr[b, m, d:] != 0)


def test_mlm_never_masks_inside_mentions_and_uses_the_reduced_rate() -> None:
    xp = namespace("numpy")
    rng = np.random.default_rng(2)
    doc = ([4, 5, 6] * 10 + [11], [(30, 30, "person", "Curie")])
    batch = data.build_wklm_batch(rng, [doc] * 40, data.TABLE, seq_len=40, max_mentions=1, vocab_size=data.V,
                                  cls_id=1, sep_id=2, pad_id=0, mask_id=3, special_ids=(0, 1, 2, 3), xp=xp,
                                  dtype=xp.float64)
    targets, start, end = (to_numpy(a) for a in (batch.mlm_targets, batch.mention_start, batch.mention_end))
    masked = targets != -100
    assert np.all(masked.sum(axis=1) == round(0.05 * 33)), "5% of the 33 tokens, rounded"
    for row in range(40):
        assert not np.any(masked[row, start[row, 0]:end[row, 0] + 1]), "a mention token was masked"


def test_bad_input() -> None:
    xp = namespace("numpy")
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="entity type 'river' has a single entity"):
        data.replace_entities(rng, [7], [(0, 0, "city", "Paris")], {**data.TABLE, "river": {"Seine": [5]}})
    with pytest.raises(ValueError, match="not in the entity table"):
        data.replace_entities(rng, [7], [(0, 0, "city", "Oslo")], data.TABLE)
    with pytest.raises(ValueError, match="replace two adjacent mentions"):
        data.replace_entities(rng, [7, 10], [(0, 0, "city", "Paris"), (1, 1, "city", "Rome")], data.TABLE,
                              decisions=[True, True])
    kw = dict(seq_len=8, max_mentions=2, vocab_size=data.V, cls_id=1, sep_id=2, pad_id=0, mask_id=3,
              special_ids=(0, 1, 2, 3), xp=xp, dtype=xp.float64)
    with pytest.raises(ValueError, match="mlm_rate must lie in \\(0, 1\\)"):
        data.build_wklm_batch(rng, [([4, 7], [(1, 1, "city", "Paris")])], data.TABLE, mlm_rate=0.0, **kw)
    with pytest.raises(ValueError, match="token ids must lie in \\[0, 13\\)"):
        data.build_wklm_batch(rng, [([4, 70], [(0, 0, "city", "Paris")])], data.TABLE, **kw)
    case = get(NAME).example(0, xp.float64, xp)
    s = dict(case.static)
    args = [s[k] for k in ("ids", "pad", "mention_start", "mention_end", "mention_valid", "mention_labels",
                           "mlm_targets")]
    bad = list(args)
    bad[0] = xp.asarray(np.where(to_numpy(args[0]) == 4, 13, to_numpy(args[0])))
    with pytest.raises(ValueError, match="ids must lie in \\[0, 13\\)"):
        entity_replacement_forward(*bad, case.params, n_heads=data.HEADS)
    bad = list(args)
    bad[3] = xp.asarray(np.full_like(to_numpy(args[3]), data.T - 1))  # mention end on padding
    with pytest.raises(ValueError, match="real \\(non-padding\\) tokens"):
        entity_replacement_forward(*bad, case.params, n_heads=data.HEADS)


def test_array_api_strict_equals_numpy() -> None:
    assert_strict_matches_numpy(NAME)
