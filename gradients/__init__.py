"""Numerical differentiation, gradient checking and cross-implementation comparison.

Works on any callable, not only the oracle's mechanisms::

    from gradients import check_gradients
    report = check_gradients(fn, grad_fn, {"x": x, "w": w})
    assert report.passed, report.table()
"""

from .check import Report, TensorResult, check_forward_backward, check_gradients, check_mechanism
from .numerical import complex_step_gradient, directional_derivative, numerical_gradient

__all__ = ["Report", "TensorResult", "check_gradients", "check_forward_backward", "check_mechanism",
           "numerical_gradient", "directional_derivative", "complex_step_gradient"]
