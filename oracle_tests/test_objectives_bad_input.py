"""Bad input to the public forwards of ELECTRA (whole, generator, discriminator), StructBERT (word, sentence)
and WKLM: each error is a ValueError or TypeError raised at the entry and naming the argument the user passed."""

from __future__ import annotations

import numpy as np
import pytest

from reference.backend import to_numpy
from reference.objectives.electra import electra_discriminator_forward, electra_forward, electra_generator_forward
from reference.objectives.entity_replacement import entity_replacement_forward
from reference.objectives.structbert_sentence import structbert_sentence_forward
from reference.objectives.structbert_word import structbert_word_forward
from reference.registry import get


def _case(name: str):
    case = get(name).example(0)
    return {k: to_numpy(v) for k, v in case.static.items()}, dict(case.params), case.config


def electra(change: dict):
    s, p, c = _case("objectives.electra")
    s.update({k: v(s) for k, v in change.items() if k != "params"})
    p.update({k: v(p) for k, v in change.get("params", {}).items()})
    return electra_forward(s["ids"], s["pad"], s["masked"], s["generator_ids"], s["gumbel"], p, n_heads_gen=1,
                           n_heads_disc=3)


def generator(change: dict):
    s, p, c = _case("objectives.electra.generator")
    s.update({k: v(s) for k, v in change.items()})
    return electra_generator_forward(s["generator_ids"], s["pad"], s["ids"], s["masked"], p, n_heads=1)


def discriminator(change: dict):
    s, p, c = _case("objectives.electra.discriminator")
    s.update({k: v(s) for k, v in change.items()})
    return electra_discriminator_forward(s["corrupted"], s["pad"], s["labels"], p, n_heads=3)


def word(change: dict):
    s, p, c = _case("objectives.structbert_word")
    s.update({k: v(s) for k, v in change.items()})
    return structbert_word_forward(s["input_ids"], s["pad"], s["mlm_targets"], s["word_targets"], p, n_heads=2)


def sentence(change: dict):
    s, p, c = _case("objectives.structbert_sentence")
    s.update({k: v(s) for k, v in change.items()})
    return structbert_sentence_forward(s["ids"], s["segments"], s["pad"], s["labels"], p, n_heads=2)


def wklm(change: dict):
    s, p, c = _case("objectives.entity_replacement")
    s.update({k: v(s) for k, v in change.items()})
    return entity_replacement_forward(s["ids"], s["pad"], s["mention_start"], s["mention_end"], s["mention_valid"],
                                      s["mention_labels"], s["mlm_targets"], p, n_heads=2)


def _nan(a):
    a = a.copy()
    a.flat[0] = np.nan
    return a


def _set(a, value, index=(0, 1)):
    a = a.copy()
    a[index] = value
    return a


