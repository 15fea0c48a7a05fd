"""Calibration observers: watch batches of a tensor, then choose its quantization range.

Introduced in ``05_granularity_and_calibration.ipynb``.

Every observer has one interface::

    obs = qc.MinMaxObserver(bits=8, symmetric=False)   # the grid's settings
    for batch in calibration_data:
        obs.observe(batch)            # or obs(batch), which returns batch unchanged
    lo, hi = obs.range()              # the chosen clipping range (float32 tensors)
    qp = obs.qparams()                # an affine.QParams for that range

``obs(x)`` returns ``x`` itself, so an observer can sit in a forward hook:
``layer.register_forward_hook(lambda m, inp, out: obs(out))``.

Settings shared by every observer (keyword-only after ``bits``):

* ``bits=8``; ``symmetric=False`` (an asymmetric grid, like PyTorch's default ``quint8``);
* ``signed=False``: asymmetric grids only, ``[0, 2^b-1]`` or ``[-2^(b-1), 2^(b-1)-1]``;
* ``narrow_range=True``: symmetric grids only, ``[-(2^(b-1)-1), 2^(b-1)-1]`` (``False`` gives
  PyTorch's ``qint8`` symmetric grid and scale);
* ``axis=None``: per tensor; ``axis=k`` keeps one range per slice along ``k``
  (``MinMaxObserver`` and ``MovingAverageMinMaxObserver`` only; the sample-based observers are
  per tensor and raise ``ValueError`` when given an axis).

The observers differ only in how they choose the range ``(lo, hi)``; turning a range into
``QParams`` is one shared function, :func:`qparams_from_range`, which hands the two-element
tensor ``[lo, hi]`` to ``affine.symmetric_qparams`` / ``affine.asymmetric_qparams``. Those see
exactly ``min = lo`` and ``max = hi``, so every observer follows the base module's conventions
(range widened to include 0, ``max(|lo|, |hi|)`` for symmetric grids, float32-eps floor on the
scale, zero-point rounding and clamping) by construction, with no second copy of that math.

Bad input (DESIGN section 6): a batch holding NaN or Inf raises ``ValueError`` with the counts
and leaves the observer unchanged; integer, bool or complex tensors raise ``TypeError``; a
per-channel batch whose channel count (or number of dimensions) differs from the first batch's
raises ``ValueError``; empty batches are ignored (after their type and shape are checked);
``range()`` or ``qparams()`` before any non-empty batch raises ``RuntimeError``.
"""

from __future__ import annotations

import inspect

import torch

from . import affine
from ._kl_histogram import kl_best_bins
from ._validate import check_bits, check_bool, check_float_tensor, check_int, check_real
from .affine import QParams, asymmetric_qparams, qrange, symmetric_qparams

__all__ = [
    "Observer",
    "MinMaxObserver",
    "MovingAverageMinMaxObserver",
    "PercentileObserver",
    "MSEObserver",
    "EntropyObserver",
    "qparams_from_range",
]

# torch.quantile refuses inputs with more than 2^24 elements.
_MAX_SAMPLES_LIMIT = 1 << 24
# Elements per chunk when the MSE search evaluates several candidate grids at once.
_MSE_CHUNK = 1 << 20


def qparams_from_range(
    lo: torch.Tensor,
    hi: torch.Tensor,
    bits: int = 8,
    *,
    symmetric: bool = False,
    signed: bool = False,
    narrow_range: bool = True,
    axis: int | None = None,
) -> QParams:
    """``QParams`` for the clipping range ``[lo, hi]`` (0-d, or ``(C,)`` along ``axis``).

    The range is handed to ``symmetric_qparams`` / ``asymmetric_qparams`` as the tensor
    ``[lo, hi]`` (per channel: ``(C, 2)`` with ``axis=0``), so the result follows
    ``quantcourse.affine``'s conventions exactly: symmetric scale from ``max(|lo|, |hi|)``;
    asymmetric range widened to include 0; scale at least float32 eps.
    """
    fn = "qparams_from_range"
    check_float_tensor(lo, fn)
    check_float_tensor(hi, fn)
    if lo.shape != hi.shape:
        raise ValueError(f"{fn}: lo and hi shapes differ: {tuple(lo.shape)} vs {tuple(hi.shape)}")
    if axis is None and lo.ndim != 0:
        raise ValueError(
            f"{fn}: a per-tensor range needs 0-d lo and hi, got shape {tuple(lo.shape)}")
    if axis is not None and lo.ndim != 1:
        raise ValueError(
            f"{fn}: a per-channel range needs 1-d lo and hi, got shape {tuple(lo.shape)}")
    if lo.numel() and not bool((lo <= hi).all()):
        raise ValueError(f"{fn}: lo must not exceed hi")
    # Non-finite bounds are reported by affine's own check (ValueError with counts).
    pair = torch.stack([lo.float(), hi.float()], dim=-1)
    if symmetric:
        qp = symmetric_qparams(pair, bits, axis=0 if axis is not None else None,
                               narrow_range=narrow_range)
    else:
        qp = asymmetric_qparams(pair, bits, axis=0 if axis is not None else None, signed=signed)
    if axis is None:
        return qp
    return QParams(qp.scale, qp.zero_point, qp.qmin, qp.qmax, axis=axis)


