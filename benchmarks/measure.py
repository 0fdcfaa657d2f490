"""Timing and peak-memory measurement of one forward + backward.

Time: the median of ``repeats`` wall-clock runs after one warm-up run; :func:`interleaved` times
the oracle and its peers in turns, so that both see the same machine load.

Memory, two methods (docs/performance.md explains the choice):

* ``tracemalloc`` peak for the oracle on NumPy: NumPy reports its data buffers to
  tracemalloc, so this is the peak of bytes allocated during the run above what
  existed before it (the case and its cotangents are not counted).
* peak resident set size (``VmHWM``) above the resident size at the start, for both the
  oracle and PyTorch: PyTorch's CPU allocator does not report to tracemalloc. Linux lets a
  process reset its own high-water mark (``echo 5 > /proc/self/clear_refs``), so each
  measurement runs in this process, after a reset, with no subprocess per measurement.
"""

from __future__ import annotations

import gc
import re
import statistics
import time
import tracemalloc
from typing import Callable

MiB = 2.0 ** 20


def median_time(run: Callable[[], None], repeats: int, sync: Callable[[], None] = lambda: None, *,
                min_seconds: float = 0.25, max_repeats: int = 200) -> float:
    """Median seconds of at least ``repeats`` calls of ``run`` after one warm-up call.

    Fast runs repeat until ``min_seconds`` have passed (at most ``max_repeats`` runs), so that a
    millisecond operation is the median of many samples, not of three scheduler accidents.
    """
    run()
    sync()
    times: list[float] = []
    gc.collect()
    while len(times) < repeats or (sum(times) < min_seconds and len(times) < max_repeats):
        start = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved(runs: dict[str, Callable[[], None]], repeats: int, sync: Callable[[], None] = lambda: None, *,
                min_seconds: float = 0.25, max_repeats: int = 200,
                clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Median seconds of each run, timed in turns (A B C A B C ...) after one warm-up call each.

    On a shared machine the load changes within seconds; taking the sides in turns exposes them to
    the same load, so their ratio is steadier than that of two medians taken one after the other.
    Rounds repeat until every side has ``repeats`` samples and the rounds took ``min_seconds``.
    ``clock``: wall time by default; :func:`cpu_clock` for one-thread runs on a shared machine.
    """
    for run in runs.values():
        run()
        sync()
    times: dict[str, list[float]] = {name: [] for name in runs}
    gc.collect()
    spent = 0.0
    while True:
        for name, run in runs.items():
            start = clock()
            run()
            sync()
            times[name].append(clock() - start)
            spent += times[name][-1]
        n = len(next(iter(times.values())))
        if n >= max_repeats or (n >= repeats and spent >= min_seconds):
            return {name: statistics.median(t) for name, t in times.items()}


def cpu_clock() -> float:
    """CPU seconds of this process (user + system, every thread).

    With one thread per side this is the run's own work, page faults included, without the time it
    waited for a core: on a machine shared by several busy processes, wall time of a millisecond
    run mostly measures the scheduler (a 10 ms layer norm took 60 to 230 ms of wall time at load 12).
    """
    return time.process_time()


def traced_peak(run: Callable[[], None]) -> float:
    """Peak bytes traced by tracemalloc during ``run`` (allocations made before it are not counted)."""
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return float(peak - base)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        match = re.search(rf"^{field}:\s+(\d+) kB", fh.read(), re.MULTILINE)
    if match is None:
        raise OSError(f"no {field} in /proc/self/status")
    return int(match.group(1))


def rss_available() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        _status_kib("VmHWM")
        return True
    except OSError:
        return False


def rss_peak(run: Callable[[], None]) -> float:
    """Peak resident bytes during ``run`` above the resident bytes at its start (nan where unsupported)."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset VmHWM to the current VmRSS
        base = _status_kib("VmRSS")
    except OSError:
        return float("nan")
    run()
    return float(_status_kib("VmHWM") - base) * 1024.0
