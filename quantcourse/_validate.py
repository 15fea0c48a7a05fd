"""Input checks shared by every public function (DESIGN section 6): fail early and clearly.

Every module checks its arguments with these primitives; checks that only make sense for one
module (a mask's shape, a codebook's size) stay there. ``fn`` is the name the message starts
with. ``check_int`` and ``check_real`` raise ``TypeError`` for a value of the wrong type and
``ValueError`` for one out of range; their ``_in`` twins (``check_int_in``, ``check_real_in``,
``check_bits_in``) raise ``ValueError`` for both, for the functions whose contract says so.
"""

from __future__ import annotations

import math
import numbers

import torch


def check_float_tensor(x: object, fn: str) -> None:
    """Raise ``TypeError`` unless ``x`` is a real floating-point tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{fn}: expected a torch.Tensor, got {type(x).__name__}")
    if x.is_complex():
        raise TypeError(f"{fn}: expected a real floating-point tensor, got complex {x.dtype}")
    if not x.is_floating_point():
        raise TypeError(
            f"{fn}: expected a floating-point tensor, got {x.dtype}; "
            "convert with x.float() if these are real values"
        )


def check_bits(bits: object, lo: int, hi: int, fn: str) -> None:
    """Raise ``ValueError`` unless ``bits`` is an int in ``[lo, hi]``."""
    if not isinstance(bits, int) or isinstance(bits, bool):
        raise ValueError(f"{fn}: bits must be an int, got {bits!r}")
    if not lo <= bits <= hi:
        raise ValueError(f"{fn}: bits must be between {lo} and {hi}, got {bits}")


def check_axis(axis: object, ndim: int, fn: str) -> int:
    """Raise unless ``axis`` is an int that indexes a tensor of ``ndim`` dimensions; return it
    as a non-negative index (``TypeError`` for a non-int, ``ValueError`` out of range)."""
    if not isinstance(axis, int) or isinstance(axis, bool):
        raise TypeError(f"{fn}: axis must be an int or None, got {type(axis).__name__}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{fn}: axis {axis} is out of range for a tensor with {ndim} dimensions")
    return axis % ndim


def check_optional_axis(axis: object, ndim: int, fn: str) -> int | None:
    """``None`` stays ``None`` (per tensor); otherwise :func:`check_axis`, after a clear
    ``ValueError`` for an int axis on a 0-d tensor."""
    if axis is None:
        return None
    if ndim == 0 and isinstance(axis, int) and not isinstance(axis, bool):
        raise ValueError(f"{fn}: per-channel quantization (axis={axis}) needs a tensor with at "
                         "least one dimension")
    return check_axis(axis, ndim, fn)


def check_int(value: object, name: str, fn: str, *, minimum: int | None = 1,
              maximum: int | None = None) -> int:
    """Raise unless ``value`` is an int (``bool`` is not one) in ``[minimum, maximum]``
    (``TypeError`` for a non-int, ``ValueError`` out of range); return it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{fn}: {name} must be an int, got {value!r}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{fn}: {name} must be {_int_bounds(minimum, maximum)}, got {value}")
    return value


