"""objectives.entity_replacement (WKLM): gradient checks, an independent PyTorch version, the construction's
properties, the boundary scatter, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import CPU_BACKENDS
from objectives_checks import assert_strict_matches_numpy
from torch_bert import mlm_head_transform, text_encoder

from gradients.check import check_mechanism
from gradients.compare import sweep_torch
from reference.backend import namespace, to_numpy
from reference.objectives import entity_replacement_data as data
from reference.objectives.cases import entity_replacement as case_data
from reference.objectives.entity_replacement import HEADS, entity_replacement_forward
from reference.registry import get

MASKED = float(torch.finfo(torch.float64).min)  # HF's additive mask value: fully padded rows stay finite

NAME = "objectives.entity_replacement"


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_gradient_check(backend: str) -> None:
    report = check_mechanism(get(NAME), backend=backend, dtype="float64", mode="full")
    assert report.passed, "\n".join(f.describe() for f in report.failures)
    worst = max((r for r in report.results if not r.tensor.endswith("b_k")), key=lambda r: r.max_rel_error)
    print(f"{NAME} [{backend}, full]: worst rel error {worst.max_rel_error:.2e} ({worst.tensor}; b_k excluded)")




def torch_wklm(p: dict, s: dict, c) -> dict:
    """WKLM from the authors' description (spec/findings.md): every classifier reads z = LN(act(W h))."""
    h = text_encoder(s["ids"], s["pad"], p, c.n_heads, c.activation, c.n_layers, mask_value=MASKED)  # (B, T, D)
    head = {"w": p["head_w"], "b": p["head_b"], "ln_gamma": p["head_ln_gamma"], "ln_beta": p["head_ln_beta"]}
    z = mlm_head_transform(h, head, c.activation)  # (B, T, E)
    valid, labels = s["mention_valid"], s["mention_labels"]
    rows = torch.arange(h.shape[0])[:, None].expand_as(s["mention_start"])
    at = {"start": s["mention_start"], "end": s["mention_end"], "before": (s["mention_start"] - 1).clamp(min=0),
          "after": (s["mention_end"] + 1).clamp(max=h.shape[1] - 1)}
    pieces = {"boundary": [("ent_", ("before", "after"))], "start": [("ent_", ("start",))],
              "start_end": [("ent_start_", ("start",)), ("ent_end_", ("end",))]}[c.classifier]
    ent = 0.0
    for prefix, where in pieces:  # 2-way heads; start_end adds the two heads' losses
        r = torch.cat([z[rows, at[w]] for w in where], dim=-1)  # (B, M, k E) by indexing
        logits = r @ p[prefix + "w"] + p[prefix + "b"]  # (B, M, 2)
        ent = ent + F.cross_entropy(logits[valid], labels[valid])
    mlm_logits = (z @ p["tok"].T + p["out_bias"]).reshape(-1, c.vocab)
    mlm = F.cross_entropy(mlm_logits, s["mlm_targets"].reshape(-1), ignore_index=-100)
    return {"loss": ent + mlm, "ent_loss": ent, "mlm_loss": mlm}


def test_torch_autograd_agrees_at_every_edge_configuration() -> None:
    report = sweep_torch(NAME, lambda i, p, s, c: torch_wklm(p, s, c), seeds=(0, 1), rtol=1e-10, atol=1e-12)
    worst = max(report.results, key=lambda r: r.max_abs_error)
    print(f"{NAME}: torch agreement, max abs error {worst.max_abs_error:.2e} ({worst.mechanism} {worst.tensor})")
    assert report.passed, "\n".join(f.describe() for f in report.failures)


def test_the_default_classifier_is_the_authors_boundary_loss() -> None:
    """--boundary-loss (sweep/commands.md): the tokens just outside each mention into one 2-way layer."""
    config = get(NAME).make_config()
    assert config.classifier == "boundary" and HEADS["boundary"] == (("ent_", ("before", "after")),)
    case = get(NAME).example(0)
    assert tuple(case.params["ent_w"].shape) == (2 * config.d_model, 2)
    assert {k for k in get(NAME).example(0, config={"classifier": "start_end"}).params if k.startswith("ent")} == \
        {"ent_start_w", "ent_start_b", "ent_end_w", "ent_end_b"}


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


