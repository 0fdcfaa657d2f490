"""HuggingFace modules against the oracle through :func:`gradients.interop.huggingface.compare_module`
(skipped, naming the package, when transformers is absent; the test extra pins transformers 4.57.6)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from gradients.interop.huggingface import compare_module, oracle_to_state_dict, state_dict_to_oracle  # noqa: E402


def lsh_module(causal: bool, hash_seed: int | None = 0, **sizes):
    from transformers.models.reformer.modeling_reformer import LSHSelfAttention

    fields = dict(num_attention_heads=2, attention_head_size=32, hidden_size=64, num_hashes=4, num_buckets=8,
                  lsh_attn_chunk_length=32, lsh_num_chunks_after=0, hash_seed=hash_seed, is_decoder=causal)
    fields.update(sizes)
    torch.manual_seed(0)
    return LSHSelfAttention(transformers.ReformerConfig(**fields)).double().eval()


@pytest.mark.parametrize("causal", [False, True])
def test_lsh_self_attention_passes_at_the_issue_size(causal):
    """Issue 14's done-when: 4 rounds, 8 buckets, chunk 32, 2 heads, seq_len 256, float64."""
    report = compare_module(lsh_module(causal), seq_len=256)
    assert report.passed, report.table()
    tensors = {r.tensor for r in report.results}
    assert {"outputs.y", "grads.x", "grads.w_qk (query_key.weight)", "grads.w_v (value.weight)",
            "intermediates.buckets", "intermediates.perm"} <= tensors
    assert any("attend_across_buckets" in n for n in report.notes)
    assert any("no_duplicate_correction" in n for n in report.notes)


@pytest.mark.parametrize("causal", [False, True])
def test_lsh_without_hash_seed_captures_the_module_buckets(causal):
    report = compare_module(lsh_module(causal, hash_seed=None, num_attention_heads=3, attention_head_size=5,
                                       hidden_size=7, num_hashes=2, num_buckets=4, lsh_attn_chunk_length=4),
                            seq_len=12, batch=3)
    assert report.passed, report.table()
    assert any("captured" in n for n in report.notes)


def test_lsh_departure_switched_off_fails():
    """Without the across-buckets departure the oracle is the paper's function: a real difference."""
    report = compare_module(lsh_module(False, num_attention_heads=3, attention_head_size=5, hidden_size=7,
                                       num_hashes=2, num_buckets=4, lsh_attn_chunk_length=4), seq_len=12,
                            departures={"attend_across_buckets": False, "no_duplicate_correction": False},
                            diagnose=False)
    assert not report.passed
    assert not any("departure applied" in n for n in report.notes)


class TransposedLinear(torch.nn.Linear):
    """A Linear whose forward reads its weight transposed: the bug the comparison must name."""

    def forward(self, x):
        return torch.nn.functional.linear(x, self.weight.T)


def test_a_broken_transpose_fails_and_is_named():
    module = lsh_module(False)
    broken = copy.deepcopy(module)
    value = TransposedLinear(64, 64, bias=False).double()
    value.weight = broken.value.weight
    broken.value = value
    report = compare_module(broken, seq_len=256)
    assert not report.passed
    failing = {r.tensor for r in report.failures}
    assert "grads.w_v (value.weight)" in failing and "outputs.y" in failing
    assert any("diagnosis: value.weight (w_v)" in n for n in report.notes), report.notes
    assert not any("query_key.weight" in n for n in report.notes if n.startswith("diagnosis"))


def test_weight_conversion_round_trips():
    module = lsh_module(False, num_attention_heads=3, attention_head_size=5, hidden_size=7)
    params = state_dict_to_oracle(module)
    assert params["w_qk"].shape == (7, 15) and params["w_v"].shape == (7, 15)
    state = oracle_to_state_dict(params, module)
    for name, value in module.state_dict().items():
        if name in state:
            np.testing.assert_array_equal(state[name].numpy(), value.numpy())


def test_training_mode_is_refused():
    with pytest.raises(ValueError, match="eval"):
        compare_module(lsh_module(False).train(), seq_len=256)


# --- ALBERT and ELECTRA at non-default sizes

def albert_config(groups: int, **fields):
    sizes = dict(vocab_size=17, embedding_size=5, hidden_size=12, num_hidden_layers=3, num_attention_heads=4,
                 intermediate_size=10, max_position_embeddings=16, num_hidden_groups=groups,
                 attn_implementation="eager")
    sizes.update(fields)
    return transformers.AlbertConfig(**sizes)


