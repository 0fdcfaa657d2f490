"""Tolerance tables shared by the gradient checker, the comparisons and the fixtures.

They live here, below both ``gradients/`` and the fixture exporter, because
``reference/`` never imports ``gradients/``.
"""

from __future__ import annotations

__all__ = ["TOLERANCES", "COMPARE_TOLERANCES"]

#: Finite-difference checks, per dtype: rtol on each element, atol relative to the tensor's
#: scale, and the rounding floor relative to max(1, |L|).
TOLERANCES: dict[str, dict[str, float]] = {
    "float64": {"rtol": 1e-6, "atol": 1e-7, "floor": 1e-10},
    "float32": {"rtol": 3e-2, "atol": 1e-2, "floor": 1e-4},
}

#: Comparing two implementations (not finite differences): two float64 codes that agree to
#: rounding differ by ~1e-15 relative.
COMPARE_TOLERANCES: dict[str, dict[str, float]] = {
    "float64": {"rtol": 1e-10, "atol": 1e-12},
    "float32": {"rtol": 1e-4, "atol": 1e-5},
}
