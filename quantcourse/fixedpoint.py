"""Fixed-point arithmetic and integer-only inference.

Introduced in ``13_integer_only_inference.ipynb``.

An integer-only engine (TensorFlow Lite's reference kernels, gemmlowp, CMSIS-NN, most NPUs)
never touches a float at run time. Each layer accumulates int8 x int8 products into int32 and
then has to *rescale* that accumulator onto the next layer's int8 grid by a real number
``M = s_in * s_w / s_out``. The trick is to store ``M`` ahead of time as a 31-bit integer
mantissa and a power-of-two exponent, ``M ~= m0 * 2^(shift - 31)``, and to multiply with
integer instructions only. The functions here reproduce the reference semantics bit for bit
(gemmlowp's ``fixedpoint.h`` and TensorFlow Lite's ``QuantizeMultiplier`` /
``MultiplyByQuantizedMultiplier``):

* ``quantize_multiplier(m) -> (m0, shift)``: ``m0`` in ``[2^30, 2^31)`` (``m = 0`` gives
  ``(0, 0)``), ``m = m0 * 2^(shift - 31)`` to 31 significant bits, rounding half away from
  zero; multipliers below ``2^-31`` become ``(0, 0)`` as in TensorFlow Lite.
* ``saturating_rounding_doubling_high_mul(a, b)``: the high 32 bits of ``2 * a * b``, rounded
  to nearest (gemmlowp's nudge sends ties up: 1.5 -> 2, -1.5 -> -1), with the one overflowing
  case ``INT32_MIN * INT32_MIN`` saturated to ``INT32_MAX`` (Arm's ``SQRDMULH`` instruction).
* ``rounding_divide_by_pot(x, exponent)``: ``x / 2^exponent`` rounded half away from zero, for
  exponents 0 to 31 (an arithmetic shift with a rounding correction).
* ``multiply_by_quantized_multiplier(x, m0, shift)``: ``x * M`` in integers: a left shift for
  ``shift > 0``, the high multiply, then the rounding right shift.

On top of ``formats``' Q-format helpers (``to_fixed``, ``from_fixed``, ``fixed_qparams``):

* ``fixed_mul(a, b, int_bits, frac_bits)``: the product of two Qm.n codes, rounded back to n
  fraction bits (half away from zero) and saturated to the format.

Integer layers and a whole network:

* ``zero_point_matmul(qa, za, qw, zw, bias=None)``: ``sum_k (qa - za)(qw - zw) + bias`` in
  int32 through ``sum qa qw - zw sum qa - za sum qw + K za zw``, with the product from
  ``kernels.int8_matmul``; the bias is int32 at scale ``s_a * s_w``.
* ``integer_digits_cnn(sim)`` builds an ``IntegerDigitsCNN`` from the fake-quant simulation
  ``deploy.simulate_qdq(model, calibration)`` (uint8 activations): the same codes, shifted to
  int8 (``q - 128``, zero point ``z - 128``), int8 per-channel weights, int32 biases with the
  activation zero point folded in, and one ``(m0, shift)`` pair per output channel. Its
  ``forward`` uses integer tensor operations only: int8 x int8 -> int32 products, fixed-point
  requantization, ReLU as a clamp at the zero point, 2x2 max pooling on the codes. The last
  layer is requantized onto one int32 grid shared by the ten logits, so even the argmax is an
  integer comparison.
* ``qdq_activation_codes(sim, x)``: the codes the float simulation produces at the same
  places, for comparing the two.

Floats appear only ahead of time (computing the multipliers) and at the two ends (quantizing
the input image, dequantizing the logits for display).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ._validate import check_float_tensor
from .affine import quantize
from .formats import fixed_qparams
from .kernels import int8_matmul

__all__ = [
    "INT32_MIN",
    "INT32_MAX",
    "quantize_multiplier",
    "saturating_rounding_doubling_high_mul",
    "rounding_divide_by_pot",
    "multiply_by_quantized_multiplier",
    "fixed_mul",
    "zero_point_matmul",
    "IntegerDigitsCNN",
    "integer_digits_cnn",
    "qdq_activation_codes",
]

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
_LAYERS = ("conv1", "conv2", "fc1", "fc2")
_MATMULS = ("int8_matmul", "int32")


# ---------------------------------------------------------------- validation


def _int32_tensor(x: object, name: str, fn: str) -> torch.Tensor:
    """An int32 tensor; Python ints are accepted and checked against the int32 range."""
    if isinstance(x, numbers.Integral) and not isinstance(x, bool):
        if not INT32_MIN <= int(x) <= INT32_MAX:
            raise ValueError(f"{fn}: {name} = {int(x)} does not fit in int32")
        return torch.tensor(int(x), dtype=torch.int32)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{fn}: {name} must be an int32 tensor or an int, got {type(x).__name__}")
    if x.dtype != torch.int32:
        raise TypeError(
            f"{fn}: {name} must be an int32 tensor, got {x.dtype}; convert integer codes with "
            ".to(torch.int32) (floats have no place in integer-only arithmetic)"
        )
    return x


def _integer_tensor(x: object, name: str, fn: str) -> torch.Tensor:
    """An int or an integer tensor (a bool is neither), as an int64 tensor."""
    if isinstance(x, numbers.Integral) and not isinstance(x, bool):
        return torch.tensor(int(x), dtype=torch.int64)
    if isinstance(x, torch.Tensor) and not (x.is_floating_point() or x.is_complex()
                                            or x.dtype == torch.bool):
        return x.to(torch.int64)
    got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
    raise TypeError(f"{fn}: {name} must be an int or an integer tensor, got {got}")


def _check_range(t: torch.Tensor, lo: int, hi: int, name: str, fn: str, why: str) -> None:
    if t.numel() == 0:
        return
    mn, mx = int(t.min()), int(t.max())
    if mn < lo or mx > hi:
        raise ValueError(f"{fn}: {name} must lie in [{lo}, {hi}] ({why}), got values in "
                         f"[{mn}, {mx}]")


def _check_multiplier(m0: torch.Tensor, shift: torch.Tensor, fn: str) -> None:
    _check_range(shift, -31, 30, "shift", fn, "the exponent of a multiplier from "
                 "quantize_multiplier")
    if m0.numel():
        bad = (m0 != 0) & (m0 < 2**30)
        if bool(bad.any()):
            raise ValueError(
                f"{fn}: m0 must be 0 or lie in [2^30, 2^31) (a normalized 31-bit mantissa from "
                f"quantize_multiplier), got {int(m0[bad].reshape(-1)[0])}"
            )


# ---------------------------------------------------------------- the multiplier


def quantize_multiplier(
    m: float | torch.Tensor,
) -> tuple[int, int] | tuple[torch.Tensor, torch.Tensor]:
    """Split a real multiplier ``m >= 0`` into ``(m0, shift)`` with ``m ~= m0 * 2^(shift-31)``.

    ``m0`` is in ``[2^30, 2^31)`` (TensorFlow Lite's ``QuantizeMultiplier``: the mantissa of
    ``m`` rounded half away from zero to 31 bits); ``m = 0`` and multipliers below ``2^-31``
    give ``(0, 0)``. A number gives two ints, a float tensor two int32 tensors of its shape.
    """
    fn = "quantize_multiplier"
    scalar = not isinstance(m, torch.Tensor)
    if scalar:
        if isinstance(m, bool) or not isinstance(m, numbers.Real):
            raise TypeError(f"{fn}: m must be a real number or a float tensor, got "
                            f"{type(m).__name__}")
        t = torch.tensor(float(m), dtype=torch.float64)
    else:
        check_float_tensor(m, fn)
        t = m.detach().to(device="cpu", dtype=torch.float64)
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        raise ValueError(f"{fn}: the multiplier holds {int(bad.sum())} NaN or infinite value(s)")
    if bool((t < 0).any()):
        raise ValueError(
            f"{fn}: the multiplier must be >= 0 (a ratio of positive scales), got a minimum of "
            f"{float(t.min()):.6g}; handle the sign separately"
        )
    if bool((t >= 2.0**31).any()):
        raise ValueError(f"{fn}: the multiplier must be below 2^31, got {float(t.max()):.6g}")
    mant, exp = torch.frexp(t)  # t = mant * 2^exp, mant in [0.5, 1) (0 for t = 0)
    # mant * 2^31 is exact in float64 (a 53-bit mantissa moved by 31 places); round half away
    # from zero as TensorFlow Lite's TfLiteRound (std::round) does.
    m0 = torch.floor(mant * 2.0**31 + 0.5).to(torch.int64)
    shift = exp.to(torch.int64)
    carry = m0 == 2**31  # the mantissa rounded up to 1.0: renormalize
    m0 = torch.where(carry, m0 // 2, m0)
    shift = torch.where(carry, shift + 1, shift)
    tiny = (shift < -31) | (m0 == 0)  # every bit would be shifted out: TFLite stores zero
    m0 = torch.where(tiny, torch.zeros_like(m0), m0)
    shift = torch.where(tiny, torch.zeros_like(shift), shift)
    if bool((shift > 30).any()):
        raise ValueError(f"{fn}: the multiplier {float(t.max()):.6g} needs a left shift above 30")
    m0, shift = m0.to(torch.int32), shift.to(torch.int32)
    if scalar:
        return int(m0), int(shift)
    return m0.to(m.device), shift.to(m.device)


def saturating_rounding_doubling_high_mul(
    a: torch.Tensor | int, b: torch.Tensor | int
) -> torch.Tensor:
    """High 32 bits of ``2 * a * b`` (int32), rounded to nearest, saturating.

    gemmlowp's ``SaturatingRoundingDoublingHighMul``: ``(a * b + nudge) / 2^31`` in 64 bits,
    truncated toward zero, with ``nudge = 2^30`` (or ``1 - 2^30`` for a negative product), so
    ties go up (``-1.5 -> -1``); the only product that overflows, ``INT32_MIN * INT32_MIN``,
    gives ``INT32_MAX``.
    """
    fn = "saturating_rounding_doubling_high_mul"
    a32, b32 = _int32_tensor(a, "a", fn), _int32_tensor(b, "b", fn)
    ab = a32.to(torch.int64) * b32.to(torch.int64)
    ab.add_(torch.where(ab >= 0, 2**30, 1 - 2**30))  # the nudge
    high = torch.div(ab, 2**31, rounding_mode="trunc").to(torch.int32)
    overflow = (a32 == INT32_MIN) & (b32 == INT32_MIN)
    return high.masked_fill_(overflow, INT32_MAX) if bool(overflow.any()) else high


def rounding_divide_by_pot(x: torch.Tensor | int, exponent: int | torch.Tensor) -> torch.Tensor:
    """``x / 2^exponent`` rounded half away from zero (int32 in, int32 out), exponent 0..31.

    gemmlowp's ``RoundingDivideByPOT``: an arithmetic right shift, plus one when the bits
    shifted out exceed half (or, for negative ``x``, exceed half or equal it). ``exponent`` is
    an int or an integer tensor that broadcasts against ``x`` (one per channel).
    """
    fn = "rounding_divide_by_pot"
    x32 = _int32_tensor(x, "x", fn)
    e = _integer_tensor(exponent, "exponent", fn)
    _check_range(e, 0, 31, "exponent", fn, "a right shift of an int32")
    x64 = x32.to(torch.int64)
    mask = torch.bitwise_left_shift(torch.ones_like(e), e) - 1
    remainder = torch.bitwise_and(x64, mask)  # the low bits, as in two's complement int32
    threshold = torch.bitwise_right_shift(mask, 1) + (x64 < 0).to(torch.int64)
    out = torch.bitwise_right_shift(x64, e) + (remainder > threshold).to(torch.int64)
    return out.to(torch.int32)


def multiply_by_quantized_multiplier(
    x: torch.Tensor | int, m0: torch.Tensor | int, shift: torch.Tensor | int
) -> torch.Tensor:
    """``x * m0 * 2^(shift - 31)`` in integers only, TensorFlow Lite's reference semantics.

    ``x`` int32; ``m0`` and ``shift`` from ``quantize_multiplier`` (ints, or int32 tensors that
    broadcast against ``x``, one per channel). A positive ``shift`` is a left shift of ``x``
    first (saturated to int32, where the C code would overflow), then
    ``saturating_rounding_doubling_high_mul(x, m0)``, then ``rounding_divide_by_pot`` by
    ``-shift`` when ``shift < 0``.
    """
    fn = "multiply_by_quantized_multiplier"
    x32 = _int32_tensor(x, "x", fn)
    m = _int32_tensor(m0, "m0", fn)
    s = _int32_tensor(shift, "shift", fn)
    _check_multiplier(m, s, fn)
    left = torch.clamp(s, min=0).to(torch.int64)
    right = torch.clamp(-s, min=0)
    shifted = torch.bitwise_left_shift(x32.to(torch.int64), left)
    shifted = torch.clamp(shifted, INT32_MIN, INT32_MAX).to(torch.int32)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, m), right)


# ---------------------------------------------------------------- Q-format multiplication


def fixed_mul(
    a: torch.Tensor, b: torch.Tensor, int_bits: int, frac_bits: int, *, signed: bool = True
) -> torch.Tensor:
    """Multiply two tensors of Qm.n codes (from ``to_fixed``) into Qm.n codes.

    The exact product has ``2n`` fraction bits; it is rounded back to ``n`` (half away from
    zero, ``rounding_divide_by_pot``) and saturated to the format's range, so ``-1 * -1`` in
    Q0.15 gives the largest code, not a wrapped ``-1``. Returns the dtype ``to_fixed`` uses.
    """
    fn = "fixed_mul"
    qp = fixed_qparams(int_bits, frac_bits, signed=signed)  # validates the format
    for name, t in (("a", a), ("b", b)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{fn}: {name} must be a tensor of Q{int_bits}.{frac_bits} codes, "
                            f"got {type(t).__name__}")
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"{fn}: {name} must hold integer codes (qc.to_fixed), got {t.dtype}")
        _check_range(t, qp.qmin, qp.qmax, name, fn, f"the Q{int_bits}.{frac_bits} range")
    # Codes are at most 16 bits wide, so the exact product fits in int32.
    prod = a.to(torch.int32) * b.to(torch.int32)
    q = rounding_divide_by_pot(prod, frac_bits)
    return torch.clamp(q, qp.qmin, qp.qmax).to(qp.dtype)


# ---------------------------------------------------------------- integer matmul


def _zero_point(z: object, name: str, fn: str, n: int | None) -> torch.Tensor:
    t = _integer_tensor(z, name, fn)
    if t.ndim > 1 or (t.ndim == 1 and (n is None or t.numel() != n)):
        want = "one value" if n is None else f"one value or one per output column ({n})"
        raise ValueError(f"{fn}: {name} must be {want}, got shape {tuple(t.shape)}")
    _check_range(t, -128, 127, name, fn, "a zero point of an int8 grid")
    return t.to(torch.int32)


def zero_point_matmul(
    qa: torch.Tensor,
    za: int | torch.Tensor,
    qw: torch.Tensor,
    zw: int | torch.Tensor,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``sum_k (qa[i,k] - za)(qw[k,j] - zw[j]) + bias[j]`` as an int32 ``(M, N)`` tensor.

    ``qa`` ``(M, K)`` and ``qw`` ``(K, N)`` are int8 codes, ``za`` one zero point, ``zw`` one
    or one per column; ``bias`` is int32 at scale ``s_a * s_w``. Computed as
    ``qa @ qw - zw * rowsum(qa) - za * colsum(qw) + K * za * zw`` with ``int8_matmul``.
    """
    fn = "zero_point_matmul"
    for name, t in (("qa", qa), ("qw", qw)):
        if not isinstance(t, torch.Tensor) or t.dtype != torch.int8:
            got = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
            raise TypeError(f"{fn}: {name} must be an int8 tensor of codes, got {got}")
        if t.ndim != 2:
            raise ValueError(f"{fn}: {name} must be 2-D, got shape {tuple(t.shape)}")
    M, K = qa.shape
    if qw.shape[0] != K:
        raise ValueError(f"{fn}: inner dimensions differ: qa is {tuple(qa.shape)}, qw is "
                         f"{tuple(qw.shape)}")
    N = qw.shape[1]
    # |q - z| <= 255, so K products of two such differences fit in int32 while K*255^2 < 2^31.
    k_max = INT32_MAX // (255 * 255)
    if K > k_max:
        raise ValueError(f"{fn}: K = {K} can overflow the int32 accumulator (K <= {k_max})")
    z_a = _zero_point(za, "za", fn, None)
    z_w = _zero_point(zw, "zw", fn, N)
    acc = int8_matmul(qa, qw)
    if bool(z_w.ne(0).any()):
        acc = acc - z_w * qa.sum(dim=1, keepdim=True, dtype=torch.int32)
    if int(z_a) != 0:
        acc = acc - z_a * qw.sum(dim=0, keepdim=True, dtype=torch.int32) + K * z_a * z_w
    if bias is not None:
        if not isinstance(bias, torch.Tensor) or bias.dtype != torch.int32:
            got = bias.dtype if isinstance(bias, torch.Tensor) else type(bias).__name__
            raise TypeError(f"{fn}: bias must be an int32 tensor (scale s_a * s_w), got {got}")
        if bias.shape != (N,):
            raise ValueError(f"{fn}: bias must have shape ({N},), got {tuple(bias.shape)}")
        acc = acc + bias
    return acc.to(torch.int32)


