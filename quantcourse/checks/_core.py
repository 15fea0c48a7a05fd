"""Machinery shared by the exercise checkers of every notebook (first used in
``00_welcome.ipynb``).

One policy for every checker (``tests/test_exercises.py`` holds them to it):

- **An open exercise does not stop the notebook.** A stub that still raises
  ``NotImplementedError`` makes the checker print that the exercise is open and return, so a
  learner can Run All with exercises left open. A wrong answer raises ``CheckFailed``.
- **Codes are values, not dtypes.** Integer codes may come in any real dtype as long as every
  value is a whole number (:func:`as_codes`); a non-integer value is a wrong answer.
- **The package's arithmetic is the reference.** ``quantize`` multiplies by the reciprocal,
  ``x * (1 / s)``, and rounds half to even. A checker of a quantizing function includes inputs
  where ``x / s`` rounds differently (:func:`division_trap`), so that form fails everywhere
  with the same hint, not only where a checker happened to use a power-of-two scale.
- **"Without qc" is enforced.** A task that asks for a computation without the package runs
  the learner's function under :func:`without_package`, where every public ``qc`` function
  fails the check.
- **A message shows what differs.** Numbers in "expected ..., got ..." are printed with enough
  digits to tell them apart (:func:`fmt_pair`).
"""

from __future__ import annotations

import contextlib
import functools
import math
import numbers
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch

CHECKERS: dict[str, Callable] = {}


class CheckFailed(AssertionError):
    """An exercise answer is not right yet; the message says what differs."""


class ExerciseOpen(CheckFailed):
    """The learner's function is still the stub: reported, not raised, by every checker."""


OPEN_NOTICE = "Exercise open: {what}. Replace the `raise NotImplementedError` stub with " \
              "your solution and run this cell again."


def checker(fn: Callable) -> Callable:
    """Register ``fn`` as an exercise checker (``qc.checks.<name>``); a name is taken once.

    The registered checker prints a notice instead of raising when the answer is still the
    stub (:class:`ExerciseOpen`), so Run All goes on past open exercises.
    """
    old = CHECKERS.get(fn.__name__)
    if old is not None:
        raise ValueError(
            f"checker {fn.__name__!r} is registered twice: in {old.__module__} and in "
            f"{fn.__module__}; give one of them another name"
        )

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ExerciseOpen as exc:
            print(str(exc))
            return None

    CHECKERS[fn.__name__] = run
    return run


def exercise_open(what: str) -> ExerciseOpen:
    """The exception a checker raises when the learner's function is still the stub."""
    return ExerciseOpen(OPEN_NOTICE.format(what=what))


def call(answer: Callable, *args, what: str, **kwargs):
    """Call the learner's function, turning a stub or a crash into a clear ``CheckFailed``."""
    if not callable(answer):
        raise CheckFailed(f"{what}: expected a function, got {type(answer).__name__}")
    try:
        return answer(*args, **kwargs)
    except NotImplementedError:
        raise exercise_open(what) from None
    except CheckFailed:
        raise
    except Exception as exc:  # the learner's code crashed: report it as a failed check
        raise CheckFailed(f"{what}: your function raised {type(exc).__name__}: {exc}") from exc