class Observer:
    """Base class: ``observe(x)`` (or ``obs(x)``) on each batch, then ``range()`` / ``qparams()``.

    Every observer tracks the exact running min and max (``min_val``, ``max_val``) and the
    number of non-empty batches seen (``num_batches``); subclasses decide the range.
    """

    _per_channel = True

    def __init_subclass__(cls, **kwargs) -> None:
        # A subclass's ``__init__(self, bits, *, own settings, **options)`` passes ``options``
        # on to its base; give it the full signature (its own keywords, then the base's) so
        # that help() and editors list every keyword.
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        own = inspect.signature(init)
        params = list(own.parameters.values())
        if not params or params[-1].kind is not inspect.Parameter.VAR_KEYWORD:
            return
        names = {p.name for p in params}
        inherited = [p for p in inspect.signature(super(cls, cls).__init__).parameters.values()
                     if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in names]
        init.__signature__ = own.replace(parameters=params[:-1] + inherited)

    def __init__(
        self,
        bits: int = 8,
        *,
        symmetric: bool = False,
        signed: bool = False,
        narrow_range: bool = True,
        axis: int | None = None,
    ) -> None:
        name = type(self).__name__
        check_bits(bits, 2 if symmetric else 1, 16, name)
        for flag, value in (("symmetric", symmetric), ("signed", signed),
                            ("narrow_range", narrow_range)):
            check_bool(value, flag, name)
        if symmetric:
            qrange(bits, signed=True, narrow_range=narrow_range)
        else:
            qrange(bits, signed=signed)
        if axis is not None:
            check_int(axis, "axis", name, minimum=None)
            if not self._per_channel:
                raise ValueError(
                    f"{name} is per-tensor only, got axis={axis}; use MinMaxObserver or "
                    "MovingAverageMinMaxObserver for per-channel ranges"
                )
        self.bits = bits
        self.symmetric = symmetric
        self.signed = signed
        self.narrow_range = narrow_range
        self.axis = axis
        self.reset()

    # ------------------------------------------------------------------ state

    def reset(self) -> None:
        """Forget everything observed."""
        self.num_batches = 0
        self._lo: torch.Tensor | None = None
        self._hi: torch.Tensor | None = None
        self._ndim: int | None = None
        self._channels: int | None = None
        self._range_cache: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def min_val(self) -> torch.Tensor | None:
        """Exact running minimum of everything observed (per channel with ``axis``)."""
        return None if self._lo is None else self._lo.clone()

    @property
    def max_val(self) -> torch.Tensor | None:
        """Exact running maximum of everything observed (per channel with ``axis``)."""
        return None if self._hi is None else self._hi.clone()

    # ------------------------------------------------------------------ feeding

    def _check_shape(self, x: torch.Tensor, fn: str) -> int | None:
        """Checks the batch against the axis and earlier batches; returns the axis normalised."""
        if self.axis is None:
            return None
        if x.ndim == 0:
            raise ValueError(f"{fn}: per-channel observation (axis={self.axis}) needs a tensor "
                             "with dimensions, got a 0-d tensor")
        if not -x.ndim <= self.axis < x.ndim:
            raise ValueError(f"{fn}: axis {self.axis} is out of range for a batch with "
                             f"{x.ndim} dimensions")
        if self._ndim is not None and x.ndim != self._ndim:
            raise ValueError(f"{fn}: batches must keep their number of dimensions for "
                             f"per-channel observation: first {self._ndim}, now {x.ndim}")
        ax = self.axis % x.ndim
        if self._channels is not None and x.shape[ax] != self._channels:
            raise ValueError(f"{fn}: the channel count along axis {self.axis} changed: "
                             f"first batch {self._channels}, this batch {x.shape[ax]}")
        return ax

    def observe(self, x: torch.Tensor) -> None:
        """Fold one batch into the statistics (NaN/Inf: ``ValueError``, nothing changes)."""
        fn = f"{type(self).__name__}.observe"
        check_float_tensor(x, fn)
        x = x.detach()
        ax = self._check_shape(x, fn)
        if x.numel() == 0:
            return
        if self._lo is not None and x.device != self._lo.device:
            raise ValueError(f"{fn}: the observer's statistics live on {self._lo.device} but "
                             f"this batch is on {x.device}")
        # affine's min/max: per tensor or per slice along ax, with its NaN/Inf check
        # (finite extremes prove the whole batch finite).
        try:
            mn, mx = affine.value_range(x, axis=ax)
        except ValueError as e:
            raise ValueError(f"{fn}: {e}") from None
        self._update(x, mn, mx)
        if ax is not None:
            self._ndim, self._channels = x.ndim, x.shape[ax]
        self.num_batches += 1
        self._range_cache = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Observe ``x`` and return it unchanged (usable inside a forward hook)."""
        self.observe(x)
        return x

    def _update(self, x: torch.Tensor, mn: torch.Tensor, mx: torch.Tensor) -> None:
        """Running min and max; subclasses add their own statistics."""
        if self._lo is None:
            self._lo, self._hi = mn.clone(), mx.clone()
        else:
            self._lo = torch.minimum(self._lo, mn)
            self._hi = torch.maximum(self._hi, mx)

    # ------------------------------------------------------------------ results

    def _compute_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} does not choose a range")

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The chosen clipping range ``(lo, hi)`` as float32 tensors (``(C,)`` with ``axis``)."""
        if self.num_batches == 0:
            raise RuntimeError(
                f"{type(self).__name__}: no data observed yet; call observe(x) on at least "
                "one non-empty batch before asking for range() or qparams()"
            )
        if self._range_cache is None:
            self._range_cache = self._compute_range()
        lo, hi = self._range_cache
        return lo.clone(), hi.clone()

    def qparams(self) -> QParams:
        """``QParams`` for :meth:`range`, built by :func:`qparams_from_range`."""
        lo, hi = self.range()
        axis = None if self.axis is None else self.axis % self._ndim
        return qparams_from_range(lo, hi, self.bits, symmetric=self.symmetric,
                                  signed=self.signed, narrow_range=self.narrow_range, axis=axis)

    def _extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        grid = ("symmetric" + ("" if self.narrow_range else ", narrow_range=False")
                if self.symmetric else "asymmetric" + (", signed" if self.signed else ""))
        axis = f", axis={self.axis}" if self.axis is not None else ""
        return (f"{type(self).__name__}(bits={self.bits}, {grid}{axis}{self._extra_repr()}, "
                f"batches={self.num_batches})")