def test_one_token_mention_position_receives_both_heads() -> None:
    """start_end on a one-token mention: start = end, so that position's dz is the sum of both heads' parts."""
    mech = get(NAME)
    case = mech.example(0, config={"classifier": "start_end"})
    s = case.static
    start, end, valid = (to_numpy(s[k]) for k in ("mention_start", "mention_end", "mention_valid"))
    assert np.any((start == end) & valid), "the example should contain a one-token mention"
    _, cache = mech.forward(case)
    one = np.float64(1.0)
    dz = np.zeros(tuple(cache.head.z.shape))
    for hc in cache.heads:  # rebuild S^T dr by loops
        from reference.nn.linear import linear_backward
        from reference.nn.losses import cross_entropy_backward
        dr, _ = linear_backward(cross_entropy_backward(one, hc.loss), hc.classifier)
        (hot,) = hc.selectors
        for b_ in range(dz.shape[0]):
            for m in range(hot.shape[1]):
                if valid[b_, m]:
                    dz[b_, int(np.argmax(hot[b_, m]))] += dr[b_, m]
    b_, m = np.argwhere((start == end) & valid)[0]
    parts = [linear_backward(cross_entropy_backward(one, hc.loss), hc.classifier)[0][b_, m] for hc in cache.heads]
    assert np.allclose(dz[b_, start[b_, m]], parts[0] + parts[1]) and np.all(parts[1] != 0)


def test_mlm_never_masks_inside_mentions_and_uses_the_reduced_rate() -> None:
    xp = namespace("numpy")
    rng = np.random.default_rng(2)
    doc = ([4, 5, 6] * 10 + [11], [(30, 30, "person", "Curie")])
    kw = dict(seq_len=40, max_mentions=1, vocab_size=13, cls_id=1, sep_id=2, pad_id=0, mask_id=3,
              special_ids=(0, 1, 2, 3), xp=xp)
    batch = data.build_wklm_batch(rng, [doc] * 40, case_data.TABLE, mlm_positions="exact", **kw)
    targets, start, end = (to_numpy(a) for a in (batch.mlm_targets, batch.mention_start, batch.mention_end))
    masked = targets != -100
    assert np.all(masked.sum(axis=1) == round(0.05 * 33)), "exact: 5% of the 33 tokens, rounded"
    for row in range(40):
        assert not np.any(masked[row, start[row, 0]:end[row, 0] + 1]), "a mention token was masked"
    # the authors' rule: ceil(0.3 * 33) = 10 draws over the block, entity and special positions then skipped
    doc = ([4, 11, 5, 12, 7] * 6 + [6], [(1, 1, "person", "Curie")])
    batch = data.build_wklm_batch(rng, [doc] * 200, case_data.TABLE, mlm_rate=0.3, decisions=[[False]] * 200, **kw)
    masked = to_numpy(batch.mlm_targets) != -100
    assert masked.sum(axis=1).max() <= 10 and 7 < masked.sum(axis=1).mean() < 10, masked.sum(axis=1).mean()
    assert not np.any(masked[:, 2]) and not np.any(masked[:, 0]), "the mention and [CLS] are never masked"


def test_bad_input() -> None:
    xp = namespace("numpy")
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="entity type 'river' has a single entity"):
        data.replace_entities(rng, [7], [(0, 0, "city", "Paris")], {**case_data.TABLE, "river": {"Seine": [5]}})
    with pytest.raises(ValueError, match="not in the entity table"):
        data.replace_entities(rng, [7], [(0, 0, "city", "Oslo")], case_data.TABLE)
    with pytest.raises(ValueError, match="replace two adjacent mentions"):
        data.replace_entities(rng, [7, 10], [(0, 0, "city", "Paris"), (1, 1, "city", "Rome")], case_data.TABLE,
                              decisions=[True, True])
    kw = dict(seq_len=8, max_mentions=2, vocab_size=13, cls_id=1, sep_id=2, pad_id=0, mask_id=3,
              special_ids=(0, 1, 2, 3), xp=xp)
    with pytest.raises(ValueError, match="mlm_rate must lie in \\(0, 1\\)"):
        data.build_wklm_batch(rng, [([4, 7], [(1, 1, "city", "Paris")])], case_data.TABLE, mlm_rate=0.0, **kw)
    with pytest.raises(ValueError, match="token ids must lie in \\[0, 13\\)"):
        data.build_wklm_batch(rng, [([4, 70], [(0, 0, "city", "Paris")])], case_data.TABLE, **kw)
    case = get(NAME).example(0, xp.float64, xp)
    s = dict(case.static)
    args = [s[k] for k in ("ids", "pad", "mention_start", "mention_end", "mention_valid", "mention_labels",
                           "mlm_targets")]
    bad = list(args)
    bad[0] = xp.asarray(np.where(to_numpy(args[0]) == 4, 13, to_numpy(args[0])))
    with pytest.raises(ValueError, match="ids must lie in \\[0, 13\\)"):
        entity_replacement_forward(*bad, case.params, n_heads=2)
    bad = list(args)
    bad[3] = xp.asarray(np.full_like(to_numpy(args[3]), 10))  # mention end on padding (T = 11)
    with pytest.raises(ValueError, match="after the mention must be a real \\(non-padding\\) position"):
        entity_replacement_forward(*bad, case.params, n_heads=2)


def test_array_api_strict_equals_numpy() -> None:
    assert_strict_matches_numpy(NAME)
