"""Shared fixtures: the devices every kernel test runs on."""

from __future__ import annotations

import pytest
import torch
from hypothesis import settings

settings.register_profile("course", deadline=None, max_examples=60, derandomize=True)
settings.load_profile("course")

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
        ],
    ),
]


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param