def check_int_in(value: object, name: str, fn: str, lo: int = 1, hi: int | None = None,
                 *, why: str = "") -> int:
    """Raise ``ValueError`` (a non-int included) unless ``value`` is an int (not a bool) in
    ``[lo, hi]``; ``why`` adds a reason to the message. Return it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (
            hi is not None and value > hi):
        kind = {1: "a positive int", 0: "a non-negative int"}.get(lo, f"an int >= {lo}") \
            if hi is None else f"an int between {lo} and {hi}"
        raise ValueError(f"{fn}: {name} must be {kind}{why}, got {value!r}")
    return value


def check_real_in(value: object, name: str, fn: str, *, lo: float | None = None,
                  hi: float | None = None, lo_open: bool = False) -> float:
    """Raise ``ValueError`` (a non-number included) unless ``value`` is a finite real number
    (not a bool) within ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``); return it as a float."""
    ok = (not isinstance(value, bool) and isinstance(value, numbers.Real)
          and math.isfinite(value))
    if ok:
        v = float(value)
        ok = ((lo is None or (v > lo if lo_open else v >= lo)) and (hi is None or v <= hi))
    if not ok:
        if lo is None and hi is None:
            kind = "a finite number"
        elif lo is None:
            kind = f"a finite number <= {hi:g}"
        elif hi is None:
            kind = ("a positive finite number" if lo == 0 and lo_open
                    else f"a finite number {'>' if lo_open else '>='} {lo:g}")
        else:
            kind = f"a finite number in {'(' if lo_open else '['}{lo:g}, {hi:g}]"
        raise ValueError(f"{fn}: {name} must be {kind}, got {value!r}")
    return float(value)


def check_bits_in(bits: object, allowed: tuple[int, ...], fn: str, *, why: str = "") -> int:
    """Raise ``ValueError`` unless ``bits`` is an int (not a bool) among ``allowed``; return it."""
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in allowed:
        raise ValueError(
            f"{fn}: bits must be one of {', '.join(map(str, allowed))}{why}, got {bits!r}")
    return bits


def _int_bounds(minimum: int | None, maximum: int | None) -> str:
    if maximum is not None:
        return f"between {minimum} and {maximum}" if minimum is not None else f"<= {maximum}"
    return {1: "positive", 0: "non-negative"}.get(minimum, f"at least {minimum}")


def check_bool(value: object, name: str, fn: str) -> bool:
    """Raise ``TypeError`` unless ``value`` is ``True`` or ``False``; return it."""
    if not isinstance(value, bool):
        raise TypeError(f"{fn}: {name} must be True or False, got {value!r}")
    return value


def check_real(value: object, name: str, fn: str, *, lo: float | None = None,
               hi: float | None = None, lo_open: bool = False) -> float:
    """Raise unless ``value`` is a finite real number (not a bool) within ``[lo, hi]``
    (``(lo, hi]`` with ``lo_open``); return it as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{fn}: {name} must be a real number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{fn}: {name} must be finite, got {value!r}")
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise ValueError(f"{fn}: {name} must be {'>' if lo_open else '>='} {lo}, got {value!r}")
    if hi is not None and v > hi:
        raise ValueError(f"{fn}: {name} must be <= {hi}, got {value!r}")
    return v


def check_choice(value: object, name: str, choices, fn: str):
    """Raise ``ValueError`` unless ``value`` is one of ``choices``; return it."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(
            f"{fn}: {name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_finite(x: torch.Tensor, fn: str) -> None:
    """Raise ``ValueError`` naming how many NaN and Inf values ``x`` holds, if any."""
    require_finite(x, fn)


def raise_nonfinite(x: torch.Tensor, fn: str) -> None:
    """Raise the ``ValueError`` for a tensor known to hold NaN or Inf, with the counts."""
    _raise_nonfinite(x, fn, "the input holds", "quantize only finite data", False)


def require_finite(x: torch.Tensor, fn: str, *, what: str = "the input holds",
                   advice: str = "quantize only finite data", first_index: bool = False) -> None:
    """:func:`check_finite` with its wording chosen: ``"{fn}: {what} 1 NaN and 0 infinite
    value(s) out of N[ (first at index (i, j))]; {advice}"`` (``what``: subject and verb)."""
    if x.numel() and not bool(torch.isfinite(x).all()):
        _raise_nonfinite(x, fn, what, advice, first_index)


def _raise_nonfinite(x: torch.Tensor, fn: str, what: str, advice: str, first_index: bool):
    n_nan = int(torch.isnan(x).sum())
    n_inf = int(torch.isinf(x).sum())
    where = ""
    if first_index:
        first = tuple(int(i) for i in (~torch.isfinite(x)).nonzero()[0].tolist())
        where = f" (first at index {first})"
    raise ValueError(
        f"{fn}: {what} {n_nan} NaN and {n_inf} infinite value(s) out of {x.numel()}"
        f"{where}; {advice}"
    )
