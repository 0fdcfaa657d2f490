"""HuggingFace ``transformers`` modules against the oracle in one call.

::

    from transformers import ReformerConfig
    from transformers.models.reformer.modeling_reformer import LSHSelfAttention
    from gradients.interop.huggingface import compare_module

    module = LSHSelfAttention(ReformerConfig(num_attention_heads=2, attention_head_size=32, hidden_size=64,
                                             num_hashes=4, num_buckets=8, lsh_attn_chunk_length=32,
                                             lsh_num_chunks_after=0, hash_seed=0)).double().eval()
    print(compare_module(module, seq_len=256).table())

:func:`compare_module` reads the mechanism and its configuration from the
module's own ``config`` (sizes, switches), runs the oracle with the module's own
weights (:func:`state_dict_to_oracle`) and its own randomness, runs the module
on the oracle's inputs with :func:`torch.func.functional_call` on tensors made
from the oracle's parameters (:func:`oracle_to_state_dict`, differentiable, so
autograd's gradients reach every parameter of the module), and returns
:func:`gradients.compare.compare_torch`'s report: outputs, every parameter's
gradient (rows ``grads.KEY (hf.parameter.name)``) and the intermediates the module
exposes, in forward order.

Supported (transformers 4.57.6, the version the test extra pins):

* ``LSHSelfAttention`` -> ``attention.lsh``. The module stops before
  ``ReformerAttention``'s output projection, so the oracle's ``w_o`` is applied
  after it (its gradient row is the comparison's own leaf). Randomness: with
  ``config.hash_seed`` set, HF's rotations are reproduced
  (``torch.manual_seed(hash_seed)`` then ``torch.randn((H, d_head, R, nb/2))``,
  modeling_reformer.py l.742-748) and the module hashes itself, its buckets and
  sort permutation compared as intermediates; with ``hash_seed=None`` the
  buckets of a first forward are captured from the module's ``_hash_vectors``
  and passed back as ``buckets=``.
* ``AlbertModel`` -> ``architecture.albert.encoder`` and ``AlbertForPreTraining``
  -> ``architecture.albert``, with ``num_hidden_groups = 1`` (sharing "all") or
  ``= num_hidden_layers`` (sharing "none") and ``inner_group_num = 1``: the groupings
  of HF that are one of the paper's sharing modes.
* ``ElectraForPreTraining`` -> ``objectives.electra.discriminator`` and
  ``ElectraForMaskedLM`` -> ``objectives.electra.generator``.

Known departures of HF from the paper (:data:`DEPARTURES`) are named switches
applied to the oracle's side, all on by default; ``departures={"name": False}``
turns one off. The report's notes list those applied, so a pass means "equal up
to these departures" and a failure is a real difference. When a comparison
fails, every square weight is tried transposed (``diagnose=True``): a weight
whose transpose makes the comparison pass is named in the notes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from reference.registry import Case, Mechanism, get

from ..compare import ComparisonReport, compare_arrays, compare_torch, user_case

__all__ = ["DEPARTURES", "Departure", "compare_module", "parameter_map", "state_dict_to_oracle",
           "oracle_to_state_dict", "supported"]


#: HF's float32 ELECTRA loss against the oracle's float64 value: 16 float32 ulps (2^-24 each) of rounding in
#: its float32 BCE and mean, measured within 1e-7 relative.
LABEL_CAST_RTOL = 16 * 2.0 ** -24


@dataclass(frozen=True)
class Departure:
    """A documented difference between a library and the paper, applied to the oracle's side when on."""

    name: str
    doc: str
    #: Configuration fields the departure sets on the oracle, or module -> those fields.
    config: Mapping[str, Any] | Callable[[Any], Mapping[str, Any]] = field(default_factory=dict)
    #: (module, oracle gradients) -> oracle gradients, for a departure that is no configuration field.
    grads: Callable[[Any, dict[str, Any]], dict[str, Any]] | None = None
    #: (module, case) -> static overrides, for a departure applied through the comparison's inputs.
    static: Callable[[Any, Case], dict[str, Any]] | None = None

    def fields(self, module: Any) -> dict[str, Any]:
        return dict(self.config(module) if callable(self.config) else self.config)


def _pad_id(module: Any) -> int | None:
    return _base(module).embeddings.word_embeddings.padding_idx


def _zero_padding_row(module: Any, grads: dict[str, Any]) -> dict[str, Any]:
    tok = np.array(grads["tok"], copy=True)
    tok[_pad_id(module)] = 0.0
    return {**grads, "tok": tok}


def _ids_without_padding_token(module: Any, case: Case) -> dict[str, Any]:
    ids = np.asarray(case.static["ids"])
    pad = _pad_id(module)
    return {"ids": np.where(ids == pad, (pad + 1) % module.config.vocab_size, ids)}


