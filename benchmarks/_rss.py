"""One peak-RSS measurement in a fresh process: ``python -m benchmarks._rss NAME DTYPE SIDE BATCH``.

Prints the peak resident bytes of one forward + backward above the resident bytes before it
(SIDE: oracle or torch). A fresh process is needed because a second run reuses pages the
first one touched, so an in-process RSS peak undercounts (the table's RSS columns)."""

from __future__ import annotations

import sys

import numpy as np

from . import measure
from .cases import benchmark_case
from .run import _cotangents, _peer_runner


def main() -> None:
    name, dtype, side, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    import torch  # imported before the baseline on both sides, so its own pages are not counted

    torch.set_num_threads(1)
    from reference.backend import namespace
    from reference.registry import get

    mechanism = get(name)
    case, _ = benchmark_case(mechanism, 0, getattr(np, dtype), namespace("numpy"), batch=batch)
    outputs, _ = mechanism.forward(case)
    cot = _cotangents(outputs, 0)
    del outputs
    if side == "oracle":
        def run() -> None:
            _, cache = mechanism.forward(case)
            mechanism.backward(cache, cot)
    else:
        peer = _peer_runner(mechanism, case, cot, dtype)
        if peer is None:
            from .torch_eq import torch_runner

            peer = torch_runner(name, mechanism.forward, case, cot, idiomatic=False)
        _, run = peer
    print(int(measure.rss_peak(run)))


if __name__ == "__main__":
    main()