CASES = {
    # ELECTRA, whole
    "electra ids list": (electra, {"ids": lambda s: s["ids"].tolist()}, TypeError, "^ids must be an array"),
    "electra ids rank": (electra, {"ids": lambda s: s["ids"][0]}, ValueError, r"^ids must have shape \(batch, seq\)"),
    "electra empty batch": (electra, {"ids": lambda s: s["ids"][:0]}, ValueError, "^ids must hold at least one"),
    "electra ids float": (electra, {"ids": lambda s: s["ids"].astype(float)}, TypeError, "^ids must be an integer"),
    "electra gumbel nan": (electra, {"gumbel": lambda s: _nan(s["gumbel"])}, ValueError, "gumbel contains NaN"),
    "electra gumbel inf": (electra, {"gumbel": lambda s: -_nan(s["gumbel"]) * 0 + np.inf}, ValueError,
                           "gumbel contains NaN or infinite"),
    "electra gumbel int": (electra, {"gumbel": lambda s: s["gumbel"].astype(np.int64)}, TypeError,
                           "gumbel must be a real floating"),
    "electra gumbel tuple": (electra, {"gumbel": lambda s: tuple(s["gumbel"].tolist())}, TypeError,
                             "gumbel must be an array"),
    "electra pad int": (electra, {"pad": lambda s: s["pad"].astype(np.int64)}, TypeError, "pad must be a boolean"),
    "electra masked shape": (electra, {"masked": lambda s: s["masked"][:, :3]}, ValueError, "masked must have shape"),
    "electra generator_ids range": (electra, {"generator_ids": lambda s: _set(s["generator_ids"], 99)}, ValueError,
                                    r"generator_ids must lie in \[0, 11\)"),
    "electra tok int": (electra, {"params": {"tok": lambda p: to_numpy(p["tok"]).astype(np.int64)}}, TypeError,
                        r"params\['tok'\] must be a real floating"),
    "electra tok list": (electra, {"params": {"tok": lambda p: to_numpy(p["tok"]).tolist()}}, TypeError,
                         r"params\['tok'\] must be an array"),
    "electra head weight int": (electra, {"params": {"disc_head_w": lambda p: to_numpy(p["disc_head_w"]).astype(int)}},
                                TypeError, r"params\['disc_head_w'\] must be a real floating"),
    "electra head weight nan": (electra, {"params": {"gen_head_b": lambda p: _nan(to_numpy(p["gen_head_b"]))}},
                                ValueError, r"params\['gen_head_b'\] contains NaN"),
    # ELECTRA sub-models
    "generator masked int": (generator, {"masked": lambda s: s["masked"].astype(np.int64)}, TypeError,
                             "masked must be a boolean"),
    "generator ids rank": (generator, {"ids": lambda s: s["ids"][None]}, ValueError, r"^ids must have shape"),
    "discriminator labels 2": (discriminator, {"labels": lambda s: _set(s["labels"], 2)}, ValueError,
                               r"labels must be 0 \(original\) or 1"),
    "discriminator labels -1": (discriminator, {"labels": lambda s: _set(s["labels"], -1)}, ValueError,
                                r"labels must be 0 \(original\) or 1"),
    "discriminator labels float": (discriminator, {"labels": lambda s: s["labels"].astype(float)}, TypeError,
                                   "labels must be an integer"),
    "discriminator corrupted list": (discriminator, {"corrupted": lambda s: s["corrupted"].tolist()}, TypeError,
                                     "corrupted must be an array"),
    # StructBERT
    "word mlm_targets float": (word, {"mlm_targets": lambda s: s["mlm_targets"].astype(float)}, TypeError,
                               "mlm_targets must be an integer"),
    "word word_targets range": (word, {"word_targets": lambda s: _set(s["word_targets"], 50, (0, 0))}, ValueError,
                                r"word_targets must lie in \[0, 11\)"),
    "word input_ids empty": (word, {"input_ids": lambda s: s["input_ids"][:, :0]}, ValueError,
                             "input_ids must hold at least one"),
    "sentence segments 2": (sentence, {"segments": lambda s: _set(s["segments"], 2)}, ValueError,
                            r"segments must lie in \[0, 2\)"),
    "sentence segments list": (sentence, {"segments": lambda s: s["segments"].tolist()}, TypeError,
                               "segments must be an array"),
    "sentence segments shape": (sentence, {"segments": lambda s: s["segments"][:, :4]}, ValueError,
                                "segments must have shape"),
    "sentence labels 3": (sentence, {"labels": lambda s: s["labels"] + 3}, ValueError, r"labels must lie in \[0, 3\)"),
    "sentence labels tuple": (sentence, {"labels": lambda s: tuple(s["labels"])}, TypeError, "labels must be an array"),
    # WKLM
    "wklm mention_labels 2": (wklm, {"mention_labels": lambda s: _set(s["mention_labels"], 2, (0, 0))}, ValueError,
                              "mention_labels must be 0"),
    "wklm mention_labels -1": (wklm, {"mention_labels": lambda s: _set(s["mention_labels"], -1, (0, 0))}, ValueError,
                               "mention_labels must be 0"),
    "wklm mention_labels float": (wklm, {"mention_labels": lambda s: s["mention_labels"].astype(float)}, TypeError,
                                  "mention_labels must be an integer"),
    "wklm mention_start list": (wklm, {"mention_start": lambda s: s["mention_start"].tolist()}, TypeError,
                                "mention_start must be an array"),
    "wklm mention_end rank": (wklm, {"mention_end": lambda s: s["mention_end"][0]}, ValueError,
                              r"mention_end must have shape \(batch, mentions\)"),
    "wklm ids tuple": (wklm, {"ids": lambda s: tuple(map(tuple, s["ids"]))}, TypeError, "^ids must be an array"),
    "wklm mention_valid int": (wklm, {"mention_valid": lambda s: s["mention_valid"].astype(np.int64)}, TypeError,
                               "mention_valid must be a boolean"),
}


@pytest.mark.parametrize("label", list(CASES))
def test_bad_input_names_the_argument(label: str) -> None:
    fn, change, error, message = CASES[label]
    with pytest.raises(error, match=message):
        fn(change)


def test_unknown_classifier_and_reduction_are_refused() -> None:
    with pytest.raises(ValueError, match="classifier must be one of"):
        s, p, _ = _case("objectives.entity_replacement")
        entity_replacement_forward(s["ids"], s["pad"], s["mention_start"], s["mention_end"], s["mention_valid"],
                                   s["mention_labels"], s["mlm_targets"], p, n_heads=2, classifier="sigmoid")
    with pytest.raises(ValueError, match="word_reduction must be one of"):
        s, p, _ = _case("objectives.structbert_word")
        structbert_word_forward(s["input_ids"], s["pad"], s["mlm_targets"], s["word_targets"], p, n_heads=2,
                                word_reduction="max")


@pytest.mark.parametrize("name, field, value, message", [
    ("objectives.electra", "n_heads_disc", 4, "d_disc .6. must be a multiple of n_heads_disc"),
    ("objectives.electra", "force_original", True, None),
    ("objectives.structbert_word", "n_padded", 5, "seq_len - n_padded"),
    ("objectives.entity_replacement", "n_empty_rows", 2, "n_empty_rows"),
])
def test_configurations_refuse_impossible_cases(name: str, field: str, value, message) -> None:
    mech = get(name)
    if message is None:  # force_original with disallow_correct
        with pytest.raises(ValueError, match="force_original cannot hold with disallow_correct"):
            mech.make_config({"disallow_correct": True, field: value})
        return
    with pytest.raises(ValueError, match=message):
        mech.make_config({field: value})
