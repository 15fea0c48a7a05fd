"""Claims: the numbers a notebook's prose relies on, asserted and recorded in one call.

Introduced in ``00_welcome.ipynb`` and used by every notebook (DESIGN section 7). A claim is
a measured number with two tolerances that mean different things:

- ``lo`` / ``hi``: the bounds the *prose* relies on ("per-token activations keep the mean
  cosine above 0.999"). A value outside them raises ``AssertionError`` right away, on every
  machine and in quick mode too, so choose bounds that hold for both.
- ``tol``: how far the value may move between machines (CPU families pick different SIMD
  paths, so float sums differ in their last digits). The notebook tests compare the value
  recorded in the committed notebook with a fresh full run and fail beyond ``tol``; size it
  at least 3 times the largest spread measured across CPU families (``make claims-spread``),
  and use ``tol=0`` for values that are exact everywhere (counts of bytes, integer codes).

Each claim prints one line for the reader and records a machine-readable copy in the cell's
output (MIME type ``application/vnd.quantcourse.claim+json``), which the notebook tests read.
Cells that record claims are compared claim by claim, never as text.
"""

from __future__ import annotations

import math
import numbers

import torch

__all__ = ["CLAIM_MIME", "claim", "claims_in_outputs"]

CLAIM_MIME = "application/vnd.quantcourse.claim+json"


def _as_number(value: object, name: str) -> float | int:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise TypeError(f"claim {name!r}: expected one number, got a tensor of shape "
                            f"{tuple(value.shape)}")
        if value.is_complex():
            raise TypeError(f"claim {name!r}: expected a real number, got {value.dtype}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"claim {name!r}: expected a real number, got {type(value).__name__}; "
                        "state a comparison as a difference or a ratio with a bound")
    if isinstance(value, numbers.Integral):
        return int(value)
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"claim {name!r}: the value is {value}, not a finite number")
    return value


def _bound(value: object, what: str, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise TypeError(f"claim {name!r}: {what} must be a finite number or None, got {value!r}")
    return float(value)


def _describe(lo: float | None, hi: float | None, fmt: str) -> str:
    if lo is not None and hi is not None:
        return f"in [{lo:{fmt}}, {hi:{fmt}}]"
    if lo is not None:
        return f">= {lo:{fmt}}"
    if hi is not None:
        return f"<= {hi:{fmt}}"
    return "recorded"


def _display(text: str, record: dict) -> None:
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # plain Python: print only
        print(text)
        return
    if get_ipython() is None:
        print(text)
    else:
        display({"text/plain": text, CLAIM_MIME: record}, raw=True)


def claim(
    name: str,
    value: object,
    *,
    tol: float,
    lo: float | None = None,
    hi: float | None = None,
    fmt: str = ".4g",
) -> float | int:
    """Assert ``lo <= value <= hi``, print it, record it for the notebook tests; return it.

    ``tol`` is the largest difference allowed between the value recorded in the committed
    notebook and a fresh run on another machine (absolute, in the value's unit; 0 = exact).
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"claim: name must be a short identifier like 'w8a8_cosine', got {name!r}")
    value = _as_number(value, name)
    lo, hi = _bound(lo, "lo", name), _bound(hi, "hi", name)
    tol_f = _bound(tol, "tol", name)
    if tol_f is None or tol_f < 0:
        raise ValueError(f"claim {name!r}: tol must be a number >= 0, got {tol!r}")
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"claim {name!r}: lo = {lo} is above hi = {hi}")
    bounds = _describe(lo, hi, fmt)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise AssertionError(
            f"claim {name!r} does not hold on this machine: {value:{fmt}} is not {bounds}; "
            "the text around this cell relies on it"
        )
    agree = "exact on every machine" if tol_f == 0 else f"machines agree within ±{tol_f:{fmt}}"
    text = f"claim {name} = {value:{fmt}}  ({bounds}; {agree})"
    record = {"name": name, "value": value, "lo": lo, "hi": hi, "tol": tol_f}
    _display(text, record)
    return value


def claims_in_outputs(outputs: list) -> dict[str, dict]:
    """The claim records in a cell's outputs (nbformat dicts), by name."""
    found: dict[str, dict] = {}
    for out in outputs or []:
        record = (out.get("data") or {}).get(CLAIM_MIME)
        if record is None:
            continue
        if record["name"] in found:
            raise ValueError(f"claim {record['name']!r} is recorded twice in one cell")
        found[record["name"]] = dict(record)
    return found
