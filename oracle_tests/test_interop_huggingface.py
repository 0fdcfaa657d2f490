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