@pytest.mark.parametrize("groups", [1, 3], ids=["sharing_all", "sharing_none"])
@pytest.mark.parametrize("cls", ["AlbertModel", "AlbertForPreTraining"])
def test_albert_passes_at_every_sharing_hf_supports(cls, groups):
    torch.manual_seed(0)
    module = getattr(transformers, cls)(albert_config(groups)).double().eval()
    report = compare_module(module, seq_len=9, batch=3)
    assert report.passed, report.table()
    tensors = {r.tensor for r in report.results}
    assert "intermediates.layer3.attention_probs" in tensors and "intermediates.hidden3" in tensors
    assert any(t.startswith("grads.tok (") for t in tensors)
    assert any("padding_idx" in n for n in report.notes)


def test_albert_without_pooler_and_a_grouping_hf_has_but_the_paper_has_not():
    torch.manual_seed(0)
    module = transformers.AlbertModel(albert_config(1), add_pooling_layer=False).double().eval()
    report = compare_module(module, seq_len=6)
    assert report.passed and "outputs.pooled" not in {r.tensor for r in report.results}, report.table()
    with pytest.raises(ValueError, match="num_hidden_groups"):
        compare_module(transformers.AlbertModel(albert_config(2, num_hidden_layers=4)).double().eval(), seq_len=6)


def test_albert_padding_departure_switched_off_names_the_padding_row():
    torch.manual_seed(0)
    module = transformers.AlbertModel(albert_config(1)).double().eval()
    report = compare_module(module, seq_len=9, batch=3, seed=1, departures={"padding_idx": False}, diagnose=False)
    assert [r.tensor for r in report.failures] == ["grads.tok (embeddings.word_embeddings.weight)"], report.table()
    assert report.failures[0].worst.startswith("(0,")


def electra_config(**fields):
    sizes = dict(vocab_size=13, embedding_size=5, hidden_size=9, num_hidden_layers=2, num_attention_heads=3,
                 intermediate_size=7, max_position_embeddings=20, attn_implementation="eager")
    sizes.update(fields)
    return transformers.ElectraConfig(**sizes)


@pytest.mark.parametrize("cls", ["ElectraForPreTraining", "ElectraForMaskedLM"])
def test_electra_discriminator_and_generator_pass(cls):
    torch.manual_seed(0)
    module = getattr(transformers, cls)(electra_config()).double().eval()
    report = compare_module(module, seq_len=8, batch=3)
    assert report.passed, report.table()
    own = "hf_label_cast" if cls == "ElectraForPreTraining" else "gelu_generator_head"
    assert any(f"departure applied to the oracle: {own}" in n for n in report.notes)
    if cls == "ElectraForPreTraining":
        assert "outputs.disc_loss (HF's float32 loss)" in {r.tensor for r in report.results}


def test_electra_tanh_gelu_and_equal_widths():
    torch.manual_seed(0)
    module = transformers.ElectraForPreTraining(electra_config(hidden_act="gelu_new", embedding_size=9,
                                                               num_hidden_layers=1)).double().eval()
    assert compare_module(module, seq_len=7).passed


def test_electra_label_cast_switched_off_is_a_real_difference():
    torch.manual_seed(0)
    module = transformers.ElectraForPreTraining(electra_config()).double().eval()
    report = compare_module(module, seq_len=8, departures={"hf_label_cast": False}, diagnose=False)
    assert "outputs.disc_loss" in {r.tensor for r in report.failures}


# --- docs/testing.md, "Real modules in one call": its code blocks run as a reader would run them

def test_the_docs_section_runs(capsys):
    import re
    from pathlib import Path

    pytest.importorskip("compressive_transformer_pytorch")
    page = (Path(__file__).resolve().parents[1] / "docs" / "testing.md").read_text()
    section = page[page.index("## Real modules in one call"):]
    section = section[:section.find("\n## ", 1)] if "\n## " in section[1:] else section
    blocks = re.findall(r"^```py\n(.*?)^```$", section, flags=re.S | re.M)
    assert len(blocks) == 4
    namespace: dict = {"__name__": "docs_interop"}
    for number, block in enumerate(blocks, 1):
        try:
            exec(compile(block, f"testing.md interop block {number}", "exec"), namespace)
        except Exception as err:  # name the block that broke
            raise AssertionError(f"docs/testing.md interop block {number} failed: {err!r}\n{block}") from err
    out = capsys.readouterr().out
    assert out.count("0 failed") == 3, out
