"""Bad input to the building blocks raises ValueError or TypeError naming the argument.

Wrong rank, mismatched shapes, NaN or inf, an integer array where a float is
due, a float where integers are due, out-of-range ids, a non-broadcastable
mask, a missing parameter. Each case asserts the exception type and that the
message names the offending argument (and, where it applies, the expected shape).
Runs on every backend of the ``xp`` fixture.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

from reference.nn.attention import init_attention, mha_forward, sdpa_forward
from reference.nn.bert_embeddings import bert_embeddings_forward, init_bert_embeddings
from reference.nn.conv1d import depthwise_conv1d_forward
from reference.nn.decoder_layer import decoder_layer_forward, init_decoder_layer
from reference.nn.dropout import dropout_forward
from reference.nn.embedding import embedding_forward
from reference.nn.encoder_layer import encoder_layer_forward, init_encoder_layer
from reference.nn.feed_forward import feed_forward_forward, init_feed_forward
from reference.nn.gelu import activation_forward
from reference.nn.layer_norm import layer_norm_forward
from reference.nn.linear import linear_forward
from reference.nn.losses import cross_entropy_forward, sigmoid_bce_forward
from reference.nn.mlm_head import init_mlm_head, mlm_head_forward
from reference.nn.softmax import log_softmax_forward, softmax_forward
from reference.nn.text_encoder import init_text_encoder, text_encoder_forward
from reference.validate import require_broadcastable


class Make:
    """Small arrays on one backend: ``f`` floats, ``i`` integers in [0, 3), ``nan`` floats with one NaN."""

    def __init__(self, xp: Any) -> None:
        self.xp, self.rng = xp, np.random.default_rng(0)

    def f(self, *shape: int) -> Any:
        return self.xp.asarray(self.rng.standard_normal(shape), dtype=self.xp.float64)

    def i(self, *shape: int) -> Any:
        return self.xp.asarray(self.rng.integers(0, 3, shape), dtype=self.xp.int64)

    def nan(self, *shape: int, value: float = np.nan) -> Any:
        host = self.rng.standard_normal(shape)
        host.flat[min(1, host.size - 1)] = value
        return self.xp.asarray(host, dtype=self.xp.float64)

    def ids(self, values: list) -> Any:
        return self.xp.asarray(values, dtype=self.xp.int64)

    def bools(self, *shape: int) -> Any:
        return self.xp.ones(shape, dtype=self.xp.bool)

    def params(self, init: Callable, *args: int) -> dict[str, Any]:
        return init(np.random.default_rng(1), *args, xp=self.xp, dtype=self.xp.float64)


def _without(params: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k != key}


# name: (call(m) -> None, exception type, words the message must contain)
CASES: dict[str, tuple[Callable[[Make], Any], type, list[str]]] = {
    # linear
    "linear integer x": (lambda m: linear_forward(m.i(2, 5), m.f(5, 7), m.f(7)), TypeError, ["x", "floating"]),
    "linear w rank": (lambda m: linear_forward(m.f(2, 5), m.f(5), m.f(7)), ValueError, ["w", "(d_in, d_out)"]),
    "linear x width": (lambda m: linear_forward(m.f(2, 4), m.f(5, 7), m.f(7)), ValueError, ["x", "d_in", "5"]),
    "linear b shape": (lambda m: linear_forward(m.f(2, 5), m.f(5, 7), m.f(5)), ValueError, ["b", "d_out", "7"]),
    "linear NaN x": (lambda m: linear_forward(m.nan(2, 5), m.f(5, 7), m.f(7)), ValueError, ["x", "NaN"]),
    "linear inf w": (lambda m: linear_forward(m.f(2, 5), m.nan(5, 7, value=np.inf), m.f(7)), ValueError, ["w", "inf"]),
    # layer norm
    "layer_norm gamma shape": (lambda m: layer_norm_forward(m.f(2, 5), m.f(4), m.f(5)), ValueError, ["gamma", "5"]),
    "layer_norm beta shape": (lambda m: layer_norm_forward(m.f(2, 5), m.f(5), m.f(2, 5)), ValueError, ["beta"]),
    "layer_norm integer x": (lambda m: layer_norm_forward(m.i(2, 5), m.f(5), m.f(5)), TypeError, ["x"]),
    "layer_norm NaN x": (lambda m: layer_norm_forward(m.nan(2, 5), m.f(5), m.f(5)), ValueError, ["x", "NaN"]),
    "layer_norm NaN gamma": (lambda m: layer_norm_forward(m.f(2, 5), m.nan(5), m.f(5)), ValueError, ["gamma"]),
    "layer_norm eps zero": (lambda m: layer_norm_forward(m.f(2, 5), m.f(5), m.f(5), eps=0.0), ValueError, ["eps"]),
    "layer_norm eps negative": (lambda m: layer_norm_forward(m.f(2, 5), m.f(5), m.f(5), eps=-1e-5), ValueError,
                                ["eps"]),
    "layer_norm eps NaN": (lambda m: layer_norm_forward(m.f(2, 5), m.f(5), m.f(5), eps=float("nan")), ValueError,
                           ["eps"]),
    "layer_norm eps string": (lambda m: layer_norm_forward(m.f(2, 5), m.f(5), m.f(5), eps="1e-5"), TypeError, ["eps"]),
    # activations, softmax, dropout
    "activation kind": (lambda m: activation_forward(m.f(3), "swish"), ValueError, ["kind", "swish"]),
    "activation integer x": (lambda m: activation_forward(m.i(3)), TypeError, ["x"]),
    "activation NaN x": (lambda m: activation_forward(m.nan(3), "gelu_tanh"), ValueError, ["x", "NaN"]),
    "softmax integer z": (lambda m: softmax_forward(m.i(3)), TypeError, ["z"]),
    "softmax NaN z": (lambda m: softmax_forward(m.nan(2, 3)), ValueError, ["z", "NaN"]),
    "log_softmax inf z": (lambda m: log_softmax_forward(m.nan(2, 3, value=-np.inf)), ValueError, ["z"]),
    "dropout mask shape": (lambda m: dropout_forward(m.f(2, 5), m.f(2, 3)), ValueError, ["mask", "(2, 5)", "(2, 3)"]),
    "dropout mask rank": (lambda m: dropout_forward(m.f(5), m.f(2, 5)), ValueError, ["mask"]),
    "dropout integer x": (lambda m: dropout_forward(m.i(2, 5), m.f(2, 5)), TypeError, ["x"]),
    "dropout NaN x": (lambda m: dropout_forward(m.nan(2, 5), None), ValueError, ["x", "NaN"]),
    # embedding
    "embedding id too large": (lambda m: embedding_forward(m.ids([0, 9]), m.f(7, 3)), ValueError, ["ids", "[0, 7)"]),
    "embedding negative id": (lambda m: embedding_forward(m.ids([0, -1]), m.f(7, 3)), ValueError, ["ids", "[0, 7)"]),
    "embedding float ids": (lambda m: embedding_forward(m.f(2), m.f(7, 3)), TypeError, ["ids", "integer"]),
    "embedding table rank": (lambda m: embedding_forward(m.i(2), m.f(7)), ValueError, ["table", "(vocab, dim)"]),
    "embedding NaN table": (lambda m: embedding_forward(m.i(2), m.nan(7, 3)), ValueError, ["table", "NaN"]),
    # losses
    "cross_entropy targets shape": (lambda m: cross_entropy_forward(m.f(2, 3, 5), m.i(2, 4)), ValueError,
                                    ["targets", "(2, 3)"]),
    "cross_entropy target range": (lambda m: cross_entropy_forward(m.f(2, 5), m.ids([1, 7])), ValueError,
                                   ["targets", "[0, 5)"]),
    "cross_entropy float targets": (lambda m: cross_entropy_forward(m.f(2, 5), m.f(2)), TypeError, ["targets"]),
    "cross_entropy NaN logits": (lambda m: cross_entropy_forward(m.nan(2, 5), m.i(2)), ValueError, ["logits"]),
    "sigmoid_bce targets shape": (lambda m: sigmoid_bce_forward(m.f(2, 5), m.f(2, 4)), ValueError, ["targets"]),
    "sigmoid_bce weights shape": (lambda m: sigmoid_bce_forward(m.f(2, 5), m.f(2, 5), m.f(5)), ValueError,
                                  ["weights"]),
    "sigmoid_bce integer logits": (lambda m: sigmoid_bce_forward(m.i(2, 5), m.f(2, 5)), TypeError, ["logits"]),
    "sigmoid_bce NaN targets": (lambda m: sigmoid_bce_forward(m.f(2, 5), m.nan(2, 5)), ValueError, ["targets"]),
    # depthwise convolution
    "conv1d x rank": (lambda m: depthwise_conv1d_forward(m.f(5, 3), m.f(3, 4)), ValueError, ["x", "(batch, seq, channels)"]),
    "conv1d w channels": (lambda m: depthwise_conv1d_forward(m.f(2, 5, 3), m.f(4, 4)), ValueError, ["w", "channels"]),
    "conv1d bias shape": (lambda m: depthwise_conv1d_forward(m.f(2, 5, 3), m.f(3, 4), m.f(4)), ValueError, ["bias"]),
    "conv1d padding": (lambda m: depthwise_conv1d_forward(m.f(2, 5, 3), m.f(3, 4), padding="same"), ValueError,
                       ["padding", "same"]),
    "conv1d integer x": (lambda m: depthwise_conv1d_forward(m.i(2, 5, 3), m.f(3, 4)), TypeError, ["x"]),
    "conv1d NaN x": (lambda m: depthwise_conv1d_forward(m.nan(2, 5, 3), m.f(3, 4)), ValueError, ["x", "NaN"]),
    # attention
    "sdpa k width": (lambda m: sdpa_forward(m.f(2, 5, 4), m.f(2, 3, 3), m.f(2, 3, 4)), ValueError, ["k", "(2, 3, 3)"]),
    "sdpa v length": (lambda m: sdpa_forward(m.f(2, 5, 4), m.f(2, 3, 4), m.f(2, 2, 4)), ValueError, ["v", "(2, 2, 4)"]),
    "sdpa float mask": (lambda m: sdpa_forward(m.f(2, 5, 4), m.f(2, 3, 4), m.f(2, 3, 4), mask=m.f(5, 3)), TypeError,
                        ["mask", "boolean"]),
    "sdpa mask shape": (lambda m: sdpa_forward(m.f(2, 5, 4), m.f(2, 3, 4), m.f(2, 3, 4), mask=m.bools(4, 3)),
                        ValueError, ["mask", "(2, 5, 3)", "(4, 3)"]),
    "sdpa bias shape": (lambda m: sdpa_forward(m.f(2, 5, 4), m.f(2, 3, 4), m.f(2, 3, 4), bias=m.f(4, 3)),
                        ValueError, ["bias", "(4, 3)"]),
    "sdpa dropout shape": (lambda m: sdpa_forward(m.f(2, 5, 4), m.f(2, 3, 4), m.f(2, 3, 4), dropout_mask=m.f(5, 2)),
                           ValueError, ["dropout_mask"]),
    "sdpa NaN q": (lambda m: sdpa_forward(m.nan(2, 5, 4), m.f(2, 3, 4), m.f(2, 3, 4)), ValueError, ["q", "NaN"]),
    "mha x_q rank": (lambda m: mha_forward(m.f(5, 6), m.f(2, 3, 6), m.params(init_attention, 6), n_heads=2),
                     ValueError, ["x_q", "(batch, seq, d_model)"]),
    "mha x_kv width": (lambda m: mha_forward(m.f(2, 5, 6), m.f(2, 3, 4), m.params(init_attention, 6), n_heads=2),
                       ValueError, ["x_kv", "d_model"]),
    "mha heads": (lambda m: mha_forward(m.f(2, 5, 6), m.f(2, 3, 6), m.params(init_attention, 6), n_heads=4),
                  ValueError, ["n_heads=4"]),
    "mha missing param": (lambda m: mha_forward(m.f(2, 5, 6), m.f(2, 3, 6), _without(m.params(init_attention, 6), "w_o"),
                                                n_heads=2), ValueError, ["params", "w_o"]),
    "mha integer x_q": (lambda m: mha_forward(m.i(2, 5, 6), m.f(2, 3, 6), m.params(init_attention, 6), n_heads=2),
                        TypeError, ["x", "floating"]),
    # composed blocks
    "feed_forward missing param": (lambda m: feed_forward_forward(m.f(2, 5, 6), _without(m.params(init_feed_forward, 6, 7),
                                                                                        "b_2")), ValueError, ["params", "b_2"]),
    "feed_forward x width": (lambda m: feed_forward_forward(m.f(2, 5, 4), m.params(init_feed_forward, 6, 7)), ValueError,
                             ["x", "6"]),
    "encoder_layer missing param": (lambda m: encoder_layer_forward(
        m.f(2, 5, 6), _without(m.params(init_encoder_layer, 6, 7), "ln2_beta"), n_heads=2), ValueError,
        ["params", "ln2_beta"]),
    "encoder_layer x rank": (lambda m: encoder_layer_forward(m.f(5, 6), m.params(init_encoder_layer, 6, 7), n_heads=2),
                             ValueError, ["x_q"]),
    "decoder_layer missing param": (lambda m: decoder_layer_forward(
        m.f(2, 5, 6), m.f(2, 3, 6), _without(m.params(init_decoder_layer, 6, 7), "cross_w_q"), n_heads=2), ValueError,
        ["params", "cross_w_q"]),
    "decoder_layer source width": (lambda m: decoder_layer_forward(m.f(2, 5, 6), m.f(2, 3, 4),
                                                                   m.params(init_decoder_layer, 6, 7), n_heads=2),
                                   ValueError, ["x_kv", "d_model"]),
    "bert_embeddings ids rank": (lambda m: bert_embeddings_forward(m.i(5), m.params(init_bert_embeddings, 7, 6, 3)),
                                 ValueError, ["ids", "(batch, seq)"]),
    "bert_embeddings id range": (lambda m: bert_embeddings_forward(m.ids([[0, 9]]), m.params(init_bert_embeddings, 7, 6, 3)),
                                 ValueError, ["ids", "[0, 7)"]),
    "bert_embeddings too long": (lambda m: bert_embeddings_forward(m.i(2, 7), m.params(init_bert_embeddings, 7, 6, 3)),
                                 ValueError, ["pos", "seq=7"]),
    "bert_embeddings no seg table": (lambda m: bert_embeddings_forward(m.i(2, 5), m.params(init_bert_embeddings, 7, 6, 3),
                                                                       segments=m.i(2, 5)), ValueError, ["seg"]),
    "mlm_head table width": (lambda m: mlm_head_forward(m.f(2, 5, 6), m.params(init_mlm_head, 6, 3, 7), m.f(7, 4)),
                             ValueError, ["table", "(vocab, dim)"]),
    "mlm_head table rows": (lambda m: mlm_head_forward(m.f(2, 5, 6), m.params(init_mlm_head, 6, 3, 7), m.f(5, 3)),
                            ValueError, ["out_bias", "5"]),
    "text_encoder integer pad": (lambda m: text_encoder_forward(m.i(2, 5), m.i(2, 5), m.params(init_text_encoder, 7, 6, 3, 4, 5),
                                                                n_heads=2), TypeError, ["pad", "boolean"]),
    "text_encoder pad shape": (lambda m: text_encoder_forward(m.i(2, 5), m.bools(2, 4),
                                                              m.params(init_text_encoder, 7, 6, 3, 4, 5), n_heads=2),
                               ValueError, ["pad", "(2, 5)"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_names_the_argument(case: str, xp) -> None:
    call, error, words = CASES[case]
    with pytest.raises(error) as info:
        call(Make(xp))
    message = str(info.value)
    missing = [w for w in words if w not in message]
    assert not missing, f"{case}: message {message!r} does not mention {missing}"


def test_require_broadcastable(xp) -> None:
    x = xp.zeros((1, 3, 1))
    assert require_broadcastable("m", x, ["B", "T", "S"], (2, 3, 5)) is None  # accepted: no error
    assert require_broadcastable("m", xp.zeros((5,)), ["B", "T", "S"], (2, 3, 5)) is None
    for shape in [(2, 3), (1, 1, 2, 3, 5), (3, 3, 5)]:
        with pytest.raises(ValueError, match=r"m must broadcast to \(B, T, S\) = \(2, 3, 5\)"):
            require_broadcastable("m", xp.zeros(shape), ["B", "T", "S"], (2, 3, 5))


def test_good_input_still_passes(xp) -> None:
    """The validation does not reject what the blocks accept: broadcast masks and biases, ignored targets."""
    m = Make(xp)
    out, _ = sdpa_forward(m.f(2, 2, 5, 4), m.f(2, 2, 3, 4), m.f(2, 2, 3, 4), mask=m.bools(2, 1, 1, 3),
                          bias=m.f(1, 2, 5, 3), dropout_mask=m.f(2, 2, 5, 3))
    assert tuple(out.shape) == (2, 2, 5, 4) and bool(xp.all(xp.isfinite(out)))
    y, _ = dropout_forward(m.f(2, 5), m.f(5))  # a (5,) mask broadcasts over the batch
    assert tuple(y.shape) == (2, 5)
    loss, _ = cross_entropy_forward(m.f(2, 5), m.ids([-100, 4]))  # one ignored target, one counted
    assert loss.ndim == 0 and bool(xp.isfinite(loss))
