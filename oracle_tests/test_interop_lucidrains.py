"""lucidrains' compressive-transformer-pytorch SelfAttention against the oracle through
:func:`gradients.interop.lucidrains.compare_module` (skipped, naming the package, when it is absent; the test
extra pins 0.4.0)."""

from __future__ import annotations

import copy

import pytest

lucid = pytest.importorskip("compressive_transformer_pytorch.compressive_transformer_pytorch")
torch = pytest.importorskip("torch")

from gradients.interop.lucidrains import compare_module, oracle_to_state_dict, state_dict_to_oracle  # noqa: E402


def module(dim=12, seq_len=6, cmem_len=5, ratio=3, heads=3):
    torch.manual_seed(0)
    return lucid.SelfAttention(dim, seq_len, seq_len, cmem_len, cmem_ratio=ratio, heads=heads).double().train()


@pytest.mark.parametrize("sizes", [{}, {"dim": 10, "seq_len": 4, "cmem_len": 7, "ratio": 2, "heads": 5},
                                   {"seq_len": 6, "ratio": 6, "heads": 1}], ids=["default", "odd", "one_row"])
def test_memory_update_reconstruction_loss_and_attention_pass(sizes):
    m = module(**sizes)
    report = compare_module(m, batch=3)
    assert report.passed, report.table()
    tensors = {r.tensor for r in report.results}
    assert {"outputs.new_mem", "outputs.new_cmem", "outputs.loss_attn", "outputs.attention",
            "grads.w_c (compress_mem_fn.conv.weight)", "intermediates.reconstruction_probs"} <= tensors
    assert any("to_kv_detach" in n for n in report.notes)
    assert m.to_kv.weight.requires_grad, "the comparison must leave the user's module as it was"


def test_the_detach_departure_switched_off_names_the_key_value_weights():
    report = compare_module(module(), departures={"to_kv_detach": False})
    assert {r.tensor for r in report.failures} == {"grads.w_k (to_kv.weight[:D])", "grads.w_v (to_kv.weight[D:])"}
    assert all("detach_" in r.note for r in report.failures)


def test_a_broken_conv_layout_fails_at_the_compression():
    m = module()
    broken = copy.deepcopy(m)
    inner = broken.compress_mem_fn.conv.forward
    broken.compress_mem_fn.conv.forward = lambda mem: inner(mem.flip(-1))  # the memory rows read in reverse order
    params = state_dict_to_oracle(m)
    report = compare_module(broken)
    assert not report.passed
    assert "outputs.new_cmem" in {r.tensor for r in report.failures}
    assert report.first_disagreement == "intermediates.reconstruction_probs"
    assert "outputs.attention" not in {r.tensor for r in report.failures}
    assert set(oracle_to_state_dict(params, m)) == set(dict(m.named_parameters()))


def test_preconditions_are_named():
    with pytest.raises(ValueError, match="train"):
        compare_module(module().eval())
    with pytest.raises(ValueError, match="mem_len"):
        compare_module(lucid.SelfAttention(12, 6, 9, 5, cmem_ratio=3, heads=3).double().train())