# ---------------------------------------------------------------- the integer digits CNN


@dataclass(frozen=True)
class IntegerLayer:
    """One integer layer: int8 weights ``(K, N)``, int32 bias with the input zero point folded
    in, per-column ``(m0, shift)``, and the output grid ``[out_min, out_max]`` + zero point."""

    weight: torch.Tensor
    bias: torch.Tensor
    m0: torch.Tensor
    shift: torch.Tensor
    z_in: int
    z_out: int
    out_min: int
    out_max: int
    multiplier: torch.Tensor  # float64, kept for display only


def _im2col(q: torch.Tensor, z: int) -> torch.Tensor:
    """3x3 patches (padding 1 with the zero point, the code of real 0) as ``(N*H*W, C*9)``."""
    n, c, h, w = q.shape
    padded = torch.full((n, c, h + 2, w + 2), z, dtype=q.dtype)
    padded[:, :, 1:-1, 1:-1] = q
    patches = padded.unfold(2, 3, 1).unfold(3, 3, 1)  # (N, C, H, W, 3, 3)
    return patches.permute(0, 2, 3, 1, 4, 5).reshape(n * h * w, c * 9)


class IntegerDigitsCNN:
    """The digits CNN in integer arithmetic only (built by ``integer_digits_cnn``).

    ``layers`` maps ``conv1``, ``conv2``, ``fc1``, ``fc2`` to an ``IntegerLayer``;
    ``input_scale`` / ``input_zero_point`` define the int8 input grid, ``logit_scale`` the
    int32 grid of the logits (for display: predictions need no float).
    """

    def __init__(self, layers: dict, input_scale: float, input_zero_point: int,
                 logit_scale: float) -> None:
        self.layers = dict(layers)
        self.input_scale = input_scale
        self.input_zero_point = input_zero_point
        self.logit_scale = logit_scale

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """Float images ``(N, 1, 8, 8)`` to int8 codes (the one float step, at the input)."""
        check_float_tensor(x, "IntegerDigitsCNN.quantize_input")
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, 8, 8):
            raise ValueError(f"IntegerDigitsCNN.quantize_input: expected images (N, 1, 8, 8), "
                             f"got {tuple(x.shape)}")
        inv = torch.reciprocal(torch.tensor(self.input_scale, dtype=torch.float32))
        q = torch.round(x.float().cpu() * inv) + self.input_zero_point
        if not bool(torch.isfinite(q).all()):
            raise ValueError("IntegerDigitsCNN.quantize_input: the images hold NaN or Inf")
        return torch.clamp(q, -128, 127).to(torch.int8)

    def _linear(self, name: str, q: torch.Tensor, matmul: str) -> torch.Tensor:
        layer = self.layers[name]
        if matmul == "int8_matmul":
            acc = int8_matmul(q, layer.weight)
        else:
            acc = torch.matmul(q.to(torch.int32), layer.weight.to(torch.int32))
        return acc + layer.bias  # int32; the input zero point is folded into the bias

    def _requantize(self, name: str, acc: torch.Tensor) -> torch.Tensor:
        layer = self.layers[name]
        y = multiply_by_quantized_multiplier(acc, layer.m0, layer.shift) + layer.z_out
        # ReLU is the clamp at the zero point (out_min = z_out); the grid's ends saturate.
        y = torch.clamp(y, layer.out_min, layer.out_max)
        return y.to(torch.int8) if layer.out_max <= 127 else y

    def forward(self, q: torch.Tensor, *, matmul: str = "int8_matmul",
                trace: bool = False) -> torch.Tensor | dict:
        """Int32 logits ``(N, 10)`` on the grid ``logit_scale`` for int8 images ``q``.

        ``matmul="int8_matmul"`` (the fastest exact path, ``qc.int8_matmul``) or ``"int32"``
        (plain int32 ``torch.matmul``: no float anywhere, even on CPUs where ``int8_matmul``
        computes its exact integers with float32 BLAS). ``trace=True`` returns every layer's
        output codes in a dict (``conv1``, ``conv2``, ``pool``, ``fc1``, ``logits``).
        """
        fn = "IntegerDigitsCNN.forward"
        if matmul not in _MATMULS:
            raise ValueError(f"{fn}: matmul must be one of {_MATMULS}, got {matmul!r}")
        if not isinstance(q, torch.Tensor) or q.dtype != torch.int8:
            raise TypeError(f"{fn}: expected int8 image codes (use quantize_input), got "
                            f"{q.dtype if isinstance(q, torch.Tensor) else type(q).__name__}")
        if q.ndim != 4 or tuple(q.shape[1:]) != (1, 8, 8):
            raise ValueError(f"{fn}: expected codes shaped (N, 1, 8, 8), got {tuple(q.shape)}")
        n = q.shape[0]
        out = {}
        for name, hw in (("conv1", 8), ("conv2", 8)):
            z = self.layers[name].z_in
            acc = self._linear(name, _im2col(q, z), matmul)  # (N*H*W, C_out)
            q = self._requantize(name, acc).reshape(n, hw, hw, -1).permute(0, 3, 1, 2)
            out[name] = q
        # 2x2 max pooling: the largest code is the code of the largest value.
        q = q.reshape(n, q.shape[1], 4, 2, 4, 2).amax(dim=(3, 5))
        out["pool"] = q
        q = self._requantize("fc1", self._linear("fc1", q.reshape(n, -1), matmul))
        out["fc1"] = q
        logits = self._requantize("fc2", self._linear("fc2", q, matmul))
        out["logits"] = logits
        return out if trace else logits

    __call__ = forward

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted digits for float images: quantize the input, run, integer argmax."""
        return self.forward(self.quantize_input(x)).argmax(dim=1)

    def __repr__(self) -> str:
        return "IntegerDigitsCNN(" + ", ".join(
            f"{k}: {tuple(v.weight.shape)}" for k, v in self.layers.items()) + ")"


def integer_digits_cnn(sim) -> IntegerDigitsCNN:
    """Build the integer-only digits CNN from ``simulate_qdq(model, calib)`` (uint8 grids).

    Weight codes, bias codes and activation grids are exactly the simulation's; the uint8
    activation codes become int8 by subtracting 128 (so ``z - 128`` is the new zero point).
    The multipliers ``s_in * s_w[c] / s_out`` are computed in float64 here, once, and stored as
    ``(m0, shift)``; the logits go onto one int32 grid of scale ``s_in * max_c s_w[c]``.
    """
    from .deploy import QDQDigitsCNN

    fn = "integer_digits_cnn"
    if not isinstance(sim, QDQDigitsCNN):
        raise TypeError(f"{fn}: expected qc.simulate_qdq(model, calibration), got "
                        f"{type(sim).__name__}")
    if sim.activations != "uint8" or sim.bits != 8:
        raise ValueError(f"{fn}: the integer CNN follows uint8 activations and 8-bit weights, "
                         f"got activations={sim.activations!r}, bits={sim.bits}")
    inp = {k: sim.input_qparams[k] for k in _LAYERS}
    layers = {}
    next_grid = {"conv1": "conv2", "conv2": "fc1", "fc1": "fc2"}
    logit_scale = None
    for k in _LAYERS:
        wq = sim.weight_qparams[k]
        bq = sim.bias_qparams[k]
        w = quantize(getattr(sim, f"{k}_weight"), wq).to(torch.int8)  # exact: already on grid
        b = quantize(getattr(sim, f"{k}_bias"), bq).to(torch.int64)
        w2 = w.reshape(w.shape[0], -1)  # (C_out, K)
        s_in = float(inp[k].scale)
        z_in = int(inp[k].zero_point) - 128  # uint8 code -> int8 code
        # (q - z_in) . w = q . w - z_in * sum(w): the second term is a per-channel constant.
        bias = b - z_in * w2.to(torch.int64).sum(dim=1)
        s_acc = s_in * wq.scale.double()  # the accumulator's unit, per output channel
        if k in next_grid:
            out_qp = inp[next_grid[k]]
            s_out = float(out_qp.scale)
            z_out = int(out_qp.zero_point) - 128
            # ReLU follows every layer but the last: its clamp sits at the zero point.
            out_min, out_max = z_out, 127
        else:
            s_out = float(s_acc.max())
            logit_scale = s_out
            z_out, out_min, out_max = 0, INT32_MIN, INT32_MAX
        mult = s_acc / s_out
        m0, shift = quantize_multiplier(mult)
        layers[k] = IntegerLayer(
            weight=w2.t().contiguous(), bias=bias.to(torch.int32), m0=m0, shift=shift,
            z_in=z_in, z_out=z_out, out_min=out_min, out_max=out_max, multiplier=mult,
        )
    return IntegerDigitsCNN(layers, float(inp["conv1"].scale),
                            int(inp["conv1"].zero_point) - 128, logit_scale)


def qdq_activation_codes(sim, x: torch.Tensor) -> dict:
    """The float simulation's activations at the integer CNN's trace points, as int8 codes.

    Runs ``sim`` (a ``simulate_qdq`` model) on ``x`` in float32 and quantizes each fake-quant
    activation onto its grid (uint8 codes minus 128); ``logits`` stays float.
    """
    from .deploy import QDQDigitsCNN

    fn = "qdq_activation_codes"
    if not isinstance(sim, QDQDigitsCNN):
        raise TypeError(f"{fn}: expected qc.simulate_qdq(model, calibration), got "
                        f"{type(sim).__name__}")
    check_float_tensor(x, fn)
    qp = sim.input_qparams

    def codes(t, k):
        return (quantize(t, qp[k]).to(torch.int16) - 128).to(torch.int8)

    with torch.no_grad():
        h = sim._act(x.float(), "conv1")
        h = F.relu(F.conv2d(h, sim.conv1_weight, sim.conv1_bias, padding=1))
        h = sim._act(h, "conv2")
        out = {"conv1": codes(h, "conv2")}
        h = F.relu(F.conv2d(h, sim.conv2_weight, sim.conv2_bias, padding=1))
        h = sim._act(h, "fc1")
        out["conv2"] = codes(h, "fc1")
        h = F.max_pool2d(h, 2)
        out["pool"] = codes(h, "fc1")
        h = sim._act(F.relu(F.linear(h.flatten(1), sim.fc1_weight, sim.fc1_bias)), "fc2")
        out["fc1"] = codes(h, "fc2")
        out["logits"] = F.linear(h, sim.fc2_weight, sim.fc2_bias)
    return out

