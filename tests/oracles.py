"""PyTorch's own quantization ops used as oracles, skipped where this PyTorch has dropped them."""

from __future__ import annotations

import warnings

import pytest


def torch_ao(name: str):
    """``torch.ao.quantization.<name>``, or skip the test where it no longer exists."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import torch.ao.quantization as tq

            return getattr(tq, name)
    except (ImportError, AttributeError):
        pytest.skip("torch.ao.quantization is not available in this PyTorch")
