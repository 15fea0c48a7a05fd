"""Checkers for the exercises of ``02_scale_and_zero_point.ipynb``."""

from __future__ import annotations

import torch

import quantcourse as qc

from ._core import CheckFailed, call, checker, expect_close, expect_equal, passed


