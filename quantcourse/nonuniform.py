"""Non-uniform quantization: logarithmic (power-of-two) levels, k-means codebooks, NF4.

Introduced in ``07_nonuniform.ipynb``.

Uniform grids space their levels evenly; trained weights are not spread evenly (most sit near
zero, a few far out). The three schemes here put the levels where the weights are:

* ``log_quantize(w, bits, *, axis=None, frac_bits=0)``: a sign and an exponent. Magnitudes are
  ``scale * 2^(-e / 2^frac_bits)`` for ``e = 0 .. K-1`` (``K = 2^(bits-1) - 1``) plus an exact
  zero, so multiplying by a level is a shift when ``frac_bits=0``. Returns ``LogQuantized``.
* ``kmeans_quantize(w, bits, *, axis=None, seed=0, iters=30, init="kmeans++")``: ``2^bits``
  centroids fitted by Lloyd's algorithm in one dimension (exact, on sorted values with prefix
  sums), per tensor or one codebook per slice along ``axis``. Returns ``KMeansQuantized``;
  ``finetune_codebooks`` trains the centroids of a model by gradient (the gradients of all the
  weights that share a centroid are summed, as in Deep Compression).
* ``nf4_levels()`` and ``nf4_quantize(w, *, block_size=64, double_quant=False)``: QLoRA's
  4-bit NormalFloat, the 16 levels built from quantiles of the standard normal, applied to
  blocks of consecutive weights scaled by their absolute maximum; ``double_quant`` stores the
  block scales in 8 bits. Returns ``NF4Quantized``.

Every result dataclass has ``dequantize()`` (float32, the input's shape), ``nbytes`` (what a
file stores: codes packed at ``bits`` each plus scales, codebooks and their metadata) and
``bits_per_weight`` (``8 * nbytes / numel``). Values go to the nearest level; a value exactly
halfway between two levels goes to the lower one.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch

from ._validate import (
    check_bits,
    check_bool,
    check_float_tensor,
    check_int_in,
    check_optional_axis,
    check_real_in,
    require_finite,
)
from .affine import dequantize, quantize, symmetric_qparams

__all__ = [
    "LogQuantized",
    "log_levels",
    "log_quantize",
    "KMeansQuantized",
    "kmeans_quantize",
    "finetune_codebooks",
    "NF4Quantized",
    "nf4_levels",
    "nf4_quantize",
]

# QLoRA stores the block scales of double quantization in blocks of 256.
DQ_BLOCK = 256
_EPS = torch.finfo(torch.float32).eps


# --------------------------------------------------------------------------- shared helpers


def _check_finite(w: torch.Tensor, fn: str) -> None:
    require_finite(w, fn, what="the weights hold", first_index=True)


def _rows(w: torch.Tensor, axis: int | None, fn: str) -> tuple[torch.Tensor, int | None]:
    """``w`` as a 2-D ``(slices, values)`` view: one row per tensor or per slice along axis."""
    axis = check_optional_axis(axis, w.ndim, fn)
    if axis is None:
        return w.reshape(1, -1), None
    inner = math.prod(w.shape) // w.shape[axis] if w.shape[axis] else 0
    return w.movedim(axis, 0).reshape(w.shape[axis], inner), axis


def _unrows(rows: torch.Tensor, shape: torch.Size, axis: int | None) -> torch.Tensor:
    if axis is None:
        return rows.reshape(shape)
    moved = (shape[axis], *shape[:axis], *shape[axis + 1 :])
    return rows.reshape(moved).movedim(0, axis)


def _nearest(values: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Index of the nearest level for each value; rows of ``levels`` are sorted ascending.

    ``levels`` is ``(k,)`` for all values or ``(rows, k)`` for a 2-D ``values``; comparisons
    run in float64 against the midpoints, and a value on a midpoint takes the lower level.
    """
    lv = levels.double()
    mids = ((lv[..., 1:] + lv[..., :-1]) / 2).contiguous()
    return torch.searchsorted(mids, values.double().contiguous(), right=False)