def as_tensor(value, what: str) -> torch.Tensor:
    """Accept a tensor or a number; anything else fails the check."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.tensor(value)
    raise CheckFailed(f"{what}: expected a tensor or a number, got {type(value).__name__}")


def fmt(t: torch.Tensor | float, n: int = 6) -> str:
    """Short, rounded text for a tensor or number in a message."""
    if isinstance(t, torch.Tensor):
        flat = t.detach().reshape(-1).double().tolist()
        shown = ", ".join(f"{v:.4g}" for v in flat[:n])
        return "[" + shown + (", ..." if len(flat) > n else "") + "]" if t.ndim else shown
    return f"{t:.4g}" if isinstance(t, float) and math.isfinite(t) else str(t)


def expect_close(got, want: torch.Tensor, what: str, *, rtol=1e-5, atol=1e-7, hint="") -> None:
    """Fail unless ``got`` has ``want``'s shape and values (within tolerance)."""
    got = as_tensor(got, what)
    if got.shape != want.shape:
        raise CheckFailed(f"{what}: expected shape {tuple(want.shape)}, got {tuple(got.shape)}")
    if got.is_complex():
        raise CheckFailed(f"{what}: expected real values, got {got.dtype}")
    g, w = got.detach().double().cpu(), want.detach().double().cpu()
    if not torch.allclose(g, w, rtol=rtol, atol=atol, equal_nan=False):
        bad = (~torch.isclose(g, w, rtol=rtol, atol=atol)).nonzero()
        idx = tuple(bad[0].tolist())
        msg = (
            f"{what}: {len(bad)} of {w.numel()} value(s) differ; "
            f"at index {idx} expected {fmt(w[idx])}, got {fmt(g[idx])}"
        )
        raise CheckFailed(msg + (f". Hint: {hint}" if hint else ""))


def expect_equal(got, want: torch.Tensor, what: str, *, hint: str = "") -> None:
    """Fail unless ``got`` equals ``want`` exactly (integers)."""
    expect_close(got, want, what, rtol=0.0, atol=0.0, hint=hint)


def fmt_pair(got: float, want: float, *, digits: int = 4) -> tuple[str, str]:
    """``got`` and ``want`` as text with the fewest significant digits (at least ``digits``,
    at most 17) that tell them apart, so a message never reads "expected 0.1712, got 0.1712"."""
    got, want = float(got), float(want)
    for n in range(digits, 18):
        a, b = f"{got:.{n}g}", f"{want:.{n}g}"
        if a != b or got == want:
            return a, b
    return repr(got), repr(want)


def as_codes(value, what: str) -> torch.Tensor:
    """Integer codes in any real dtype, as int64; a non-integer value fails the check."""
    t = as_tensor(value, what)
    if t.is_complex() or t.dtype == torch.bool:
        raise CheckFailed(f"{what}: expected integer codes, got {t.dtype}")
    if t.is_floating_point():
        bad = ~torch.isfinite(t) | (t != torch.round(t))
        if bool(bad.any()):
            idx = tuple(bad.nonzero()[0].tolist())
            raise CheckFailed(f"{what}: codes must be whole numbers; at index {idx} got "
                              f"{float(t[idx])!r}. Hint: round before you return the codes")
    return t.detach().cpu().to(torch.int64)


def division_trap(scale: float, count: int = 8, *, lo: int = -127, hi: int = 127) -> torch.Tensor:
    """``count`` float32 values ``x`` (codes within ``[lo, hi]``) where ``round(x / scale)`` and
    ``round(x * (1 / scale))`` differ in float32, for a checker's inputs; empty when ``scale``
    makes the two forms agree everywhere (a power of two)."""
    s = torch.tensor(scale, dtype=torch.float32)
    k = torch.arange(lo, hi, dtype=torch.float32) + 0.5
    found = []
    for ulps in range(-4, 5):
        x = k * s
        for _ in range(abs(ulps)):
            x = torch.nextafter(x, torch.full_like(x, math.copysign(math.inf, ulps)))
        differ = torch.round(x / s) != torch.round(x * (1 / s))
        found.append(x[differ])
    out = torch.unique(torch.cat(found))
    return out[torch.linspace(0, len(out) - 1, min(count, len(out))).long()] if len(out) else out


@contextlib.contextmanager
def without_package(what: str) -> Iterator[None]:
    """While the block runs, every public function of ``quantcourse`` fails the check: for
    exercises that ask for a computation written without the package."""
    pkg = sys.modules.get("quantcourse")
    names = [n for n in getattr(pkg, "__all__", []) if callable(getattr(pkg, n, None))
             and not isinstance(getattr(pkg, n), type)]
    saved = {n: getattr(pkg, n) for n in names}

    def forbidden(name: str) -> Callable:
        def call_refused(*args, **kwargs):
            raise CheckFailed(f"{what}: your function called qc.{name}; this exercise asks "
                              "you to write it without the package")
        return call_refused

    try:
        for n in names:
            setattr(pkg, n, forbidden(n))
        yield
    finally:
        for n, f in saved.items():
            setattr(pkg, n, f)


