"""Compare a JAX implementation with the oracle: ``jax.vjp`` in float64, JAX's complex convention converted.

:func:`compare_jax` is :func:`~gradients.compare.compare_torch` for JAX: the same
configuration, the same user arrays, the same report. The function is
differentiated with ``jax.vjp``. The comparison enables 64-bit JAX
(``jax_enable_x64``) for the call, so that float64 means float64, and restores
the previous setting afterwards.

Complex gradients. For the real loss ``L = sum_k Re(sum(conj(c_k) * F_k))``,
``jax.vjp`` fed the cotangent ``conj(c_k)`` for each complex output returns
JAX's convention, ``dL/dRe(z) - i dL/dIm(z)`` (what ``jax.grad`` returns);
:func:`gradients.complex.from_jax` (one conjugation) turns it into the oracle's,
PyTorch's ``dL/dRe(z) + i dL/dIm(z)``. For real leaves the two coincide. The
report's notes say which applied.

A gradient JAX computes as exactly zero where the oracle's is not (a function
that closes over its own copy of the weights, ``jax.lax.stop_gradient``) is
reported as "no gradient reached", with that cause.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import numpy as np

from reference.config import Config
from reference.registry import Mechanism

from .budget import Budget
from .compare import (
    ComparisonReport,
    _call,
    _judge,
    _map_arrays,
    _mechanism,
    _Other,
    _plan,
    _real_dtype_name,
    _split,
    sweep,
)
from .complex import from_jax

__all__ = ["compare_jax", "sweep_jax", "JAX_NO_GRADIENT_FIX"]

#: The cause and fix printed with a JAX gradient that is zero by a cut graph.
JAX_NO_GRADIENT_FIX = ("usual cause: the function computed with its own copy of the weights instead of the params it "
                       "was given (a module's bound variables, a closure), or jax.lax.stop_gradient; fix: pass the "
                       "given params into the model (module.apply({'params': params}, ...))")


def _jax_device(jax: Any, device: Any) -> Any:
    if device is None or isinstance(device, str):
        platform = {"cuda": "gpu", None: "cpu"}.get(device, device)
        return jax.devices(platform)[0]
    return device


def compare_jax(mechanism_or_name: Mechanism | str, fn: Callable[[dict[str, Any], dict[str, Any], dict[str, Any]], Any],
                *, config: Config | Mapping[str, Any] | None = None, seed: int = 0,
                params: Mapping[str, Any] | None = None, inputs: Mapping[str, Any] | None = None,
                static: Mapping[str, Any] | None = None, dtype: str = "float64", device: Any = None,
                rtol: float | None = None, atol: float | None = None, intermediates: bool = False,
                budget: Budget | None = None, jit: bool = True) -> ComparisonReport:
    """Run the JAX function ``fn(inputs, params, static)`` and compare outputs and ``jax.vjp`` gradients.

    The arguments are :func:`~gradients.compare.compare_torch`'s: ``fn``
    receives dicts of JAX arrays (floating ones in ``dtype``) on ``device``
    (``"cpu"``, ``"gpu"``, or a ``jax.Device``; default the CPU) and returns a dict of
    outputs, optionally with ``"intermediates": {name: array}``. In low
    precision the yardstick is the oracle's algorithm on torch tensors in the
    same dtype, on the CPU, or on CUDA when the JAX device is a GPU.
    ``jit``: the forward and its vjp are compiled as one function (one trace per
    configuration instead of one per operation); ``jit=False`` runs them eagerly,
    for a function with Python control flow on array values.
    """
    import jax
    import jax.numpy as jnp

    mechanism = _mechanism(mechanism_or_name)
    previous = bool(jax.config.read("jax_enable_x64"))
    jax.config.update("jax_enable_x64", True)
    try:
        dev = _jax_device(jax, device)
        torch_device = "cuda" if dev.platform == "gpu" else "cpu"
        plan = _plan(mechanism, config=config, seed=seed, params=params, inputs=inputs, static=static, dtype=dtype,
                     device=torch_device, intermediates=intermediates)
        low = {"float64": jnp.float64, "float32": jnp.float32, "bfloat16": jnp.bfloat16,
               "float16": jnp.float16}[dtype]

        def to_jax(a: Any) -> Any:
            host = np.asarray(a)
            if host.dtype.kind == "c":
                if dtype not in ("float64", "float32"):
                    raise ValueError(f"complex arrays have no {dtype} form; compare complex mechanisms in float64 "
                                     f"or float32")
                target = jnp.complex128 if dtype == "float64" else jnp.complex64
                return jax.device_put(jnp.asarray(host, dtype=target), dev)
            if host.dtype.kind == "f":
                return jax.device_put(jnp.asarray(host, dtype=low), dev)
            return jax.device_put(jnp.asarray(host), dev)

        def host64(x: Any) -> np.ndarray:
            x = jnp.asarray(x)
            if jnp.issubdtype(x.dtype, jnp.complexfloating):
                return np.asarray(x.astype(jnp.complex128))
            if jnp.issubdtype(x.dtype, jnp.floating):
                return np.asarray(x.astype(jnp.float64))
            return np.asarray(x)

        def inexact(x: Any) -> bool:
            return jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)

        arrays_in = {k: to_jax(v) for k, v in plan.case.inputs.items()}
        arrays_params = {k: to_jax(v) for k, v in plan.case.params.items()}
        static_j = _map_arrays(plan.case.static, to_jax)
        diff = {"inputs": {k: v for k, v in arrays_in.items() if inexact(v)},
                "params": {k: v for k, v in arrays_params.items() if inexact(v)}}
        fixed_in = {k: v for k, v in arrays_in.items() if k not in diff["inputs"]}
        fixed_params = {k: v for k, v in arrays_params.items() if k not in diff["params"]}
        cot = plan.reference.cotangents

        def differentiated(d: dict[str, Any]) -> Any:
            outputs, named = _split(_call(fn, plan.case, {**d["inputs"], **fixed_in}, {**d["params"], **fixed_params},
                                          static_j),
                                    plan.reference.outputs, "the JAX function")
            outputs = {k: v for k, v in outputs.items() if v is not None}
            primary = {k: outputs[k] for k in cot if k in outputs and inexact(outputs[k])
                       and tuple(jnp.shape(outputs[k])) == tuple(np.shape(cot[k]))}
            return primary, (outputs, named)

        # conj(c) for complex outputs: the vjp then returns JAX's convention, dL/dRe - i dL/dIm (module docstring).
        shapes = jax.eval_shape(lambda d: differentiated(d)[0], diff)
        cts = {k: (jnp.conj(to_jax(cot[k])) if jnp.issubdtype(v.dtype, jnp.complexfloating) else to_jax(cot[k]))
               .astype(v.dtype) for k, v in shapes.items()}

        def forward_and_vjp(d: dict[str, Any], cotangents: dict[str, Any]) -> Any:
            _, vjp_fn, aux = jax.vjp(differentiated, d, has_aux=True)
            return aux, vjp_fn(cotangents)[0]

        (outputs, named), g = (jax.jit(forward_and_vjp) if jit else forward_and_vjp)(diff, cts)
        flat = {**g["inputs"], **g["params"]}
        complex_leaves = sorted(k for k, v in flat.items() if jnp.iscomplexobj(v))
        grads = {k: host64(from_jax(v) if jnp.iscomplexobj(v) else v) for k, v in flat.items()}
        if complex_leaves:
            note = (f"complex gradients ({', '.join(complex_leaves)}) converted from JAX's convention "
                    f"dL/dRe(z) - i dL/dIm(z) with gradients.complex.from_jax to the oracle's (PyTorch's) "
                    f"dL/dRe(z) + i dL/dIm(z)")
        else:
            note = "real leaves only: JAX's gradient convention and the oracle's coincide (no conversion applied)"
        notes = [note, f"jax.vjp with jax_enable_x64 on for the call (previous setting {previous} restored)"]
        dtypes = {f"outputs.{k}": _real_dtype_name(jnp.asarray(v).dtype) for k, v in outputs.items()}
        dtypes.update({f"intermediates.{k}": _real_dtype_name(jnp.asarray(v).dtype) for k, v in (named or {}).items()})
        other = _Other({k: host64(v) for k, v in outputs.items()}, grads,
                       None if named is None else {k: host64(v) for k, v in named.items()}, dtypes,
                       JAX_NO_GRADIENT_FIX)
        report = _judge(plan, other, rtol=rtol, atol=atol, budget=budget, notes=notes)
        report.backend, report.device = "jax", str(dev)
        return report
    finally:
        jax.config.update("jax_enable_x64", previous)


def sweep_jax(mechanism_or_name: Mechanism | str, fn: Callable[..., Any], configs: Any = None,
              seeds: Iterable[int] = (0, 1, 2), **options: Any) -> ComparisonReport:
    """:func:`compare_jax` at the default and every edge configuration by default (see :func:`~gradients.compare.sweep_torch`)."""
    return sweep(compare_jax, mechanism_or_name, fn, configs=configs, seeds=seeds, **options)
