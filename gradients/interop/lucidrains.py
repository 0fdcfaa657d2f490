"""lucidrains' ``compressive-transformer-pytorch`` (0.4.0, the version the test extra pins) against the oracle.

::

    from compressive_transformer_pytorch.compressive_transformer_pytorch import SelfAttention
    from gradients.interop.lucidrains import compare_module

    module = SelfAttention(12, 6, 6, 5, cmem_ratio=3, heads=3).double().train()
    print(compare_module(module).table())

:func:`compare_module` compares one ``SelfAttention`` module (its attention,
memory update and reconstruction loss; the rest of lucidrains' layer, pre-LN, GRU
gating and learned relative positions, is another function) with
``architecture.compressive.conv`` at the module's sizes, its own weights
(:func:`state_dict_to_oracle`, :func:`oracle_to_state_dict`) and the oracle's
seeded segment and memories:

* ``outputs.attention``: the module's output against the oracle's attention
  sublayer over ``[cmem; mem; x]`` (Eq. 1, causal over the segment);
* ``outputs.new_mem``, ``outputs.new_cmem``: the FIFO update and the conv
  compression (Eqs. 3-5); ``outputs.loss_attn``: the attention-reconstruction
  loss (Alg. 2; lucidrains' ``F.mse_loss``, the oracle's ``reduction="mean"``);
* ``intermediates.attention_probs`` and ``intermediates.reconstruction_probs``
  (read from the inputs of the module's dropout layers), in forward order;
* the gradient of ``c_a . attention + c_l loss_attn`` (the oracle's seeded
  cotangents) with respect to the segment, both memories and every parameter,
  taken by autograd through :func:`torch.func.functional_call` on leaves in the
  module's own layout, converted to the oracle's.

The module needs ``mem_len == seq_len``: lucidrains reconstructs the whole
previous memory (l.275), the paper the evicted rows, which are the same
rows only then. Known departures (:data:`DEPARTURES`), applied to the oracle's
side and listed in the report's notes:

* ``to_kv_detach``: ``self.to_kv.weight.detach_()`` (l.269) runs in place on the
  key/value weight during every training forward, so it stops requiring grad
  and no gradient, the main network's included, reaches it (the paper stops only
  the reconstruction loss's). The oracle's ``w_k``, ``w_v`` gradients are then
  zero; with the departure off the rows fail with "no gradient reached".
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from reference.architecture.compressive import CompressiveState, compressive_layer_backward, compressive_layer_forward
from reference.nn.attention import ATTENTION_PARAMS, causal_mask, mha_backward, mha_forward
from reference.random import random_cotangents

from ..compare import ComparisonReport, ComparisonResult, compare_arrays, user_case

__all__ = ["DEPARTURES", "compare_module", "state_dict_to_oracle", "oracle_to_state_dict"]

MECHANISM = "architecture.compressive.conv"

DEPARTURES = {
    "to_kv_detach": "lucidrains' SelfAttention calls self.to_kv.weight.detach_() in every training forward "
                    "(compressive_transformer_pytorch.py l.269): no gradient reaches the key/value weight, the main "
                    "network's included; the oracle's w_k and w_v gradients are set to zero",
}


#: oracle key -> the module's parameter it comes from (row labels).
NAMES = {"w_q": "to_q.weight", "w_k": "to_kv.weight[:D]", "w_v": "to_kv.weight[D:]", "w_o": "to_out.weight",
         "b_o": "to_out.bias", "w_c": "compress_mem_fn.conv.weight", "b_c": "compress_mem_fn.conv.bias"}


def _torch():
    import torch

    return torch


def _width(module: Any) -> int:
    return module.to_q.in_features


def state_dict_to_oracle(module: Any) -> dict[str, Any]:
    """The attention and compression weights in the oracle's layout (float64 NumPy): w_q, w_k, w_v, w_o, b_o,
    w_c (K, D_in, D_out) and b_c; zero b_q, b_k, b_v (lucidrains' projections have no bias)."""
    d = _width(module)
    s = {k: v.detach().cpu().double().numpy() for k, v in module.state_dict().items()}
    zeros = np.zeros(d)
    return {"w_q": s["to_q.weight"].T, "b_q": zeros, "w_k": s["to_kv.weight"][:d].T, "b_k": zeros,
            "w_v": s["to_kv.weight"][d:].T, "b_v": zeros, "w_o": s["to_out.weight"].T, "b_o": s["to_out.bias"],
            "w_c": np.transpose(s["compress_mem_fn.conv.weight"], (2, 1, 0)), "b_c": s["compress_mem_fn.conv.bias"]}


def oracle_to_state_dict(params: Mapping[str, Any], module: Any) -> dict[str, Any]:
    """The oracle's parameters as the module's state dict (torch tensors; differentiable in torch params)."""
    torch = _torch()
    t = {k: v if isinstance(v, torch.Tensor) else torch.from_numpy(np.asarray(v)) for k, v in params.items()}
    return {"to_q.weight": t["w_q"].T, "to_kv.weight": torch.cat([t["w_k"].T, t["w_v"].T], dim=0),
            "to_out.weight": t["w_o"].T, "to_out.bias": t["b_o"],
            "compress_mem_fn.conv.weight": t["w_c"].permute(2, 1, 0), "compress_mem_fn.conv.bias": t["b_c"]}


def _grads_to_oracle(grads: Mapping[str, Any], d: int) -> dict[str, Any]:
    """Gradients in the module's layout (None: not reached) -> the oracle's keys."""
    def host(name: str, fn=lambda g: g) -> Any:
        g = grads.get(name)
        return None if g is None else fn(g.detach().double().numpy())

    return {"w_q": host("to_q.weight", np.transpose), "w_k": host("to_kv.weight", lambda g: g[:d].T),
            "w_v": host("to_kv.weight", lambda g: g[d:].T), "w_o": host("to_out.weight", np.transpose),
            "b_o": host("to_out.bias"), "w_c": host("compress_mem_fn.conv.weight", lambda g: g.transpose(2, 1, 0)),
            "b_c": host("compress_mem_fn.conv.bias")}


def _config(module: Any, batch: int) -> dict[str, Any]:
    if not module.training:
        raise ValueError("lucidrains computes the reconstruction loss only in training mode: call module.train()")
    rates = {n: m.p for n, m in module.named_modules() if isinstance(m, _torch().nn.Dropout) and m.p > 0}
    if rates:
        raise ValueError(f"dropout is random and not compared: set these rates to 0: {rates}")
    if module.mem_len != module.seq_len:
        raise ValueError(f"mem_len={module.mem_len} must equal seq_len={module.seq_len}: lucidrains reconstructs the "
                         f"whole previous memory, the paper the {module.seq_len} evicted rows")
    return {"batch": batch, "seq_len": module.seq_len, "n_mem": module.mem_len, "n_cmem": module.cmem_len,
            "d_model": _width(module), "n_heads": module.heads, "kind": "conv", "rate": module.cmem_ratio,
            "reduction": "mean", "recon_scale": "head", "eviction": "fifo", "score_bias": False, "dropout": 0.0}


def _oracle(case: Any, applied: set[str], seed: int) -> tuple[dict, dict, dict, dict]:
    """Outputs, cotangents, gradients and intermediates of the oracle at the case."""
    c, xp = case.config, np
    h, mem, cmem = case.inputs["h"], case.inputs["mem"], case.inputs["cmem"]
    z = xp.concat([cmem, mem, h], axis=1)  # (B, S, D)   Eq. (1): attend over [cm; m; h]
    mask = causal_mask(c.seq_len, z.shape[1], xp=xp, offset=c.n_cmem + c.n_mem)  # (T, S)
    a, attention = mha_forward(h, z, {k: case.params[k] for k in ATTENTION_PARAMS}, n_heads=c.n_heads, mask=mask)
    out, cache = compressive_layer_forward(h, CompressiveState(mem, cmem, case.static["usage"]), case.params,
                                           c.layer())
    outputs = {"attention": a, "new_mem": out.state.mem, "new_cmem": out.state.cmem, "loss_attn": out.loss_attn}
    cot = random_cotangents({"attention": a, "loss_attn": out.loss_attn}, seed)
    dh_q, dz, grads_attn = mha_backward(cot["attention"], attention)
    _, _, _, grads_layer = compressive_layer_backward(xp.zeros_like(out.y), cot["loss_attn"], cache)
    n = c.n_cmem + c.n_mem
    grads = {"h": dh_q + dz[:, n:], "mem": dz[:, c.n_cmem:n], "cmem": dz[:, :c.n_cmem],
             **{k: grads_attn[k] for k in ("w_q", "w_k", "w_v", "w_o", "b_o")},
             "w_c": grads_layer["w_c"], "b_c": grads_layer["b_c"]}
    if "to_kv_detach" in applied:
        grads["w_k"], grads["w_v"] = np.zeros_like(grads["w_k"]), np.zeros_like(grads["w_v"])
    named = {"attention_probs": attention.attention.softmax.p,
             "reconstruction_probs": cache.reconstruction.attention.softmax.p}
    return outputs, cot, grads, named


def _module_side(module: Any, case: Any, cot: Mapping[str, Any]) -> tuple[dict, dict, dict]:
    torch = _torch()
    dtype = next(module.parameters()).dtype
    leaf = lambda a: torch.tensor(np.asarray(a), dtype=dtype, requires_grad=True)  # noqa: E731
    inputs = {k: leaf(case.inputs[k]) for k in ("h", "mem", "cmem")}
    state = {k: leaf(v.detach().double().numpy()) for k, v in oracle_to_state_dict(case.params, module).items()}
    seen: dict[str, list[Any]] = {"attn_dropout": [], "reconstruction_attn_dropout": []}
    hooks = [getattr(module, name).register_forward_hook(lambda m, args, out, name=name: seen[name].append(args[0]))
             for name in seen]
    try:
        y, memory, aux = torch.func.functional_call(module, state, (inputs["h"],),
                                                    {"memories": (inputs["mem"], inputs["cmem"])})
    finally:
        for hook in hooks:
            hook.remove()
    aux = aux.reshape(())
    loss = (torch.sum(torch.from_numpy(np.asarray(cot["attention"])).to(dtype) * y)
            + torch.from_numpy(np.asarray(cot["loss_attn"])).to(dtype) * aux)
    leaves = {**inputs, **state}
    live = {k: v for k, v in leaves.items() if v.requires_grad}  # to_kv.weight: detached in place by the module
    got = torch.autograd.grad(loss, list(live.values()), allow_unused=True)
    g = dict(zip(live, got))
    grads = {"h": g.get("h"), "mem": g.get("mem"), "cmem": g.get("cmem")}
    grads = {k: None if v is None else v.detach().double().numpy() for k, v in grads.items()}
    grads.update(_grads_to_oracle(g, _width(module)))
    host = lambda t: t.detach().double().numpy()  # noqa: E731
    outputs = {"attention": host(y), "new_mem": host(memory.mem), "new_cmem": host(memory.compressed_mem),
               "loss_attn": host(aux)}
    named = {}
    if seen["attn_dropout"]:
        named["attention_probs"] = host(seen["attn_dropout"][0])
    if len(seen["reconstruction_attn_dropout"]) == 2:  # full_attn over old_mem, then over f_c(old_mem)
        named["reconstruction_probs"] = host(seen["reconstruction_attn_dropout"][1])
    return outputs, grads, named


def compare_module(module: Any, *, batch: int = 2, seed: int = 0, departures: Mapping[str, bool] | None = None,
                   rtol: float | None = None, atol: float | None = None) -> ComparisonReport:
    """Compare lucidrains' ``SelfAttention`` (training mode, zero dropout) with the oracle; see the module docs.

    departures: ``{"to_kv_detach": False}`` to compare without the known departure (a real difference then).
    """
    if not any(cls.__name__ == "SelfAttention" for cls in type(module).__mro__):
        raise TypeError(f"compare_module supports lucidrains' SelfAttention; got {type(module).__name__}")
    unknown = sorted(set(departures or {}) - set(DEPARTURES))
    if unknown:
        raise ValueError(f"unknown departures {unknown}; lucidrains' are {sorted(DEPARTURES)}")
    applied = {n for n in DEPARTURES if (departures or {}).get(n, True)}
    case = user_case(MECHANISM, seed=seed, config=_config(module, batch), params=state_dict_to_oracle(module))
    expected, cot, grads, named = _oracle(case, applied, seed)
    outputs, got, got_named = _module_side(module, case, cot)

    report = ComparisonReport(mode="compare", backend="torch", dtype="float64")
    inter = compare_arrays(MECHANISM, {k: v for k, v in named.items() if k in got_named}, got_named,
                           rtol=rtol, atol=atol, prefix="intermediates.")
    report.extend(inter)
    report.first_disagreement = next((r.tensor for r in inter.results if not r.passed), None)
    report.extend(compare_arrays(MECHANISM, expected, outputs, rtol=rtol, atol=atol, prefix="outputs."))
    for key, value in grads.items():
        label = f"grads.{key}"
        if got.get(key) is not None:
            report.extend(compare_arrays(MECHANISM, {key: value}, {key: got[key]}, rtol=rtol, atol=atol,
                                         prefix="grads."))
        elif not np.any(value):
            report.results.append(ComparisonResult(MECHANISM, label, tuple(np.shape(value)), 0.0, 0.0, "-", None,
                                                   None, True, "no gradient reached it; the oracle's is zero too"))
        else:
            report.results.append(ComparisonResult(
                MECHANISM, label, tuple(np.shape(value)), float("inf"), float("inf"), "-", None, None, False,
                f"no gradient reached {key}" + (" (to_kv.weight.detach_() in the module's forward)"
                                                if key in ("w_k", "w_v") else "")))
    for r in report.results:
        key = r.tensor.partition(".")[2]
        if r.tensor.startswith("grads.") and key in NAMES:
            r.tensor = f"grads.{key} ({NAMES[key]})"
    report.notes = [f"{type(module).__name__} compared as {MECHANISM} (attention sublayer, memory update, "
                    f"reconstruction loss)"] + [f"departure applied to the oracle: {n}: {DEPARTURES[n]}"
                                                for n in sorted(applied)] + [
        "b_q, b_k, b_v: lucidrains' projections have no bias; the oracle's are zero and not compared"]
    return report