_PADDING_DOC = ("HF's word embedding is nn.Embedding(..., padding_idx=pad_token_id) (modeling_albert.py l.183, "
                "modeling_electra.py l.137): that token's lookups send no gradient to its row")
DEPARTURES: dict[str, Departure] = {
    "attend_across_buckets": Departure(
        "attend_across_buckets", "HF attends to the whole window, other buckets included: its _attend masks only "
        "causality, padding and the query itself (modeling_reformer.py l.830-915)",
        {"attend_across_buckets": True}),
    "no_duplicate_correction": Departure(
        "no_duplicate_correction", "HF does not subtract log N_ij for a key met in several rounds "
        "(modeling_reformer.py l.915: plain logsumexp of the window)", {"duplicate_correction": False}),
    "padding_idx": Departure("padding_idx", _PADDING_DOC + "; the oracle's row of that token gets zero",
                             grads=_zero_padding_row),
    "hf_label_cast": Departure(
        "hf_label_cast", "HF's ElectraForPreTraining casts the labels with .float() (modeling_electra.py l.1102), "
        "so its loss is computed in float32: its value is compared with the oracle's at float32 precision (row "
        "outputs.disc_loss (HF's float32 loss)), and outputs.disc_loss and every gradient are taken through HF's "
        "own rule (BCE-with-logits over attention_mask == 1, l.1097-1102) on its float64 logits"),
    "gelu_generator_head": Departure(
        "gelu_generator_head", "HF's ElectraGeneratorPredictions uses the exact GELU whatever hidden_act says "
        "(modeling_electra.py l.625)", {"gen_head_activation": "gelu"}),
}
#: padding_idx where the word embedding is also the tied output layer (its output-side gradient stays).
_PADDING_TIED = Departure("padding_idx", _PADDING_DOC + "; the word embedding is also the tied output layer, so "
                          "the comparison keeps that token out of the input ids", static=_ids_without_padding_token)
#: padding_idx through the oracle's own ELECTRA field (input-side gradient dropped, output side kept).
_PADDING_ELECTRA = Departure("padding_idx", _PADDING_DOC + "; the oracle's padding_idx field",
                             config=lambda module: {"padding_idx": _pad_id(module)})


# ------------------------------------------------------------------------------------------------- adapters

@dataclass(frozen=True)
class _Adapter:
    """How one module class maps onto one registered mechanism."""

    mechanism: str
    #: module -> {oracle key: (HF parameter name, stored transposed)}
    parameters: Callable[[Any], dict[str, tuple[str, bool]]]
    #: (module, seq_len, batch) -> the oracle's configuration fields (departures excluded)
    config: Callable[[Any, int, int], dict[str, Any]]
    #: module -> the departures that apply to it
    departures: Callable[[Any], tuple[Departure, ...]]
    #: (module, case) -> (static overrides, run options, notes)
    prepare: Callable[[Any, Case], tuple[dict[str, Any], dict[str, Any], list[str]]]
    #: (module, state, inputs, params, static, options) -> outputs (and "intermediates")
    run: Callable[..., dict[str, Any]]
    #: oracle keys that are no parameter of the module -> why
    extra: Mapping[str, str] = field(default_factory=dict)
    #: (module, params, rows of the oracle's position table or None) -> params: what a name map cannot say
    to_oracle: Callable[[Any, dict[str, Any], int | None], dict[str, Any]] | None = None
    #: (module, state) -> state: the inverse of ``to_oracle`` on the state-dict side
    from_oracle: Callable[[Any, dict[str, Any]], dict[str, Any]] | None = None
    #: module parameters with no oracle counterpart, set by ``from_oracle`` -> why (not compared)
    hf_only: Mapping[str, str] = field(default_factory=dict)


def _numpy():
    from reference.backend import namespace

    return namespace("numpy")


def _torch():
    import torch

    return torch


def _call(module: Any, state: Mapping[str, Any], *args: Any, **kwargs: Any) -> Any:
    return _torch().func.functional_call(module, dict(state), args, kwargs)


# --- LSHSelfAttention

def _lsh_parameters(module: Any) -> dict[str, tuple[str, bool]]:
    return {"w_qk": ("query_key.weight", True), "w_v": ("value.weight", True)}  # nn.Linear stores W^T


