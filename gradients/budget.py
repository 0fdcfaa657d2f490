"""Error budgets for implementations that run in low precision (float32, bfloat16, float16).

A float32 attention cannot match a float64 oracle to 1e-10, and a fixed float32
tolerance is a guess: it is too loose for a small tensor and too tight for a long
reduction. So a low-precision comparison measures each tensor's error twice,
against the same reference:

* the **reference** is the float64 oracle, run on the very inputs the other side
  receives (the float64 case rounded to the low dtype and widened back, so the
  reference is the exact answer for those inputs; the cotangents are rounded the
  same way);
* the **yardstick** is the oracle's own algorithm run in the other side's dtype,
  on torch tensors, on the other side's device (the readable array-API code,
  through array-api-compat), on those same rounded inputs;
* the **other side** is the implementation under test, in its dtype.

The rule
--------
With ``err(x) = max |x - reference|`` over the tensor's elements::

    err(other) <= k * err(yardstick) + floor,    floor = eps(dtype) * max(1, max |reference|)

``k = 2`` for outputs and intermediates, ``k = 3`` for gradients. This is
FlashAttention's rule: its tests assert that the output error against a
reference is at most twice the error of a PyTorch implementation in the same
precision, and the dq, dk, dv errors at most three times
(``tests/test_flash_attn.py`` of Dao-AILab/flash-attention, lines 1121 and
1130-1132 of ``test_flash_attn_output`` at commit 0251105a2fb1); its causal
test uses 2 for both plus an absolute floor of 1e-5 (lines 1556-1560).

Why ours is this: an implementation that is correct but sums in another order
(a fused kernel, ``F.scaled_dot_product_attention``, a different association of
the matmuls) has an error of the same size as the yardstick's, not the same
error, and the yardstick's maximum is one draw of a random quantity; a
backward chains more reductions than a forward, hence FlashAttention's larger
factor for gradients, which we keep. FlashAttention's reference is float32 and
its floor is absolute; ours is float64 (so the yardstick's error is measured,
not estimated) and the floor is one unit of the dtype at the tensor's scale,
because below one rounding of its largest element no error is measurable in
that dtype, and a tensor the yardstick happens to get exactly right (a
gradient zero by structure) must not demand exactness from the other side.

A bug is not hidden by the rule: a weight gradient off by 1e-3 relative is
hundreds of times the float32 yardstick's error (the tests plant one). In
bfloat16 (eps 7.8e-3) an error below the dtype's own rounding cannot be seen
by any rule; the report's ratio column shows how close each tensor came.

Discrete outputs (bucket ids, decisions) count differing elements instead:
``n_wrong(other) <= k * n_wrong(yardstick)``, so a bucket that legitimately
flips in float32 is allowed as often as the oracle's own float32 run flips it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .check import TensorResult

__all__ = ["Budget", "BudgetResult", "LOW_DTYPES", "EPS", "judge_budget", "torch_dtype"]

#: The dtypes a budgeted comparison accepts for the other side.
LOW_DTYPES = ("float32", "bfloat16", "float16")

#: Machine epsilon (spacing of the dtype at 1.0).
EPS = {"float32": 2.0 ** -23, "bfloat16": 2.0 ** -7, "float16": 2.0 ** -10}


@dataclass(frozen=True)
class Budget:
    """The factors of the rule (module docstring): ``err(other) <= k * err(yardstick) + floor``."""

    #: k for outputs and intermediates (FlashAttention: 2).
    outputs: float = 2.0
    #: k for gradients (FlashAttention's test_flash_attn_output: 3).
    grads: float = 3.0
    #: The floor in units of eps(dtype) * max(1, max |reference|).
    floor_eps: float = 1.0

    def factor(self, tensor: str) -> float:
        return self.grads if tensor.startswith("grads.") else self.outputs


@dataclass
class BudgetResult(TensorResult):
    """A tensor under the budget: the other side's error, the yardstick's, and what was allowed."""

    yardstick_error: float = 0.0
    allowed: float = 0.0
    k: float = 0.0

    @property
    def ratio(self) -> float:
        """err(other) / err(yardstick) (``inf`` when the yardstick is exact and the other side is not)."""
        if self.yardstick_error == 0.0:
            return 0.0 if self.max_abs_error == 0.0 else math.inf
        return self.max_abs_error / self.yardstick_error

    def describe(self) -> str:
        if self.note and not math.isfinite(self.max_abs_error):
            return f"{self.mechanism}: {self.tensor}: {self.note}"
        verdict = "within" if self.passed else "breaks"
        return (f"{self.mechanism}: {self.tensor}{list(self.shape)} {verdict} the budget: error {self.max_abs_error:.3g} "
                f"against the float64 oracle, the yardstick's {self.yardstick_error:.3g} (ratio {self.ratio:.3g}), "
                f"allowed {self.allowed:.3g} = {self.k:g} x yardstick + floor; worst element {self.worst}: "
                f"other {self.analytic!r}, oracle {self.numeric!r}" + (f" ({self.note})" if self.note else ""))


def _scalar(v: Any) -> Any:
    return complex(v) if np.iscomplexobj(v) else float(v)


def judge_budget(mechanism: str, tensor: str, reference: np.ndarray, yardstick: np.ndarray, other: np.ndarray,
                 dtype: str, budget: Budget) -> BudgetResult:
    """One tensor under the rule of the module docstring (host arrays, already widened to 64 bits)."""
    shape = tuple(reference.shape)
    k = budget.factor(tensor)
    if reference.dtype.kind in "biu":
        wrong_other = int(np.sum(other != reference))
        wrong_yard = int(np.sum(yardstick != reference))
        allowed = k * wrong_yard
        first = tuple(int(i) for i in np.argwhere(other != reference)[0]) if wrong_other else "-"
        note = "" if wrong_other == 0 else f"{wrong_other} discrete values differ (the yardstick: {wrong_yard})"
        return BudgetResult(mechanism, tensor, shape, float(wrong_other), float(wrong_other), str(first), None, None,
                            wrong_other <= allowed, note, float(wrong_yard), float(allowed), k)
    if reference.size == 0:
        return BudgetResult(mechanism, tensor, shape, 0.0, 0.0, "-", None, None, True, "", 0.0, 0.0, k)
    finite = bool(np.all(np.isfinite(other)))
    err_other = np.abs(other - reference).reshape(-1)
    err_yard = float(np.max(np.abs(yardstick - reference)))
    scale = max(1.0, float(np.max(np.abs(reference))))
    allowed = k * err_yard + budget.floor_eps * EPS[dtype] * scale
    worst = int(np.argmax(np.where(np.isfinite(err_other), err_other, np.inf)))
    label = str(tuple(int(i) for i in np.unravel_index(worst, shape))) if shape else "()"
    e = float(np.max(err_other)) if finite else math.inf
    rel = e / scale
    note = "" if finite else "non-finite value where the oracle's is finite"
    return BudgetResult(mechanism, tensor, shape, e, rel, label, _scalar(other.reshape(-1)[worst]),
                        _scalar(reference.reshape(-1)[worst]), finite and e <= allowed, note, err_yard, allowed, k)


def torch_dtype(name: str, complex_: bool = False) -> Any:
    """The torch dtype for a dtype name (the complex one of the same width for complex arrays)."""
    import torch

    if complex_:
        table = {"float64": torch.complex128, "float32": torch.complex64}
        if name not in table:
            raise ValueError(f"complex arrays have no {name} form in torch; compare complex mechanisms in "
                             f"float64 or float32")
        return table[name]
    return {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16,
            "float16": torch.float16}[name]
