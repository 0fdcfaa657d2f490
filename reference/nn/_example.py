"""Sizes shared by the building blocks' registered examples (not public API).

Pairwise-distinct, so that a swapped axis raises instead of passing (STYLE.md).
"""

B, T, S, D, H, F, V = 2, 5, 3, 6, 2, 7, 11
