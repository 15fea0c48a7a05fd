"""Gradient compression for data-parallel training: QSGD, sign with error feedback, DDP hooks.

Introduced in ``18_gradient_quantization.ipynb``.

Compressors (functional: a gradient tensor in, a ``Compressed`` payload out)
    ``qsgd_encode(g, levels=16, chunk=128)`` is QSGD (Alistarh et al., 2017): each chunk of
    ``chunk`` elements is sent as its L2 norm (float32) and, per element, a sign and a level in
    ``{0, ..., s}`` drawn by stochastic rounding of ``s |g_i| / ||g||``, so that the decoded
    gradient is unbiased. Its variance is at most ``qsgd_variance_bound(chunk, s)`` times
    ``||g||^2`` (Lemma 3.1 of the paper). The codes travel bit-packed (``qc.pack_bits``) in the
    smallest width that holds ``[-s, s]``: 2 bits for ``s = 1``, 4 for ``s <= 7``, 8 up to 127.
    ``sign_encode(g, chunk=128)`` sends one bit per element and the mean ``|g|`` of each chunk
    (the least-squares scale of notebook 08); it is biased, which ``sign_ef_encode`` corrects by
    error feedback: the part of the gradient the signs could not carry is added to the next
    step's gradient. ``decode_gradient(c)`` rebuilds the float32 gradient; ``c.nbytes`` is the exact
    number of bytes the payload puts on the wire, ``c.to_wire()`` the bytes themselves.

DDP communication hooks
    ``CompressionState(compressor="qsgd" | "sign_ef" | None, levels=16)`` and
    ``compressed_allreduce_hook(state, bucket)`` follow PyTorch's hook signature
    ``hook(state, bucket) -> torch.futures.Future[torch.Tensor]``, for
    ``ddp.register_comm_hook(state, qc.compressed_allreduce_hook)``. Each rank encodes its
    bucket, the payloads travel by one all-gather (as PyTorch's own quantization hooks do:
    compressed codes cannot be summed in flight, so all-reduce does not apply), and every rank
    decodes all payloads in rank order and averages them, so the replicas stay bit-identical.
    ``compressor=None`` is a plain all-reduce of the float32 bucket, the same arithmetic as
    DDP's default. The state counts the bytes this rank sent and what a float32 all-reduce
    would have carried.
"""

import math
from dataclasses import dataclass, field

import torch

from ._validate import check_float_tensor, check_int_in
from .packing import pack_bits, unpack_bits

__all__ = [
    "Compressed",
    "CompressionState",
    "compressed_allreduce_hook",
    "decode_gradient",
    "qsgd_encode",
    "qsgd_variance_bound",
    "sign_ef_encode",
    "sign_encode",
]

COMPRESSORS = (None, "qsgd", "sign_ef")
MAX_LEVELS = 127  # codes in [-s, s] must fit a signed byte


@dataclass(frozen=True)
class Compressed:
    """A compressed gradient as it travels: packed codes and one float32 scale per chunk.

    ``kind`` is ``"qsgd"`` (scale = the chunk's L2 norm, codes in ``[-levels, levels]``) or
    ``"sign"`` (scale = the chunk's mean ``|g|``, one bit per element, 1 for ``g >= 0``).
    """

    kind: str
    shape: tuple[int, ...]
    chunk: int
    levels: int
    bits: int
    codes: torch.Tensor  # uint8, packed
    scales: torch.Tensor  # float32, one per chunk

    @property
    def numel(self) -> int:
        """Elements of the gradient this payload carries."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes on the wire: the packed codes plus 4 per chunk scale."""
        return self.codes.numel() + 4 * self.scales.numel()

    def to_wire(self) -> torch.Tensor:
        """The payload as one flat uint8 tensor (codes, then the scales' float32 bytes)."""
        return torch.cat([self.codes, self.scales.contiguous().view(torch.uint8)])

    def from_wire(self, buf: torch.Tensor) -> "Compressed":
        """A payload of this one's layout (kind, shape, chunk, levels) read from ``buf``."""
        if buf.dtype != torch.uint8 or buf.numel() != self.nbytes:
            raise ValueError(
                f"from_wire: expected {self.nbytes} uint8 bytes, got {buf.numel()} {buf.dtype}"
            )
        n_codes = self.codes.numel()
        scales = buf[n_codes:].clone().view(torch.float32)
        return Compressed(self.kind, self.shape, self.chunk, self.levels, self.bits,
                          buf[:n_codes].clone(), scales)