class MinMaxObserver(Observer):
    """Running min and max of everything seen (per tensor, or per channel along ``axis``).

    Matches ``torch.ao.quantization.MinMaxObserver`` / ``PerChannelMinMaxObserver`` scale and
    zero point bit for bit (``quint8`` affine = ``symmetric=False``; ``qint8`` symmetric =
    ``symmetric=True, narrow_range=False``).
    """

    def _compute_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._lo, self._hi


class MovingAverageMinMaxObserver(Observer):
    """Exponential moving average of each batch's min and max.

    The first batch sets ``min``/``max``; each later batch moves them by
    ``min += c * (batch_min - min)`` (same for ``max``) with ``c = averaging_constant``, in
    float32, exactly PyTorch's ``MovingAverageMinMaxObserver`` rule (and its per-channel twin).
    Activations seen in training mode drift; the average forgets early outliers.
    """

    def __init__(self, bits: int = 8, *, averaging_constant: float = 0.01, **options) -> None:
        name = type(self).__name__
        c = check_real(averaging_constant, "averaging_constant", name)
        if not 0.0 < c <= 1.0:
            raise ValueError(f"{name}: averaging_constant must be in (0, 1], got {c}")
        self.averaging_constant = c
        super().__init__(bits, **options)

    def _update(self, x: torch.Tensor, mn: torch.Tensor, mx: torch.Tensor) -> None:
        if self._lo is None:
            self._lo, self._hi = mn.clone(), mx.clone()
        else:
            c = self.averaging_constant
            self._lo = self._lo + c * (mn - self._lo)
            self._hi = self._hi + c * (mx - self._hi)

    def _compute_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._lo, self._hi

    def _extra_repr(self) -> str:
        return f", averaging_constant={self.averaging_constant:g}"


