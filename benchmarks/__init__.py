"""Speed and memory benchmarks of the oracle against PyTorch eager autograd.

``python -m benchmarks`` times forward + backward of every registered mechanism on
NumPy (float32 and float64) beside an equivalent PyTorch CPU autograd run with the
same thread count, and measures the peak memory of each. See docs/performance.md.

The thread count is fixed before NumPy's BLAS starts: importing this package sets
the usual ``*_NUM_THREADS`` variables to ``$BENCH_THREADS`` (default: all cores)
unless they are already set, and ``OMP_WAIT_POLICY=PASSIVE`` likewise.
"""

from __future__ import annotations

import os

THREADS = int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1))
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, str(THREADS))
# OpenMP threads that spin while waiting (GNU OpenMP's default) collapse when the machine is shared
# (PyTorch took 1 s for a 1 ms tiny attention under load): sleep instead, unless told otherwise.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