def passed(what: str) -> None:
    """Tell the learner the answer is right."""
    print(f"Correct: {what}")


def narrow_qmax(bits: int) -> int:
    """Largest code of a narrow symmetric ``bits``-bit grid: ``2^(bits-1) - 1``."""
    return 2 ** (bits - 1) - 1


def one_number(value, what: str) -> torch.Tensor:
    """The learner's answer as a 0-d float64 tensor (a number or a one-element tensor)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return torch.tensor(float(value), dtype=torch.float64)
    t = as_tensor(value, what)
    if t.numel() != 1:
        raise CheckFailed(f"{what}: expected one number, got shape {tuple(t.shape)}")
    if t.is_complex():
        raise CheckFailed(f"{what}: expected a real number, got {t.dtype}")
    return t.detach().double().reshape(())


def finite_number(value, what: str, *, integer: bool = False, whole: str = "a whole number"):
    """The learner's answer as a Python number (a number or a one-element tensor), checked to
    be real, finite and, with ``integer=True``, whole (``whole`` names what was expected)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        kind = "an integer" if integer else "a number"
        raise CheckFailed(f"{what}: expected {kind}, got {type(value).__name__}")
    if integer and not float(value).is_integer():
        raise CheckFailed(f"{what}: expected {whole}, got {value!r}")
    if not math.isfinite(float(value)):
        raise CheckFailed(f"{what}: expected a finite number, got {value!r}")
    return value


def close(a: Any, b: Any, *, rtol: float = 0.0, atol: float = 0.0) -> bool:
    """Whether ``a`` matches ``b``: numbers or tensors (same shape, ``|a - b| <= atol + rtol
    |b|`` everywhere, NaN matching nothing), or tuples / lists of them, element by element."""
    if isinstance(a, (tuple, list)) or isinstance(b, (tuple, list)):
        return (isinstance(a, (tuple, list)) and isinstance(b, (tuple, list))
                and len(a) == len(b)
                and all(close(x, y, rtol=rtol, atol=atol) for x, y in zip(a, b, strict=True)))
    if a is None or b is None:
        return a is b
    ta, tb = _float64(a), _float64(b)
    if ta is None or tb is None or ta.shape != tb.shape:
        return False
    return bool(torch.allclose(ta.double(), tb.double(), rtol=rtol, atol=atol))


def _float64(value: Any) -> torch.Tensor | None:
    """A real tensor or number as float64 (no float32 detour), or None for anything else."""
    if isinstance(value, torch.Tensor):
        return None if value.is_complex() else value.detach().cpu().double()
    if isinstance(value, numbers.Real):
        return torch.tensor(float(value), dtype=torch.float64)
    return None


Mistakes = Mapping[str, Any] | Iterable[tuple[str, Any]]


def hint_for(got: Any, mistakes: Mistakes, *, rtol: float = 0.0, atol: float = 0.0,
             want: Any = None, default: str = "") -> str:
    """The hint of the first known mistake whose result ``got`` matches, else ``default``.

    ``mistakes`` maps each hint to what that mistake returns (a mapping, or ``(hint, value)``
    pairs where one hint names several variants): a number, a tensor, a tuple or list of them,
    or a function of no arguments that computes it when needed. ``None`` never matches. A
    mistake whose result also matches ``want``, the right answer, is skipped: it cannot be
    told apart from it. Closeness is :func:`close` with ``rtol`` and ``atol``.
    """
    items = mistakes.items() if isinstance(mistakes, Mapping) else mistakes
    for hint, value in items:
        if callable(value):
            value = value()
        if value is None or not close(got, value, rtol=rtol, atol=atol):
            continue
        if want is not None and close(value, want, rtol=rtol, atol=atol):
            continue
        return hint
    return default