class _SampleObserver(Observer):
    """Keeps the values seen (a uniform random sample once there are too many), per tensor.

    Up to ``max_samples`` values every value is kept, so the statistics are exact; after that
    the store is a reservoir sample (Algorithm R): value number ``t`` (0-based) replaces a
    random slot with probability ``max_samples / (t + 1)``, so the store is always a uniform
    sample of everything seen. Randomness comes from a CPU generator seeded with ``seed``, so
    results are reproducible. The exact running min and max are tracked separately.

    Subclasses take their own settings and pass the rest (``**options``: the grid settings
    of :class:`Observer`, ``max_samples`` and ``seed``) on to this class.
    """

    _per_channel = False

    def __init__(self, bits: int = 8, *, max_samples: int = 1 << 20, seed: int = 0,
                 **options) -> None:
        name = type(self).__name__
        self.max_samples = check_int(max_samples, "max_samples", name,
                                     maximum=_MAX_SAMPLES_LIMIT)
        self.seed = check_int(seed, "seed", name, minimum=0)
        super().__init__(bits, **options)

    def reset(self) -> None:
        super().reset()
        self._chunks: list[torch.Tensor] = []
        self._filled = 0
        self._seen = 0
        self._gen = torch.Generator().manual_seed(self.seed)

    @property
    def num_seen(self) -> int:
        """How many values have been observed in total."""
        return self._seen

    @property
    def samples(self) -> torch.Tensor:
        """The stored values (float32, flat): all of them, or a uniform sample of them."""
        if not self._chunks:
            return torch.empty(0)
        if len(self._chunks) > 1:
            self._chunks = [torch.cat(self._chunks)]
        return self._chunks[0].clone()

    def _update(self, x: torch.Tensor, mn: torch.Tensor, mx: torch.Tensor) -> None:
        super()._update(x, mn, mx)
        v = x.reshape(-1)
        room = self.max_samples - self._filled
        if room > 0:
            # a copy: the caller may reuse the batch's memory
            head = v[:room].to(torch.float32, copy=True)
            self._chunks.append(head)
            self._filled += head.numel()
            self._seen += head.numel()
            v = v[room:]
        if v.numel():
            self._reservoir(v)

    def _reservoir(self, v: torch.Tensor) -> None:
        n, cap = v.numel(), self.max_samples
        if len(self._chunks) > 1:
            self._chunks = [torch.cat(self._chunks)]
        buf = self._chunks[0]
        # value t (global, 0-based) draws j uniform in [0, t] and replaces slot j if j < cap
        t = self._seen + torch.arange(n, dtype=torch.float64)
        j = torch.floor(torch.rand(n, generator=self._gen, dtype=torch.float64) * (t + 1))
        keep = j < cap
        slots = j[keep].long()
        pos = torch.arange(n)[keep]
        # Algorithm R processes values in order, so the last value aimed at a slot wins.
        last = torch.full((cap,), -1, dtype=torch.long).scatter_reduce(
            0, slots, pos, reduce="amax")
        hit = last >= 0
        src = last[hit].to(v.device)
        buf[hit.to(buf.device)] = v[src].to(torch.float32)
        self._seen += n


class PercentileObserver(_SampleObserver):
    """Range from percentiles of the values seen, which clips rare outliers.

    Asymmetric grids: ``lo`` is the ``100 - percentile`` and ``hi`` the ``percentile``
    percentile of the values ``x``; symmetric grids: ``hi = -lo`` is the ``percentile``
    percentile of ``|x|``. Percentiles interpolate linearly (``torch.quantile``) over the
    stored values: exact up to ``max_samples`` values, a uniform reservoir sample beyond.
    ``percentile=100`` reproduces ``MinMaxObserver`` (while every value is stored).
    """

    def __init__(self, bits: int = 8, *, percentile: float = 99.99, **options) -> None:
        name = type(self).__name__
        p = check_real(percentile, "percentile", name)
        if not 50.0 <= p <= 100.0:
            raise ValueError(f"{name}: percentile must be between 50 and 100, got {p}")
        self.percentile = p
        super().__init__(bits, **options)

    def _compute_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.samples.to(self._lo.device)
        q = self.percentile / 100.0
        if self.symmetric:
            t = torch.quantile(s.abs(), q)
            return -t, t
        lo = torch.quantile(s, 1.0 - q)
        hi = torch.quantile(s, q)
        return lo, torch.maximum(lo, hi)

    def _extra_repr(self) -> str:
        return f", percentile={self.percentile:g}"


