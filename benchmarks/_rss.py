"""One peak-RSS measurement in a fresh process: ``python -m benchmarks._rss NAME DTYPE SIDE BATCH``.

Prints the peak resident bytes of one forward + backward above the resident bytes before it
(SIDE: oracle or torch). A fresh process is needed because a second run reuses pages the
first one touched, so an in-process RSS peak undercounts (the table's RSS columns)."""

from __future__ import annotations

import sys

import numpy as np

from . import cases, measure
from .cases import patched, sizing
from .run import _cotangents, _heads_of


def main() -> None:
    name, dtype, side, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    cases.B = batch
    import torch  # imported before the baseline on both sides, so its own pages are not counted

    torch.set_num_threads(1)
    from reference.backend import namespace
    from reference.registry import get

    mechanism = get(name)
    sized = sizing(name)
    forward = sized.forward or mechanism.forward
    backward = sized.backward or mechanism.backward
    with patched(sized.patch):
        case = (sized.build or (lambda m, s, d, x: m.example(s, d, x)))(mechanism, 0, getattr(np, dtype),
                                                                        namespace("numpy"))
        outputs, _ = forward(case)
        cot = _cotangents(outputs, 0)
        del outputs
        if side == "oracle":
            def run() -> None:
                _, cache = forward(case)
                backward(cache, cot)
        else:
            from .torch_eq import torch_runner

            _, run = torch_runner(name, forward, case, cot, n_heads=_heads_of(name, False))
        print(int(measure.rss_peak(run)))


if __name__ == "__main__":
    main()
