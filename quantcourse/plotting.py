"""Figures the course draws more than once.

Introduced in ``02_scale_and_zero_point.ipynb``. Matplotlib is imported on first use, so
importing ``quantcourse`` stays fast.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from .affine import QParams

__all__ = ["plot_quant_grid", "plot_error_vs_bits"]


def plot_quant_grid(x: torch.Tensor, qp: QParams, ax=None, *, bins: int = 120, title: str = ""):
    """Histogram of ``x`` with the quantization grid of a per-tensor ``qp`` drawn over it.

    Grid levels are drawn as thin lines when there are at most 64 of them; the range the grid
    cannot reach (values that get clipped) is shaded.
    """
    import matplotlib.pyplot as plt

    if qp.scale.numel() != 1:
        raise ValueError("plot_quant_grid: draws per-tensor QParams only")
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3))
    values = x.detach().float().reshape(-1).cpu().numpy()
    ax.hist(values, bins=bins, color="tab:blue", alpha=0.7, label="values")
    s, z = float(qp.scale), int(qp.zero_point)
    lo, hi = s * (qp.qmin - z), s * (qp.qmax - z)
    if qp.qmax - qp.qmin + 1 <= 64:
        for level in range(qp.qmin, qp.qmax + 1):
            ax.axvline(s * (level - z), color="tab:orange", lw=0.6, alpha=0.8)
    ax.axvline(lo, color="tab:red", lw=1.2, label="grid ends")
    ax.axvline(hi, color="tab:red", lw=1.2)
    xmin, xmax = min(values.min(), lo), max(values.max(), hi)
    pad = 0.02 * (xmax - xmin + 1e-12)
    ax.axvspan(xmin - pad, lo, color="tab:red", alpha=0.08)
    ax.axvspan(hi, xmax + pad, color="tab:red", alpha=0.08)
    ax.set_xlim(xmin - pad, xmax + pad)
    ax.set_xlabel("value")
    ax.set_ylabel("count")
    ax.set_title(title or f"{qp.qmax - qp.qmin + 1} levels, scale {s:.3g}, zero point {z}")
    ax.legend(loc="upper right", fontsize=8)
    return ax


def plot_error_vs_bits(
    bits: Sequence[int],
    errors: Mapping[str, Sequence[float]],
    ax=None,
    *,
    ylabel: str = "mean squared error",
    logy: bool = True,
    title: str = "",
):
    """One line per entry of ``errors`` (label to values), against bit width."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    for label, values in errors.items():
        if len(values) != len(bits):
            raise ValueError(f"plot_error_vs_bits: {label!r} has {len(values)} values for "
                             f"{len(bits)} bit widths")
        ax.plot(list(bits), list(values), marker="o", label=label)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("bits")
    ax.set_ylabel(ylabel)
    ax.set_xticks(list(bits))
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    return ax