class MSEObserver(_SampleObserver):
    """Range chosen by searching clipping thresholds for the lowest mean squared error.

    Candidates shrink the observed range ``[min(x_min, 0), max(x_max, 0)]`` (symmetric:
    ``[-max|x|, max|x|]``) by the factors ``1, 1 - 1/n, ..., 1/n`` with
    ``n = num_candidates``; both ends shrink together. Each candidate becomes a grid through
    :func:`qparams_from_range`, the stored values go through ``qc.fake_quantize`` on it
    (several candidates per call, as one per-channel grid), and the candidate with the lowest
    mean squared error wins (ties go to the widest range). The full min-max range is a
    candidate, so on the stored values the result is never worse than ``MinMaxObserver``.
    """

    def __init__(self, bits: int = 8, *, num_candidates: int = 100, **options) -> None:
        self.num_candidates = check_int(num_candidates, "num_candidates", type(self).__name__,
                                        maximum=100_000)
        super().__init__(bits, **options)

    def _compute_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.samples.to(self._lo.device)
        lo = torch.clamp(self._lo, max=0.0)
        hi = torch.clamp(self._hi, min=0.0)
        if self.symmetric:
            hi = torch.maximum(-lo, hi)
            lo = -hi
        n = self.num_candidates
        f = torch.arange(n, 0, -1, dtype=torch.float32, device=s.device) / n
        cand_lo, cand_hi = lo * f, hi * f
        qp = qparams_from_range(cand_lo, cand_hi, self.bits, symmetric=self.symmetric,
                                signed=self.signed, narrow_range=self.narrow_range, axis=0)
        errs = []
        step = max(1, _MSE_CHUNK // s.numel())
        with torch.no_grad():
            for k in range(0, n, step):
                sub = QParams(qp.scale[k:k + step], qp.zero_point[k:k + step], qp.qmin, qp.qmax,
                              axis=0)
                xs = s.expand(sub.scale.numel(), -1)
                err = affine.fake_quantize(xs, sub) - xs
                errs.append((err * err).sum(dim=1, dtype=torch.float64))
        best = int(torch.argmin(torch.cat(errs)))  # first minimum: the widest range
        return cand_lo[best], cand_hi[best]

    def _extra_repr(self) -> str:
        return f", num_candidates={self.num_candidates}"


class EntropyObserver(_SampleObserver):
    """Range chosen by minimising KL divergence between histograms (TensorRT's calibrator).

    Symmetric by default (``symmetric=True``), as TensorRT uses it. The algorithm, per tensor:

    1. Histogram ``|x|`` of the stored values into ``num_bins`` equal bins over
       ``[0, max|x|]`` (``max|x|`` is the exact running maximum).
    2. For each candidate threshold at the upper edge of bin ``i`` (``i`` from ``levels`` to
       ``num_bins``), build the clipped reference distribution ``P`` (the first ``i`` bins,
       with all the mass beyond them piled into bin ``i - 1``) and its quantized version ``Q``
       (the first ``i`` bins merged into ``levels`` equal groups, each group's mass spread
       back evenly over the bins where ``P`` is non-zero).
    3. Keep the threshold ``t`` with the smallest ``KL(P || Q)``: the one whose clipping plus
       rounding loses the least information about the shape of the distribution.

    ``levels`` is the number of grid points on one side of zero, ``2^(bits-1)``. The range is
    ``[-t, t]``; with ``symmetric=False`` it is the observed ``[min, max]`` clipped to
    ``[-t, t]``, and for data of one sign (ReLU outputs) ``levels`` is the whole grid,
    ``2^bits``. Like TensorRT, the smallest threshold tried is ``max|x| * levels / num_bins``.
    """

    def __init__(self, bits: int = 8, *, num_bins: int = 2048, symmetric: bool = True,
                 **options) -> None:
        name = type(self).__name__
        self.num_bins = check_int(num_bins, "num_bins", name, minimum=2, maximum=1 << 16)
        super().__init__(bits, symmetric=symmetric, **options)
        need = 2 ** (bits - 1) if symmetric else 2**bits
        if self.num_bins < need:
            raise ValueError(f"{name}: num_bins ({self.num_bins}) must be at least the number "
                             f"of quantization levels it may need ({need} at {bits} bits)")

    def _levels(self) -> int:
        one_signed = bool(self._lo >= 0) or bool(self._hi <= 0)
        if self.symmetric or not one_signed:
            return 2 ** (self.bits - 1)
        return 2**self.bits

    def _compute_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        amax = float(torch.maximum(-self._lo, self._hi))
        if amax == 0.0:
            t = 0.0
        else:
            s = self.samples.abs()
            hist = torch.histc(s, bins=self.num_bins, min=0.0, max=amax)
            i = kl_best_bins(hist, self._levels())
            t = amax * i / self.num_bins
        t = torch.tensor(t, dtype=torch.float32, device=self._lo.device)
        if self.symmetric:
            return -t, t
        return torch.maximum(self._lo, -t), torch.minimum(self._hi, t)

    def _extra_repr(self) -> str:
        return f", num_bins={self.num_bins}"
