"""PyTorch's fbgemm (x86) quantized engine, wrapped: availability, prepack, dynamic linear.

Introduced in ``14_int8_kernels_and_hardware.ipynb``; ``qlinear.FbgemmDynamicLinear`` is the
layer built on it. fbgemm's dynamic int8 linear (``torch.ops.quantized.linear_dynamic``) is
the fast int8 CPU path on machines without VNNI. It quantizes the activations itself: per
tensor, asymmetric, unsigned, and by default with ``reduce_range=True``, i.e. 7 bits
``[0, 127]`` instead of 8 -- the headroom that keeps AVX2's 16-bit intermediate sums from
saturating. PyTorch's quantized-tensor API warns that it is deprecated; the warnings are
silenced here, around these calls only.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch

__all__ = ["fbgemm_available", "fbgemm_prepack", "fbgemm_linear_dynamic"]


@contextlib.contextmanager
def _quiet_quantized_ops() -> Iterator[None]:
    """Silence the deprecation warnings of PyTorch's quantized-tensor API, here only."""
    with warnings.catch_warnings():
        for cat in (UserWarning, DeprecationWarning, FutureWarning):
            warnings.filterwarnings("ignore", message=r"(?is).*deprecat", category=cat)
        yield


def _fbgemm_engine() -> str | None:
    engines = torch.backends.quantized.supported_engines
    for name in ("x86", "fbgemm"):
        if name in engines:
            return name
    return None


def fbgemm_available() -> bool:
    """Whether this PyTorch build and CPU offer fbgemm's dynamic int8 linear."""
    try:
        ops = torch.ops.quantized
        return (
            _fbgemm_engine() is not None
            and hasattr(ops, "linear_prepack")
            and hasattr(ops, "linear_dynamic")
        )
    except (AttributeError, RuntimeError):
        return False


@contextlib.contextmanager
def _engine(name: str) -> Iterator[None]:
    prev = torch.backends.quantized.engine
    if prev != name:
        torch.backends.quantized.engine = name
    try:
        yield
    finally:
        if prev != name:
            torch.backends.quantized.engine = prev


def fbgemm_prepack(weight_q: torch.Tensor, weight_scale: torch.Tensor,
                   bias: torch.Tensor | None) -> object:
    """fbgemm's packed form of int8 weights ``(out, in)`` with one scale per output channel
    (zero points 0) and an optional float bias. The caller checks the arguments."""
    zp = torch.zeros(weight_q.shape[0], dtype=torch.int64)
    with _quiet_quantized_ops(), _engine(_fbgemm_engine()):
        # fbgemm keeps float32 scales; ours are float32, so float64 here is exact.
        qw = torch._make_per_channel_quantized_tensor(
            weight_q.cpu(), weight_scale.cpu().double(), zp, 0
        )
        return torch.ops.quantized.linear_prepack(qw, None if bias is None else bias.cpu())


def fbgemm_linear_dynamic(x2: torch.Tensor, packed: object, reduce_range: bool) -> torch.Tensor:
    """``x2 @ W.T + bias`` for a 2-D float32 CPU ``x2`` through fbgemm's dynamic int8 linear
    (activations quantized per tensor inside fbgemm, 7 bits with ``reduce_range``).

    No warnings context here: the call warns of nothing (building the quantized weights in
    ``fbgemm_prepack`` does), and ``catch_warnings`` would cost about 30 us a call."""
    return torch.ops.quantized.linear_dynamic(x2, packed, reduce_range)