def _lsh_config(module: Any, seq_len: int, batch: int) -> dict[str, Any]:
    c = module.config
    if not isinstance(c.num_buckets, int):
        raise ValueError(f"config.num_buckets must be one int (the oracle has no factorised buckets), got "
                         f"{c.num_buckets!r}")
    if (c.lsh_num_chunks_before, c.lsh_num_chunks_after) != (1, 0):
        raise ValueError(f"the oracle's window is a chunk and the one before: config.lsh_num_chunks_before must be 1 "
                         f"and config.lsh_num_chunks_after 0, got {c.lsh_num_chunks_before} and "
                         f"{c.lsh_num_chunks_after}")
    if seq_len <= c.lsh_attn_chunk_length:
        raise ValueError(f"seq_len={seq_len} <= config.lsh_attn_chunk_length={c.lsh_attn_chunk_length}: HF then "
                         f"runs standard self-attention without hashing (modeling_reformer.py l.567); use a longer "
                         f"sequence")
    return {"batch": batch, "seq_len": seq_len, "d_model": c.hidden_size, "n_heads": c.num_attention_heads,
            "d_k": c.attention_head_size, "d_v": c.attention_head_size, "n_hashes": c.num_hashes,
            "n_buckets": c.num_buckets, "chunk_len": c.lsh_attn_chunk_length, "causal": bool(c.is_decoder),
            "hash_margin": 0.0, "stable_rounds": True}


