"""What this machine is: Python, PyTorch, CPU, threads and accelerators.

Introduced in ``00_welcome.ipynb`` (the set-up check); the benchmarks name the machine with it.
"""

from __future__ import annotations

import os
import platform
import sys

import torch

__all__ = ["environment_report", "cpu_name"]


def cpu_name() -> str:
    """The processor's model name, as the OS reports it."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment_report() -> dict:
    """A dict describing this machine: versions, CPU, threads, CUDA / MPS devices."""
    report = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "cuda_devices": [],
        "mps": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
    }
    if report["cuda"]:
        report["cuda_devices"] = [
            torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
        ]
    return report