def _packed(numel: int, bits: int) -> int:
    return -(-numel * bits // 8)


# --------------------------------------------------------------------------- logarithmic


def log_levels(bits: int = 4, *, frac_bits: int = 0) -> torch.Tensor:
    """The non-negative magnitudes of a ``bits``-bit log grid at scale 1, ascending (float32).

    ``[0, 2^(-(K-1)/2^f), ..., 2^(-1/2^f), 1]`` with ``K = 2^(bits-1) - 1`` non-zero levels
    and ``f = frac_bits``: each level is the next one divided by ``2^(1/2^f)``.
    """
    fn = "log_levels"
    check_bits(bits, 2, 8, fn)
    check_int_in(frac_bits, "frac_bits", fn, 0, 4)
    k = 2 ** (bits - 1) - 1
    e = torch.arange(k - 1, -1, -1, dtype=torch.float64)
    mags = torch.exp2(-e / 2**frac_bits)
    return torch.cat([mags.new_zeros(1), mags]).float()


class _Stored:
    """What the three stored formats share: bits per weight from their ``nbytes``."""

    codes: torch.Tensor
    nbytes: int

    @property
    def bits_per_weight(self) -> float:
        """Stored bits per weight, scales and codebooks included."""
        return 8 * self.nbytes / max(1, self.codes.numel())


@dataclass(frozen=True, eq=False)
class LogQuantized(_Stored):
    """Sign-and-exponent codes: ``codes`` int8 in ``[-K, K]``, ``K = 2^(bits-1) - 1``.

    ``|code|`` indexes ``log_levels(bits, frac_bits=frac_bits)`` (0 is zero, K is the scale)
    and its sign is the weight's sign; ``scale`` (float32) is ``max|w|`` per tensor (0-d) or
    per slice along ``axis`` (shape ``(C,)``).
    """

    codes: torch.Tensor
    scale: torch.Tensor
    bits: int
    frac_bits: int
    axis: int | None

    def dequantize(self) -> torch.Tensor:
        """``sign(code) * scale * log_levels[|code|]`` in float32, shaped like the input."""
        levels = log_levels(self.bits, frac_bits=self.frac_bits).to(self.codes.device)
        rows, _ = _rows(self.codes, self.axis, "LogQuantized.dequantize")
        mag = levels[rows.abs().long()] * self.scale.reshape(-1, 1)
        out = torch.where(rows < 0, -mag, mag)
        return _unrows(out, self.codes.shape, self.axis)

    @property
    def nbytes(self) -> int:
        """Codes packed at ``bits`` each plus one float32 scale per scale."""
        return _packed(self.codes.numel(), self.bits) + 4 * self.scale.numel()


def log_quantize(
    w: torch.Tensor, bits: int = 4, *, axis: int | None = None, frac_bits: int = 0
) -> LogQuantized:
    """Round each weight to the nearest signed power-of-two level below ``max|w|``.

    One sign bit and ``bits - 1`` bits of exponent code; ``frac_bits`` adds ``2^frac_bits``
    levels per octave (``frac_bits=1``: steps of ``sqrt(2)``). ``axis=None``: one scale for
    the tensor; ``axis=k``: one per slice along ``k``. Values below half the smallest level
    become 0.
    """
    fn = "log_quantize"
    check_float_tensor(w, fn)
    check_bits(bits, 2, 8, fn)
    check_int_in(frac_bits, "frac_bits", fn, 0, 4)
    rows, axis = _rows(w.detach(), axis, fn)
    _check_finite(w.detach(), fn)
    levels = log_levels(bits, frac_bits=frac_bits).to(w.device)
    if rows.numel() == 0:
        scale = torch.zeros(rows.shape[0] if axis is not None else (), device=w.device)
        return LogQuantized(torch.zeros(w.shape, dtype=torch.int8, device=w.device),
                            scale.float(), bits, frac_bits, axis)
    amax = rows.abs().amax(dim=1).float()
    scale = torch.clamp(amax, min=_EPS)
    mag = _nearest(rows.abs().float() / scale[:, None], levels)
    codes = torch.where(rows < 0, -mag, mag).to(torch.int8)
    return LogQuantized(
        _unrows(codes, w.shape, axis), scale if axis is not None else scale.reshape(()),
        bits, frac_bits, axis,
    )


# --------------------------------------------------------------------------- k-means


@dataclass(frozen=True, eq=False)
class KMeansQuantized(_Stored):
    """Codebook quantization: ``codes`` (uint8, in ``[0, 2^bits)``) index ``codebook``.

    ``codebook`` is float32, sorted ascending in each row: ``(2^bits,)`` per tensor or
    ``(C, 2^bits)``, one codebook per slice along ``axis``.
    """

    codes: torch.Tensor
    codebook: torch.Tensor
    bits: int
    axis: int | None

    def dequantize(self) -> torch.Tensor:
        """``codebook[code]`` for every weight, float32, shaped like the input."""
        rows, _ = _rows(self.codes, self.axis, "KMeansQuantized.dequantize")
        book = self.codebook.reshape(rows.shape[0] if self.axis is not None else 1, 2**self.bits)
        out = book.gather(1, rows.long().expand(book.shape[0], -1))
        return _unrows(out, self.codes.shape, self.axis)

    @property
    def nbytes(self) -> int:
        """Codes packed at ``bits`` each plus every codebook entry as float32."""
        return _packed(self.codes.numel(), self.bits) + 4 * self.codebook.numel()


# k-means++ seeds each row from at most this many evenly spaced order statistics of it (each
# stands for the same number of weights), which keeps seeding cheap on large matrices.
_SEED_SKETCH = 4096


def _kmeanspp(sorted_rows: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ seeding per row (float64): each next centre drawn with probability ~ d^2."""
    n_rows, n = sorted_rows.shape
    if n > _SEED_SKETCH:
        pick = ((torch.arange(_SEED_SKETCH, dtype=torch.float64) + 0.5) * (n / _SEED_SKETCH))
        sorted_rows = sorted_rows[:, pick.long()]
        n = _SEED_SKETCH
    u = torch.rand(n_rows, k, generator=gen, dtype=torch.float64)
    first = torch.clamp((u[:, 0] * n).long(), max=n - 1)
    centres = [sorted_rows.gather(1, first[:, None])]
    d2 = (sorted_rows - centres[0]) ** 2
    for j in range(1, k):
        cdf = torch.cumsum(d2, dim=1)
        target = (u[:, j] * cdf[:, -1]).unsqueeze(1)
        idx = torch.clamp(torch.searchsorted(cdf, target, right=True), max=n - 1)
        c = sorted_rows.gather(1, idx)
        centres.append(c)
        d2 = torch.minimum(d2, (sorted_rows - c) ** 2)
    return torch.sort(torch.cat(centres, dim=1), dim=1).values


def _lloyd(sorted_rows: torch.Tensor, centres: torch.Tensor, iters: int) -> torch.Tensor:
    """Lloyd's algorithm in 1-D: every cluster is an interval of the sorted values, so its
    sum comes from a prefix sum in O(k log n) per row; an empty cluster keeps its centre."""
    n_rows, n = sorted_rows.shape
    prefix = torch.cat([sorted_rows.new_zeros(n_rows, 1), torch.cumsum(sorted_rows, dim=1)], 1)
    full = torch.full((n_rows, 1), n, dtype=torch.long)
    zero = torch.zeros((n_rows, 1), dtype=torch.long)
    for _ in range(iters):
        mids = ((centres[:, 1:] + centres[:, :-1]) / 2).contiguous()
        # ends[j]: how many values are <= the j-th midpoint (ties go to the lower centre)
        ends = torch.searchsorted(sorted_rows, mids, right=True)
        lo = torch.cat([zero, ends], dim=1)
        hi = torch.cat([ends, full], dim=1)
        count = hi - lo
        sums = prefix.gather(1, hi) - prefix.gather(1, lo)
        new = torch.where(count > 0, sums / count.clamp(min=1), centres)
        if torch.equal(new, centres):
            break
        centres = new
    return centres


def kmeans_quantize(
    w: torch.Tensor,
    bits: int,
    *,
    axis: int | None = None,
    seed: int = 0,
    iters: int = 30,
    init: str = "kmeans++",
) -> KMeansQuantized:
    """Fit ``2^bits`` centroids to the weights (1-D k-means) and store each weight's index.

    ``init="kmeans++"`` seeds the centroids by k-means++ (on at most 4096 evenly spaced order
    statistics of each row) from a generator seeded with ``seed`` (the global RNG is
    untouched); ``init="linear"`` spaces them evenly between the
    smallest and the largest weight (Deep Compression's choice: it keeps the rare large
    weights). Then up to ``iters`` exact Lloyd iterations (stopping early once the centroids
    stop moving). ``axis=None``: one codebook for the tensor; ``axis=k``: one per slice.
    Same input, same arguments, same result.
    """
    fn = "kmeans_quantize"
    check_float_tensor(w, fn)
    check_bits(bits, 1, 8, fn)
    check_int_in(iters, "iters", fn, 0, 10_000)
    check_int_in(seed, "seed", fn, 0, 2**63 - 1)
    if init not in ("kmeans++", "linear"):
        raise ValueError(f"{fn}: init must be 'kmeans++' or 'linear', got {init!r}")
    rows, axis = _rows(w.detach(), axis, fn)
    _check_finite(w.detach(), fn)
    k = 2**bits
    if rows.numel() == 0:
        book = torch.zeros((rows.shape[0], k) if axis is not None else (k,), device=w.device)
        return KMeansQuantized(torch.zeros(w.shape, dtype=torch.uint8, device=w.device),
                               book, bits, axis)
    x = rows.double().cpu()
    sorted_rows = torch.sort(rows.float().cpu(), dim=1).values.double()
    if init == "linear":
        t = torch.linspace(0, 1, k, dtype=torch.float64)
        lo, hi = sorted_rows[:, :1], sorted_rows[:, -1:]
        centres = lo + (hi - lo) * t
    else:
        centres = _kmeanspp(sorted_rows, k, torch.Generator().manual_seed(seed))
    codebook = _lloyd(sorted_rows, centres, iters).float()
    codes = _nearest(x, codebook).to(torch.uint8)
    codebook = codebook.to(w.device)
    return KMeansQuantized(
        _unrows(codes.to(w.device), w.shape, axis),
        codebook if axis is not None else codebook.reshape(k),
        bits, axis,
    )


def finetune_codebooks(
    model: torch.nn.Module,
    quantized: Mapping[str, KMeansQuantized],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    steps: int = 100,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
) -> dict[str, KMeansQuantized]:
    """Train the centroids of ``quantized`` (parameter name -> codebook) on a classifier.

    The named parameters of ``model`` are replaced by ``codebook[codes]``; the codes and every
    other parameter stay fixed. Backpropagating through that lookup sums the gradients of all
    the weights that share a centroid, which is Deep Compression's centroid update. Adam on
    cross-entropy (written out, the usual hyperparameters), mini-batches drawn by a generator
    seeded with ``seed``. ``model`` is not changed; returns new ``KMeansQuantized`` with the
    trained codebooks (codes unchanged).
    """
    fn = "finetune_codebooks"
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"{fn}: expected an nn.Module, got {type(model).__name__}")
    params = dict(model.named_parameters())
    for name, q in quantized.items():
        if not isinstance(q, KMeansQuantized):
            raise TypeError(f"{fn}: quantized[{name!r}] must be a KMeansQuantized")
        if name not in params:
            raise ValueError(f"{fn}: the model has no parameter named {name!r}")
        if q.codes.shape != params[name].shape:
            raise ValueError(f"{fn}: codes for {name!r} have shape {tuple(q.codes.shape)}, the "
                             f"parameter {tuple(params[name].shape)}")
    check_int_in(steps, "steps", fn, 0, 1_000_000)
    check_int_in(batch_size, "batch_size", fn, 1, 1 << 30)
    check_real_in(lr, "lr", fn, lo=0, lo_open=True)
    if len(inputs) != len(targets) or len(inputs) == 0:
        raise ValueError(f"{fn}: need as many targets as inputs (and at least one), got "
                         f"{len(inputs)} inputs and {len(targets)} targets")
    books = {n: torch.nn.Parameter(q.codebook.detach().clone()) for n, q in quantized.items()}
    # A private copy whose quantized weights are plain tensors rebuilt from the codebooks at
    # every step, so autograd reaches the codebooks; the other parameters are frozen.
    work = copy.deepcopy(model).eval()
    for p in work.parameters():
        p.requires_grad_(False)
    slots = {}
    for n in books:
        owner, _, attr = n.rpartition(".")
        module = work.get_submodule(owner)
        del module._parameters[attr]
        slots[n] = (module, attr)
    # Adam written out (torch.optim's first step imports the compiler stack: seconds).
    moments = {n: (torch.zeros_like(b), torch.zeros_like(b)) for n, b in books.items()}
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    gen = torch.Generator().manual_seed(seed)
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(inputs), (min(batch_size, len(inputs)),), generator=gen)
        for n, b in books.items():
            module, attr = slots[n]
            setattr(module, attr, replace(quantized[n], codebook=b).dequantize())
        loss = torch.nn.functional.cross_entropy(work(inputs[idx]), targets[idx])
        grads = torch.autograd.grad(loss, list(books.values()))
        with torch.no_grad():
            for (n, b), g in zip(books.items(), grads, strict=True):
                m, v = moments[n]
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                m_hat = m / (1 - beta1**step)
                v_hat = v / (1 - beta2**step)
                b.sub_(lr * m_hat / (v_hat.sqrt() + eps))
    return {n: replace(quantized[n], codebook=b.detach().clone()) for n, b in books.items()}


# --------------------------------------------------------------------------- NF4


def nf4_levels() -> torch.Tensor:
    """QLoRA's 16 NormalFloat-4 levels in ``[-1, 1]`` (float32, ascending, an exact 0).

    8 positive levels at the standard normal quantiles of 8 equally spaced probabilities from
    0.5 to ``p_max``, 7 negative ones mirrored from quantiles of 7 equally spaced
    probabilities, each half scaled so that its end is exactly 1; zero is shared.
    ``p_max = 1 - (1/(2*15) + 1/(2*16)) / 2`` keeps the outermost quantile finite.
    """
    p_max = 1 - (1 / (2 * 15) + 1 / (2 * 16)) / 2
    pos = torch.special.ndtri(torch.linspace(0.5, p_max, 9, dtype=torch.float64)[1:])
    neg = -torch.special.ndtri(torch.linspace(0.5, p_max, 8, dtype=torch.float64)[1:])
    levels = torch.cat([neg, torch.zeros(1, dtype=torch.float64), pos]) / pos.max()
    return torch.sort(levels).values.float()


@dataclass(frozen=True, eq=False)
class NF4Quantized(_Stored):
    """NF4 codes (uint8 in ``[0, 16)``, indices into ``nf4_levels()``) and block scales.

    The flattened weights are cut into blocks of ``block_size`` (the last one zero-padded).
    Without double quantization ``absmax`` holds one float32 scale per block. With it,
    ``absmax`` is None and the scales are stored as ``absmax_codes`` (int8, one per block),
    dequantized as ``absmax_mean + absmax_step[block // 256] * code``.
    """

    codes: torch.Tensor
    absmax: torch.Tensor | None
    block_size: int
    absmax_codes: torch.Tensor | None = None
    absmax_step: torch.Tensor | None = None
    absmax_mean: torch.Tensor | None = None

    @property
    def double_quant(self) -> bool:
        """Whether the block scales are stored in 8 bits."""
        return self.absmax is None

    def block_scales(self) -> torch.Tensor:
        """The float32 absmax of each block, as the dequantizer sees it."""
        if self.absmax is not None:
            return self.absmax
        n = self.absmax_codes.numel()
        step = self.absmax_step.repeat_interleave(DQ_BLOCK)[:n]
        return torch.clamp(self.absmax_mean + step * self.absmax_codes.float(), min=_EPS)

    def dequantize(self) -> torch.Tensor:
        """``nf4_levels()[code] * absmax`` of its block, float32, shaped like the input."""
        levels = nf4_levels().to(self.codes.device)
        flat = levels[self.codes.reshape(-1).long()]
        n = flat.numel()
        pad = (-n) % self.block_size
        blocks = torch.cat([flat, flat.new_zeros(pad)]).reshape(-1, self.block_size)
        out = (blocks * self.block_scales()[:, None]).reshape(-1)[:n]
        return out.reshape(self.codes.shape)

    @property
    def nbytes(self) -> int:
        """4-bit codes, plus 4 bytes per block, or with double quantization 1 byte per block,
        4 bytes per 256 blocks and 4 bytes for the mean."""
        codes = _packed(self.codes.numel(), 4)
        if self.absmax is not None:
            return codes + 4 * self.absmax.numel()
        return codes + self.absmax_codes.numel() + 4 * self.absmax_step.numel() + 4


def nf4_quantize(w: torch.Tensor, *, block_size: int = 64, double_quant: bool = False):
    """Quantize to NF4: per block of ``block_size`` consecutive weights (flattened, C order)
    divide by the block's ``max|w|``, round to the nearest of ``nf4_levels()``.

    ``double_quant=True`` also quantizes the block scales, as QLoRA does: subtract their mean,
    then symmetric 8-bit codes with one float32 step per 256 scales (QLoRA uses an 8-bit float
    there; the course's int8 grid from notebook 03 costs the same bits). ``block_size`` must
    be a power of two from 16 to 4096. Returns ``NF4Quantized``.
    """
    fn = "nf4_quantize"
    check_float_tensor(w, fn)
    if (isinstance(block_size, bool) or not isinstance(block_size, int)
            or not 16 <= block_size <= 4096 or block_size & (block_size - 1)):
        raise ValueError(f"{fn}: block_size must be a power of two from 16 to 4096, "
                         f"got {block_size!r}")
    check_bool(double_quant, "double_quant", fn)
    w = w.detach()
    _check_finite(w, fn)
    flat = w.reshape(-1).float()
    n = flat.numel()
    pad = (-n) % block_size
    blocks = torch.cat([flat, flat.new_zeros(pad)]).reshape(-1, block_size)
    absmax = torch.clamp(blocks.abs().amax(dim=1), min=_EPS)
    if not double_quant:
        scales = absmax
        extra: dict = {"absmax": absmax}
    else:
        mean = absmax.mean() if absmax.numel() else absmax.new_zeros(())
        centred = absmax - mean
        dq_pad = (-centred.numel()) % DQ_BLOCK
        groups = torch.cat([centred, centred.new_zeros(dq_pad)]).reshape(-1, DQ_BLOCK)
        qp = symmetric_qparams(groups, 8, group_size=DQ_BLOCK)
        q = quantize(groups, qp)
        scales = torch.clamp(dequantize(q, qp).reshape(-1)[: absmax.numel()] + mean, min=_EPS)
        extra = {"absmax": None, "absmax_codes": q.reshape(-1)[: absmax.numel()],
                 "absmax_step": qp.scale.reshape(-1), "absmax_mean": mean}
    # a rounded-down scale can leave |w| / scale slightly above 1: that rounds to +-1 anyway
    codes = _nearest(blocks / scales[:, None], nf4_levels().to(w.device))
    codes = codes.reshape(-1)[:n].to(torch.uint8).reshape(w.shape)
    return NF4Quantized(codes=codes, block_size=block_size, **extra)