def hf_rotations(module: Any) -> Any:
    """HF's rotations under ``config.hash_seed``, (H, d_head, R, nb/2), drawn as its ``_hash_vectors`` draws them
    (modeling_reformer.py l.742-748); the global torch RNG is restored afterwards."""
    torch = _torch()
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(module.hash_seed)
        dtype = module.query_key.weight.dtype
        return torch.randn((module.num_attention_heads, module.attention_head_size, module.num_hashes,
                            module.num_buckets // 2), dtype=dtype)
    finally:
        torch.random.set_rng_state(state)


def _unoffset(offset_buckets: Any, module: Any, batch: int, seq_len: int) -> Any:
    """HF's (B, H, R L) buckets with round offsets r nb -> the oracle's (B, H, R, L)."""
    torch = _torch()
    r = module.num_hashes
    b = offset_buckets.reshape(batch, module.num_attention_heads, r, seq_len)  # (B, H, R, L)
    return b - module.num_buckets * torch.arange(r).reshape(1, 1, r, 1)


def _lsh_prepare(module: Any, case: Case) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    from reference.attention.lsh import lsh_hash, project_queries

    c = case.config
    x, w_qk = case.inputs["x"], case.params["w_qk"]
    if module.hash_seed is not None:
        rot = hf_rotations(module).detach().double().numpy()  # (H, d_head, R, nb/2)
        rotations = np.broadcast_to(rot[None], (c.batch,) + rot.shape)  # (B, H, d_head, R, nb/2): one for all B
        buckets = lsh_hash(project_queries(x, w_qk, c.n_heads), rotations)  # (B, H, R, L)
        return ({"rotations": rotations, "buckets": buckets}, {"given_buckets": None},
                [f"HF's rotations reproduced from hash_seed={module.hash_seed}; the module hashed itself"])
    torch = _torch()
    seen: dict[str, Any] = {}
    with torch.no_grad(), _hooked(module, "_hash_vectors", seen, "buckets"):
        state = oracle_to_state_dict({"w_qk": torch.from_numpy(np.asarray(w_qk))}, module)
        _call(module, state, torch.from_numpy(np.asarray(x)).to(module.query_key.weight.dtype))
    given = seen["buckets"]
    buckets = _unoffset(given, module, c.batch, c.seq_len).numpy()
    return ({"buckets": buckets}, {"given_buckets": given},
            ["hash_seed is None: the module's buckets were captured from a first forward (its _hash_vectors) and "
             "passed back as buckets=; HF's hashing itself is not compared"])


class _hooked:
    """Record what a module's method returns (first element of a tuple) under ``seen[key]``, for one ``with``."""

    def __init__(self, module: Any, method: str, seen: dict[str, Any], key: str) -> None:
        self.module, self.method, self.seen, self.key = module, method, seen, key

    def __enter__(self) -> None:
        inner = getattr(self.module, self.method)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            out = inner(*args, **kwargs)
            self.seen[self.key] = out[0] if isinstance(out, tuple) else out
            return out

        setattr(self.module, self.method, wrapper)

    def __exit__(self, *exc: Any) -> None:
        delattr(self.module, self.method)


def _lsh_run(module: Any, state: Mapping[str, Any], inputs: Mapping[str, Any], params: Mapping[str, Any],
             static: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    x = inputs["x"]
    given = options["given_buckets"]
    with _hooked(module, "_hash_vectors", seen, "buckets"), \
            _hooked(module, "_get_sorted_bucket_idx_and_undo_sorted_bucket_idx", seen, "perm"):
        context = _call(module, state, x, buckets=given).hidden_states  # (B, L, H d_head)
    y = context @ params["w_o"]  # (B, L, D): ReformerAttention's output projection, the oracle's w_o
    named = {}
    if "buckets" in seen:
        named["buckets"] = _unoffset(seen["buckets"], module, x.shape[0], x.shape[1])
    if "perm" in seen:
        named["perm"] = seen["perm"]
    return {"y": y, "intermediates": named}


_LSH = _Adapter("attention.lsh", _lsh_parameters, _lsh_config,
                lambda m: (DEPARTURES["attend_across_buckets"], DEPARTURES["no_duplicate_correction"]),
                _lsh_prepare, _lsh_run,
                extra={"w_o": "no parameter of LSHSelfAttention: ReformerAttention's output.dense, applied after "
                              "the module by the comparison"})

# --- ALBERT

_ALBERT_BLOCK = {"w_q": "attention.query", "w_k": "attention.key", "w_v": "attention.value",
                 "w_o": "attention.dense", "w_1": "ffn", "w_2": "ffn_output"}
_ALBERT_NORMS = {"ln1": "attention.LayerNorm", "ln2": "full_layer_layer_norm"}
_ALBERT_HEADS = {"pool": "pooler", "sop": "sop_classifier.classifier", "mlm": "predictions.dense"}


def _albert_sharing(c: Any) -> str:
    if c.inner_group_num != 1:
        raise ValueError(f"config.inner_group_num must be 1 (one layer per group), got {c.inner_group_num}")
    if c.num_hidden_groups == 1:
        return "all"
    if c.num_hidden_groups == c.num_hidden_layers:
        return "none"
    raise ValueError(f"config.num_hidden_groups={c.num_hidden_groups} with {c.num_hidden_layers} layers shares "
                     f"layers in runs, no sharing mode of the paper: use 1 (all shared) or num_hidden_layers (none)")


def _albert_parameters(module: Any) -> dict[str, tuple[str, bool]]:
    """oracle key -> (HF name, transposed) for AlbertModel (no prefix) or AlbertForPreTraining (``albert.``)."""
    c = module.config
    top = "albert." if module is not _base(module) else ""
    names = {"tok": (top + "embeddings.word_embeddings.weight", False),
             "pos": (top + "embeddings.position_embeddings.weight", False),
             "seg": (top + "embeddings.token_type_embeddings.weight", False),
             "ln_gamma": (top + "embeddings.LayerNorm.weight", False),
             "ln_beta": (top + "embeddings.LayerNorm.bias", False),
             "proj_w": (top + "encoder.embedding_hidden_mapping_in.weight", True),
             "proj_b": (top + "encoder.embedding_hidden_mapping_in.bias", False)}
    heads = {"pool": top + "pooler"} if _base(module).pooler is not None else {}
    if top:
        heads.update({k: v for k, v in _ALBERT_HEADS.items() if k != "pool"})
        names.update({"mlm_ln_gamma": ("predictions.LayerNorm.weight", False),
                      "mlm_ln_beta": ("predictions.LayerNorm.bias", False),
                      "mlm_out_bias": ("predictions.bias", False)})
    for ours, theirs in heads.items():
        names[f"{ours}_w"], names[f"{ours}_b"] = (f"{theirs}.weight", True), (f"{theirs}.bias", False)
    sharing = _albert_sharing(c)
    groups = [("block_", 0)] if sharing == "all" else [(f"layer{g}_", g) for g in range(c.num_hidden_layers)]
    for prefix, g in groups:
        base = f"{top}encoder.albert_layer_groups.{g}.albert_layers.0."
        for ours, theirs in _ALBERT_BLOCK.items():
            names[prefix + ours] = (base + theirs + ".weight", True)
            names[prefix + "b_" + ours[2:]] = (base + theirs + ".bias", False)
        for ours, theirs in _ALBERT_NORMS.items():
            names[prefix + ours + "_gamma"] = (base + theirs + ".weight", False)
            names[prefix + ours + "_beta"] = (base + theirs + ".bias", False)
    return names


def _albert_config(module: Any, seq_len: int, batch: int) -> dict[str, Any]:
    c = module.config
    if c.hidden_act != "gelu_new":
        raise ValueError(f"the oracle's ALBERT uses the tanh GELU (HF 'gelu_new'); config.hidden_act is "
                         f"{c.hidden_act!r}")
    if c.layer_norm_eps != 1e-12 or c.type_vocab_size != 2 or c.embedding_size == c.hidden_size:
        raise ValueError(f"the oracle's ALBERT has layer_norm_eps 1e-12, type_vocab_size 2 and a projection "
                         f"(embedding_size != hidden_size); got {c.layer_norm_eps}, {c.type_vocab_size}, "
                         f"{c.embedding_size} and {c.hidden_size}")
    out = {"batch": batch, "seq_len": seq_len, "vocab": c.vocab_size, "positions": c.max_position_embeddings,
           "embedding": c.embedding_size, "hidden": c.hidden_size, "n_heads": c.num_attention_heads,
           "d_ff": c.intermediate_size, "n_layers": c.num_hidden_layers, "sharing": _albert_sharing(c),
           "dropout": 0.0}
    if module is _base(module):
        out["pooler"] = module.pooler is not None
    return out


def _eager(module: Any) -> bool:
    return getattr(module.config, "_attn_implementation", "eager") == "eager"


def _albert_run(module: Any, state: Mapping[str, Any], inputs: Mapping[str, Any], params: Mapping[str, Any],
                static: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
    s = static
    heads = module is not _base(module)
    extra = {"labels": s["mlm_targets"], "sentence_order_label": s["sop_labels"]} if heads else {}
    out = _call(module, state, input_ids=s["ids"], attention_mask=s["pad"].long(), token_type_ids=s["segments"],
                output_hidden_states=True, output_attentions=_eager(module), **extra)
    named = {"hidden0": out.hidden_states[0]}
    for layer in range(1, len(out.hidden_states)):
        if out.attentions is not None:
            named[f"layer{layer}.attention_probs"] = out.attentions[layer - 1]
        named[f"hidden{layer}"] = out.hidden_states[layer]
    if heads:
        return {"h": out.hidden_states[-1], "sop_logits": out.sop_logits, "loss": out.loss, "intermediates": named}
    result = {"h": out.last_hidden_state, "intermediates": named}
    if out.pooler_output is not None:
        result["pooled"] = out.pooler_output
    return result


def _no_prepare(module: Any, case: Case) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    return {}, {}, []


def _albert_departures(module: Any) -> tuple[Departure, ...]:
    if _pad_id(module) is None:
        return ()
    return (DEPARTURES["padding_idx"],) if module is _base(module) else (_PADDING_TIED,)


_ALBERT = _Adapter("architecture.albert.encoder", _albert_parameters, _albert_config, _albert_departures,
                   _no_prepare, _albert_run)
_ALBERT_PRETRAINING = dataclasses.replace(_ALBERT, mechanism="architecture.albert")


# --- ELECTRA

_ELECTRA_LAYER = {"w_q": "attention.self.query", "w_k": "attention.self.key", "w_v": "attention.self.value",
                  "w_o": "attention.output.dense", "w_1": "intermediate.dense", "w_2": "output.dense"}
_ELECTRA_NORMS = {"ln1": "attention.output.LayerNorm", "ln2": "output.LayerNorm"}
_ELECTRA_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "relu": "relu"}


def _generator(module: Any) -> bool:
    return hasattr(module, "generator_predictions")


def _electra_parameters(module: Any) -> dict[str, tuple[str, bool]]:
    c = module.config
    prefix = "gen_" if _generator(module) else "disc_"
    m = {"tok": ("electra.embeddings.word_embeddings.weight", False),
         "pos": ("electra.embeddings.position_embeddings.weight", False),
         "emb_ln_gamma": ("electra.embeddings.LayerNorm.weight", False),
         "emb_ln_beta": ("electra.embeddings.LayerNorm.bias", False)}
    if c.embedding_size != c.hidden_size:
        m[prefix + "proj_w"] = ("electra.embeddings_project.weight", True)
        m[prefix + "proj_b"] = ("electra.embeddings_project.bias", False)
    for layer in range(c.num_hidden_layers):
        for ours, theirs in _ELECTRA_LAYER.items():
            m[f"{prefix}layer{layer}_{ours}"] = (f"electra.encoder.layer.{layer}.{theirs}.weight", True)
            m[f"{prefix}layer{layer}_b_{ours[2:]}"] = (f"electra.encoder.layer.{layer}.{theirs}.bias", False)
        for ours, theirs in _ELECTRA_NORMS.items():
            m[f"{prefix}layer{layer}_{ours}_gamma"] = (f"electra.encoder.layer.{layer}.{theirs}.weight", False)
            m[f"{prefix}layer{layer}_{ours}_beta"] = (f"electra.encoder.layer.{layer}.{theirs}.bias", False)
    if _generator(module):
        m.update({"gen_head_w": ("generator_predictions.dense.weight", True),
                  "gen_head_b": ("generator_predictions.dense.bias", False),
                  "gen_head_ln_gamma": ("generator_predictions.LayerNorm.weight", False),
                  "gen_head_ln_beta": ("generator_predictions.LayerNorm.bias", False),
                  "gen_out_bias": ("generator_lm_head.bias", False)})
    else:
        m.update({"disc_head_w": ("discriminator_predictions.dense.weight", True),
                  "disc_head_b": ("discriminator_predictions.dense.bias", False),
                  "disc_cls_w": ("discriminator_predictions.dense_prediction.weight", True),
                  "disc_cls_b": ("discriminator_predictions.dense_prediction.bias", False)})
    return m


def _electra_config(module: Any, seq_len: int, batch: int) -> dict[str, Any]:
    c = module.config
    if c.hidden_act not in _ELECTRA_ACTIVATIONS:
        raise ValueError(f"config.hidden_act must be one of {sorted(_ELECTRA_ACTIVATIONS)}, got {c.hidden_act!r}")
    if getattr(c, "position_embedding_type", "absolute") != "absolute" or seq_len > c.max_position_embeddings:
        raise ValueError(f"the oracle's ELECTRA has absolute positions for seq_len={seq_len} "
                         f"<= config.max_position_embeddings={c.max_position_embeddings}")
    width = {"batch": batch, "seq_len": seq_len, "vocab": c.vocab_size, "width": c.embedding_size,
             "n_layers": c.num_hidden_layers, "activation": _ELECTRA_ACTIVATIONS[c.hidden_act],
             "eps": c.layer_norm_eps}
    sizes = {"d_gen": c.hidden_size, "n_heads_gen": c.num_attention_heads, "ff_gen": c.intermediate_size}
    if not _generator(module):
        sizes = {"d_disc": c.hidden_size, "n_heads_disc": c.num_attention_heads, "ff_disc": c.intermediate_size}
    return {**width, **sizes}


def _electra_to_oracle(module: Any, params: dict[str, Any], rows: int | None) -> dict[str, Any]:
    """Token type 0 folded into the positions (the oracle has no segment table; HF adds row 0 everywhere),
    the position table cut to the oracle's ``rows``."""
    tt = module.electra.embeddings.token_type_embeddings.weight.detach().double().numpy()
    pos = params["pos"] + tt[0]
    return {**params, "pos": pos if rows is None else pos[:rows]}


def _electra_from_oracle(module: Any, state: dict[str, Any]) -> dict[str, Any]:
    torch = _torch()
    emb = module.electra.embeddings
    name = "electra.embeddings.position_embeddings.weight"
    if name in state:
        own = emb.position_embeddings.weight.detach().to(state[name].dtype)
        state[name] = torch.cat([state[name], own[state[name].shape[0]:]], dim=0)
    state["electra.embeddings.token_type_embeddings.weight"] = torch.zeros_like(emb.token_type_embeddings.weight)
    return state


def _electra_departures(module: Any) -> tuple[Departure, ...]:
    own = DEPARTURES["gelu_generator_head" if _generator(module) else "hf_label_cast"]
    return ((_PADDING_ELECTRA,) if _pad_id(module) is not None else ()) + (own,)


def _electra_run(module: Any, state: Mapping[str, Any], inputs: Mapping[str, Any], params: Mapping[str, Any],
                 static: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
    torch = _torch()
    s = static
    prefix = "gen_" if _generator(module) else "disc_"
    if _generator(module):
        labels = torch.where(s["masked"], s["ids"], torch.full_like(s["ids"], -100))
        out = _call(module, state, input_ids=s["generator_ids"], attention_mask=s["pad"].long(), labels=labels,
                    output_hidden_states=True)
        result = {"mlm_loss": out.loss, "logits": out.logits}
    else:
        out = _call(module, state, input_ids=s["corrupted"], attention_mask=s["pad"].long(), labels=s["labels"],
                    output_hidden_states=True)
        loss = out.loss
        if "hf_label_cast" in options["departures"]:
            # HF's own rule in the logits' dtype (BCE-with-logits over attention_mask == 1, modeling_electra.py
            # l.1097-1102): a loss computed in float32 has float32 values and gradients, which no float64
            # comparison can judge; HF's own float32 loss gets a row of its own.
            active = s["pad"].reshape(-1)
            rule = torch.nn.functional.binary_cross_entropy_with_logits(
                out.logits.reshape(-1)[active], s["labels"].reshape(-1)[active].to(out.logits.dtype))
            options["hf_loss"] = out.loss.detach()
            loss = rule
        result = {"disc_loss": loss, "scores": out.logits}
    names = [f"{prefix}embeddings"] + [f"{prefix}layer{layer}" for layer in range(len(out.hidden_states) - 1)]
    result["intermediates"] = dict(zip(names, out.hidden_states))
    return result


def _electra_mechanism(module: Any) -> str:
    return "objectives.electra.generator" if _generator(module) else "objectives.electra.discriminator"


_ELECTRA_GENERATOR = _Adapter("objectives.electra.generator", _electra_parameters, _electra_config,
                              _electra_departures, _no_prepare, _electra_run,
                              to_oracle=_electra_to_oracle, from_oracle=_electra_from_oracle,
                              hf_only={"electra.embeddings.token_type_embeddings.weight":
                                       "folded into the position table (row 0 is added at every position); "
                                       "its gradient is not compared"})
_ELECTRA_DISCRIMINATOR = dataclasses.replace(_ELECTRA_GENERATOR, mechanism="objectives.electra.discriminator")

_ADAPTERS: dict[str, _Adapter] = {"LSHSelfAttention": _LSH, "AlbertModel": _ALBERT,
                                  "AlbertForPreTraining": _ALBERT_PRETRAINING,
                                  "ElectraForPreTraining": _ELECTRA_DISCRIMINATOR,
                                  "ElectraForMaskedLM": _ELECTRA_GENERATOR}


def supported() -> tuple[str, ...]:
    """The module classes :func:`compare_module` knows."""
    return tuple(_ADAPTERS)


def _adapter(module: Any) -> _Adapter:
    for cls in type(module).__mro__:
        if cls.__name__ in _ADAPTERS:
            return _ADAPTERS[cls.__name__]
    raise TypeError(f"compare_module supports {', '.join(_ADAPTERS)}; got {type(module).__name__}")


def _base(module: Any) -> Any:
    """The encoder module under a model's head (``module.albert``, ``module.electra``), or the module itself."""
    return getattr(module, getattr(module, "base_model_prefix", ""), module)


# ------------------------------------------------------------------------------------------ weight conversion

def parameter_map(module: Any) -> dict[str, tuple[str, bool]]:
    """``{oracle key: (parameter name in module.state_dict(), stored transposed)}`` for a supported module."""
    return _adapter(module).parameters(module)


def state_dict_to_oracle(module: Any, mapping: Mapping[str, tuple[str, bool]] | None = None, *,
                         position_rows: int | None = None) -> dict[str, Any]:
    """The module's weights in the oracle's layout: float64 NumPy arrays keyed like the mechanism's params.

    ELECTRA: HF's token-type row 0 (added at every position) is folded into the position table, cut to
    ``position_rows`` rows when given (the oracle's ELECTRA case has seq_len + 2)."""
    adapter = _adapter(module)
    mapping = parameter_map(module) if mapping is None else mapping
    state = module.state_dict()
    out = {}
    for key, (name, transposed) in mapping.items():
        value = state[name].detach().cpu().double().numpy()
        out[key] = np.ascontiguousarray(value.T if transposed else value)
    return out if adapter.to_oracle is None else adapter.to_oracle(module, out, position_rows)


def oracle_to_state_dict(params: Mapping[str, Any], module: Any,
                         mapping: Mapping[str, tuple[str, bool]] | None = None) -> dict[str, Any]:
    """The oracle's parameters as the module's state-dict entries (torch tensors; differentiable when the
    params are torch leaves, so ``functional_call`` on the result sends gradients back to them). Keys the
    mapping does not hold (the LSH ``w_o``) are skipped."""
    torch = _torch()
    adapter = _adapter(module)
    mapping = parameter_map(module) if mapping is None else mapping
    out = {}
    for key, (name, transposed) in mapping.items():
        if key not in params:
            continue
        value = params[key] if isinstance(params[key], torch.Tensor) else torch.from_numpy(np.asarray(params[key]))
        out[name] = value.T if transposed else value
    return out if adapter.from_oracle is None else adapter.from_oracle(module, out)


# ------------------------------------------------------------------------------------------------ the comparison

def _check_mapping(module: Any, adapter: _Adapter, mapping: Mapping[str, tuple[str, bool]],
                   mechanism_params: Mapping[str, Any]) -> None:
    names = {n for n, _ in module.named_parameters()}
    unmapped = sorted(names - {n for n, _ in mapping.values()} - set(adapter.hf_only))
    if unmapped:
        raise ValueError(f"{type(module).__name__}: parameters with no oracle counterpart: {unmapped}")
    missing = sorted(set(mechanism_params) - set(mapping) - set(adapter.extra))
    if missing:
        raise ValueError(f"{adapter.mechanism} parameters the module does not give: {missing}")


def _departures(adapter: _Adapter, module: Any, switches: Mapping[str, bool] | None) -> list[Departure]:
    known = adapter.departures(module)
    unknown = sorted(set(switches or {}) - {d.name for d in known})
    if unknown:
        raise ValueError(f"departures {unknown} do not apply to {type(module).__name__}; its own are "
                         f"{[d.name for d in known]}")
    return [d for d in known if (switches or {}).get(d.name, True)]


def _with_grad_departures(mechanism: Mechanism, module: Any, applied: list[Departure]) -> Mechanism:
    fixes = [d.grads for d in applied if d.grads is not None]
    if not fixes:
        return mechanism

    def backward(cache: Any, cot: dict[str, Any]) -> dict[str, Any]:
        grads = dict(mechanism.backward(cache, cot))
        for fix in fixes:
            grads = fix(module, grads)
        return grads

    return dataclasses.replace(mechanism, backward=backward)


def _compare_once(module: Any, adapter: _Adapter, mechanism: Mechanism, config: dict[str, Any],
                  mapping: Mapping[str, tuple[str, bool]], applied: list[Departure], *, seed: int, dtype: str,
                  intermediates: bool, rtol: float | None, atol: float | None) -> tuple[ComparisonReport, list[str]]:
    rows = None
    if adapter.to_oracle is not None:  # the oracle's table sizes
        rows = int(mechanism.example(seed, np.float64, _numpy(), config).params["pos"].shape[0])
    params = state_dict_to_oracle(module, mapping, position_rows=rows)
    case = user_case(mechanism, seed=seed, config=config, params=params)
    _check_mapping(module, adapter, mapping, case.params)
    static, options, notes = adapter.prepare(module, case)
    options = {**options, "departures": {d.name for d in applied}}
    for d in applied:
        if d.static is not None:
            static = {**static, **d.static(module, case)}

    def fn(inputs: dict[str, Any], leaves: dict[str, Any], static_t: dict[str, Any]) -> dict[str, Any]:
        state = oracle_to_state_dict(leaves, module, mapping)
        return adapter.run(module, state, inputs, leaves, static_t, options)

    report = compare_torch(mechanism, fn, config=config, seed=seed, params=params, static=static or None,
                           dtype=dtype, intermediates=intermediates, rtol=rtol, atol=atol)
    if "hf_loss" in options:  # HF's own float32 loss against the oracle's value, at float32 precision
        oracle = next(r.numeric for r in report.results if r.tensor == "outputs.disc_loss")
        if oracle is not None:
            row = compare_arrays(mechanism.name, {"disc_loss": np.asarray(oracle)},
                                 {"disc_loss": options["hf_loss"].double().numpy()}, rtol=LABEL_CAST_RTOL, atol=0.0)
            row.results[0].tensor = "outputs.disc_loss (HF's float32 loss)"
            report.results.append(row.results[0])
    return report, notes


def compare_module(module: Any, *, seq_len: int, batch: int = 2, seed: int = 0,
                   departures: Mapping[str, bool] | None = None, intermediates: bool = True,
                   diagnose: bool = True, rtol: float | None = None, atol: float | None = None) -> ComparisonReport:
    """Compare a supported HuggingFace module, at its own configuration and weights, with the oracle.

    seq_len, batch: the input sizes (the module's config gives the rest).
    departures: ``{name: False}`` to compare without one of the module's known departures (:data:`DEPARTURES`).
    intermediates: compare what the module exposes (LSH buckets and sort permutation, hidden states).
    diagnose: on failure, try each square weight transposed and name one that makes the comparison pass.
    The module must be in eval mode (dropout is not compared); its parameters' dtype is the comparison's.
    """
    if module.training:
        raise ValueError(f"{type(module).__name__} is in training mode; call module.eval() (dropout is random "
                         f"and not compared)")
    adapter = _adapter(module)
    applied = _departures(adapter, module, departures)
    config = {**adapter.config(module, seq_len, batch)}
    for d in applied:
        config.update(d.fields(module))
    mechanism = _with_grad_departures(get(adapter.mechanism), module, applied)
    dtype = str(next(module.parameters()).dtype).split(".")[-1]
    mapping = parameter_map(module)
    options = dict(seed=seed, dtype=dtype, intermediates=intermediates, rtol=rtol, atol=atol)
    report, notes = _compare_once(module, adapter, mechanism, config, mapping, applied, **options)
    if report.failures and diagnose:
        state = module.state_dict()
        for key, (name, transposed) in mapping.items():
            shape = tuple(state[name].shape)
            if transposed and len(shape) == 2 and shape[0] == shape[1]:
                flipped = {**mapping, key: (name, False)}
                trial, _ = _compare_once(module, adapter, mechanism, config, flipped, applied, **options)
                if not trial.failures:
                    notes.append(f"diagnosis: {name} ({key}) is used transposed by the module: the comparison "
                                 f"passes when it is read untransposed")
    for r in report.results:
        group, _, key = r.tensor.partition(".")
        if group == "grads" and key in mapping:
            r.tensor = f"grads.{key} ({mapping[key][0]})"
        elif group == "grads" and key in adapter.extra:
            r.tensor = f"grads.{key} (the comparison's own leaf)"
    report.notes[:0] = [f"{type(module).__name__} compared as {adapter.mechanism}"] + [
        f"departure applied to the oracle: {d.name}: {d.doc}" for d in applied] + notes + [
        f"{key}: {why}" for key, why in {**adapter.extra, **adapter.hf_only}.items()]
    return report