def _check_levels(levels: object, fn: str) -> int:
    return check_int_in(levels, "levels", fn, 1, MAX_LEVELS,
                        why=" (codes in [-levels, levels] travel as at most one signed byte)")


def _check_gradient(g: object, fn: str) -> torch.Tensor:
    check_float_tensor(g, fn)
    bad = int((~torch.isfinite(g)).sum())
    if bad:
        raise ValueError(f"{fn}: the gradient holds {bad} NaN or Inf value(s)")
    return g.detach().reshape(-1).float()


def _code_bits(levels: int) -> int:
    """Smallest packable width whose signed range holds ``[-levels, levels]``."""
    return 2 if levels == 1 else 4 if levels <= 7 else 8


def _chunked(x: torch.Tensor, chunk: int) -> torch.Tensor:
    """``x`` zero-padded to whole chunks, as ``(n_chunks, chunk)``."""
    n_chunks = -(-x.numel() // chunk)
    return torch.nn.functional.pad(x, (0, n_chunks * chunk - x.numel())).view(n_chunks, chunk)


def qsgd_variance_bound(d: int, levels: int) -> float:
    """QSGD's bound on ``E||Q(g) - g||^2 / ||g||^2`` for ``d`` elements per norm and ``levels``
    levels: ``min(d / s^2, sqrt(d) / s)``."""
    fn = "qsgd_variance_bound"
    s = _check_levels(levels, fn)
    d = check_int_in(d, "d", fn)
    return min(d / s**2, math.sqrt(d) / s)


def qsgd_encode(
    g: torch.Tensor, levels: int = 16, *, chunk: int = 128, generator: torch.Generator | None = None
) -> Compressed:
    """QSGD with ``levels`` levels per sign: unbiased stochastic codes and one L2 norm per chunk.

    ``generator`` (a CPU ``torch.Generator``) makes the random rounding reproducible.
    """
    fn = "qsgd_encode"
    s = _check_levels(levels, fn)
    chunk = check_int_in(chunk, "chunk", fn)
    x = _check_gradient(g, fn)
    blocks = _chunked(x, chunk)
    norms = torch.linalg.vector_norm(blocks, dim=1)
    safe = torch.where(norms > 0, norms, torch.ones_like(norms))
    r = (blocks.abs() / safe[:, None] * s).clamp_(max=s)  # in [0, s]
    lower = r.floor()
    u = torch.rand(r.shape, generator=generator, dtype=torch.float32)
    level = (lower + (u < r - lower).float()).clamp_(max=s)
    codes = (torch.sign(blocks) * level).reshape(-1)[: x.numel()].to(torch.int8)
    bits = _code_bits(s)
    packed = pack_bits(codes, bits, signed=True)
    return Compressed("qsgd", tuple(g.shape), chunk, s, bits, packed, norms.float())


def sign_encode(g: torch.Tensor, *, chunk: int = 128) -> Compressed:
    """One bit per element (1 where ``g >= 0``) and the mean ``|g|`` of each chunk."""
    fn = "sign_encode"
    chunk = check_int_in(chunk, "chunk", fn)
    x = _check_gradient(g, fn)
    blocks = _chunked(x, chunk)
    counts = torch.full((blocks.shape[0],), chunk, dtype=torch.float32)
    if x.numel() % chunk and counts.numel():
        counts[-1] = x.numel() % chunk  # the padding is not part of the mean
    scales = blocks.abs().sum(1) / counts
    packed = pack_bits(x >= 0, 1)
    return Compressed("sign", tuple(g.shape), chunk, 1, 1, packed, scales.float())


def decode_gradient(c: Compressed) -> torch.Tensor:
    """The float32 gradient a payload stands for, in the original shape."""
    if not isinstance(c, Compressed):
        raise TypeError(f"decode_gradient: expected a Compressed payload, got {type(c).__name__}")
    n = c.numel
    if c.kind == "qsgd":
        codes = unpack_bits(c.codes, c.bits, n, signed=True).float()
        per_element = c.scales / c.levels
    elif c.kind == "sign":
        codes = unpack_bits(c.codes, 1, n).float() * 2 - 1
        per_element = c.scales
    else:
        raise ValueError(f"decode_gradient: unknown payload kind {c.kind!r}")
    scale = per_element.repeat_interleave(c.chunk)[:n]
    return (codes * scale).reshape(c.shape)


def sign_ef_encode(
    g: torch.Tensor, residual: torch.Tensor | None, *, chunk: int = 128
) -> tuple[Compressed, torch.Tensor]:
    """Sign compression with error feedback: encode ``g + residual``; return the payload and the
    new residual, the part of ``g + residual`` the payload did not carry."""
    fn = "sign_ef_encode"
    check_float_tensor(g, fn)
    corrected = g.detach().float()
    if residual is not None:
        if residual.shape != g.shape:
            raise ValueError(
                f"{fn}: residual has shape {tuple(residual.shape)}, the gradient "
                f"{tuple(g.shape)}"
            )
        corrected = corrected + residual
    c = sign_encode(corrected, chunk=chunk)
    return c, corrected - decode_gradient(c)


# --------------------------------------------------------------------------- DDP hooks


@dataclass
class CompressionState:
    """State of ``compressed_allreduce_hook``: which compressor, its settings and its counters.

    ``compressor``: ``"qsgd"``, ``"sign_ef"`` or ``None`` (a plain float32 all-reduce).
    ``residuals`` holds sign-EF's error-feedback residual per bucket index. ``bytes_sent``
    counts the bytes of this rank's payloads, ``bytes_dense`` those of the float32 buckets
    they replaced; ``seed`` seeds QSGD's random rounding (offset by the rank).
    """

    compressor: str | None = "qsgd"
    levels: int = 16
    chunk: int = 128
    seed: int = 0
    process_group: object = None
    residuals: dict[int, torch.Tensor] = field(default_factory=dict)
    bytes_sent: int = 0
    bytes_dense: int = 0
    calls: int = 0
    generator: torch.Generator | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.compressor not in COMPRESSORS:
            raise ValueError(
                f"CompressionState: compressor must be one of {COMPRESSORS}, "
                f"got {self.compressor!r}"
            )
        _check_levels(self.levels, "CompressionState")
        check_int_in(self.chunk, "chunk", "CompressionState")

    @property
    def ratio(self) -> float:
        """Float32 bytes over bytes sent so far (1.0 for the plain all-reduce)."""
        return self.bytes_dense / self.bytes_sent if self.bytes_sent else float("nan")


def compressed_allreduce_hook(
    state: CompressionState, bucket
) -> torch.futures.Future[torch.Tensor]:
    """DDP communication hook: average the bucket's gradients across ranks, compressed.

    Register with ``ddp.register_comm_hook(state, qc.compressed_allreduce_hook)``.
    """
    import torch.distributed as dist

    fn = "compressed_allreduce_hook"
    if not isinstance(state, CompressionState):
        raise TypeError(f"{fn}: state must be a qc.CompressionState, got {type(state).__name__}")
    grad = bucket.buffer()
    if grad.dtype != torch.float32:
        raise TypeError(
            f"{fn}: buckets of {grad.dtype} are not supported; the compressors handle float32 "
            "gradients (keep the model's parameters in float32)"
        )
    group = state.process_group if state.process_group is not None else dist.group.WORLD
    world = dist.get_world_size(group)
    state.calls += 1
    state.bytes_dense += grad.numel() * grad.element_size()

    if state.compressor is None:
        state.bytes_sent += grad.numel() * grad.element_size()
        grad.div_(world)  # divide first, as PyTorch's allreduce_hook does
        work = dist.all_reduce(grad, group=group, async_op=True)
        return work.get_future().then(lambda fut: fut.value()[0])

    if state.compressor == "qsgd":
        if state.generator is None:
            rank = dist.get_rank(group)
            state.generator = torch.Generator().manual_seed(state.seed * 1_000_003 + rank)
        payload = qsgd_encode(grad, state.levels, chunk=state.chunk, generator=state.generator)
    else:
        idx = bucket.index()
        residual = state.residuals.get(idx)
        if residual is not None and residual.shape != grad.shape:
            residual = None  # DDP rebuilt its buckets after the first step: start afresh
        payload, state.residuals[idx] = sign_ef_encode(grad, residual, chunk=state.chunk)

    wire = payload.to_wire()
    state.bytes_sent += wire.numel()
    gathered = [torch.empty_like(wire) for _ in range(world)]
    work = dist.all_gather(gathered, wire, group=group, async_op=True)

    def decode_and_average(fut) -> torch.Tensor:
        fut.wait()  # re-raises a failed all-gather; ``gathered`` is filled in place
        total = torch.zeros_like(grad)
        for buf in gathered:  # rank order: every rank sums in the same order
            total += decode_gradient(payload.from_wire(buf)).reshape(grad.shape)
        grad.copy_(total / world)
        return grad

    return work.get_future().then(decode_and_average)
