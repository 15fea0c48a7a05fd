"""Checkers for the exercises of ``03_symmetric.ipynb``."""

from __future__ import annotations

import torch

import quantcourse as qc

from ._core import CheckFailed, call, checker, expect_close, expect_equal, passed


