"""Timing helpers: medians of repeated runs, and paired runs against a baseline.

Introduced in ``14_int8_kernels_and_hardware.ipynb``; ``python -m quantcourse.bench`` times
everything with them. Report timings as ratios to a baseline measured in the same run.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

__all__ = ["time_median", "time_paired"]


def time_median(fn: Callable[[], object], *, repeat: int = 15, warmup: int = 3,
                device: str = "cpu") -> float:
    """Median wall time of ``fn()`` in seconds, synchronising CUDA around each call."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_paired(fn: Callable[[], object], baseline: Callable[[], object], *, repeat: int = 15,
                warmup: int = 3, device: str = "cpu") -> tuple[float, float]:
    """Median times of ``fn`` and ``baseline``, run alternately so drift hits both alike."""
    for _ in range(warmup):
        fn()
        baseline()
    pairs = [(time_median(fn, repeat=1, warmup=0, device=device),
              time_median(baseline, repeat=1, warmup=0, device=device))
             for _ in range(repeat)]
    return statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
