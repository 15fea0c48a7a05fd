"""Fixed-point requantization (gemmlowp / TFLite semantics) and the integer-only digits CNN."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import quantcourse as qc
from quantcourse.fixedpoint import INT32_MAX, INT32_MIN

i32 = st.integers(INT32_MIN, INT32_MAX)


def t32(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int32)


# ---------------------------------------------------------------- plain-Python references


def ref_srdhm(a: int, b: int) -> int:
    """gemmlowp's SaturatingRoundingDoublingHighMul, in Python integers."""
    if a == b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudge = 2**30 if ab >= 0 else 1 - 2**30
    s = ab + nudge
    q = abs(s) // 2**31  # C division truncates toward zero
    return q if s >= 0 else -q


def ref_rdbpot(x: int, e: int) -> int:
    """x / 2^e rounded half away from zero, exactly."""
    f = Fraction(x, 2**e)
    n = abs(f)
    r = int(n) + (1 if n - int(n) >= Fraction(1, 2) else 0)
    return r if f >= 0 else -r


# ---------------------------------------------------------------- hand-derived vectors


def test_srdhm_hand_vectors():
    a = t32([INT32_MIN, INT32_MIN, 2**30, 3 * 2**29, -1, 1, -3, 0, INT32_MAX])
    b = t32([INT32_MIN, INT32_MAX, 2**30, 2**30, 2**30, 2**30, 2**30, 12345, INT32_MAX])
    want = [
        INT32_MAX,        # the one overflow: (-1) * (-1) in Q31 would be +1, saturated
        -INT32_MAX,       # -2^31 * (2^31 - 1) * 2 / 2^32 = -(2^31 - 1)
        2**29,            # 0.5 * 0.5 = 0.25 in Q31
        3 * 2**28,
        0,                # -0.5 exactly: the nudge sends the tie up, to 0
        1,                # +0.5 exactly: up, to 1
        -1,               # -1.5 exactly: up, to -1
        0,
        INT32_MAX - 1,    # (1 - 2^-31)^2 in Q31
    ]
    assert qc.saturating_rounding_doubling_high_mul(a, b).tolist() == want
    assert qc.saturating_rounding_doubling_high_mul(a, b).dtype == torch.int32


def test_rounding_divide_by_pot_hand_vectors():
    x = t32([3, -3, 5, -5, 6, -6, 7, -7, 2, -2])
    # 1.5 -> 2, -1.5 -> -2 (half away from zero), 1.25 -> 1, -1.25 -> -1, ...
    assert qc.rounding_divide_by_pot(x, 1).tolist() == [2, -2, 3, -3, 3, -3, 4, -4, 1, -1]
    assert qc.rounding_divide_by_pot(x, 2).tolist() == [1, -1, 1, -1, 2, -2, 2, -2, 1, -1]
    assert qc.rounding_divide_by_pot(x, 0).tolist() == x.tolist()  # shift 0: unchanged
    big = t32([INT32_MIN, INT32_MAX, 2**30, -(2**30), 2**30 - 1, -(2**30) + 1, 0])
    # shift 31: -1, 1 (0.99...), 0.5 -> 1, -0.5 -> -1, just below a half -> 0
    assert qc.rounding_divide_by_pot(big, 31).tolist() == [-1, 1, 1, -1, 0, 0, 0]


def test_rounding_divide_by_pot_per_channel_exponents():
    x = t32([[7, 7, 7], [-7, -7, -7]])
    e = torch.tensor([0, 1, 3], dtype=torch.int32)
    assert qc.rounding_divide_by_pot(x, e).tolist() == [[7, 4, 1], [-7, -4, -1]]


def test_quantize_multiplier_hand_vectors():
    assert qc.quantize_multiplier(0.0) == (0, 0)           # defined: a zero multiplier
    assert qc.quantize_multiplier(0.5) == (2**30, 0)
    assert qc.quantize_multiplier(1.0) == (2**30, 1)
    assert qc.quantize_multiplier(0.75) == (3 * 2**29, 0)
    assert qc.quantize_multiplier(0.3) == (1288490189, -1)  # 0.6 * 2^31 = 1288490188.8
    assert qc.quantize_multiplier(3.0) == (3 * 2**29, 2)
    # a mantissa that rounds up to 1.0 is renormalized: m0 stays below 2^31
    assert qc.quantize_multiplier(1 - 2.0**-40) == (2**30, 1)
    # an exact tie in the 31-bit mantissa rounds away from zero (TfLiteRound)
    assert qc.quantize_multiplier((2**30 + 0.5) / 2**31) == (2**30 + 1, 0)
    assert qc.quantize_multiplier(2.0**-32) == (2**30, -31)
    assert qc.quantize_multiplier(2.0**-33) == (0, 0)      # every bit would shift out


def test_quantize_multiplier_tensor_matches_scalar():
    m = torch.tensor([0.0, 1e-3, 0.3, 0.999, 1.0, 7.25], dtype=torch.float64)
    m0, shift = qc.quantize_multiplier(m)
    assert m0.dtype == shift.dtype == torch.int32
    assert list(zip(m0.tolist(), shift.tolist(), strict=True)) == [
        qc.quantize_multiplier(float(v)) for v in m]


@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf"), -float("inf"), 2.0**31])
def test_quantize_multiplier_rejects_bad_multipliers(bad):
    with pytest.raises(ValueError, match="multiplier"):
        qc.quantize_multiplier(bad)
    with pytest.raises(ValueError, match="multiplier"):
        qc.quantize_multiplier(torch.tensor([0.5, bad], dtype=torch.float64))


def test_bad_types_and_ranges():
    with pytest.raises(TypeError, match="real number"):
        qc.quantize_multiplier(True)
    with pytest.raises(TypeError, match="floating-point"):
        qc.quantize_multiplier(torch.tensor([1, 2]))
    with pytest.raises(TypeError, match="int32"):
        qc.saturating_rounding_doubling_high_mul(torch.tensor([1.0]), 2)
    with pytest.raises(ValueError, match="int32"):
        qc.saturating_rounding_doubling_high_mul(2**31, 1)
    with pytest.raises(ValueError, match="exponent"):
        qc.rounding_divide_by_pot(t32([1]), 32)
    with pytest.raises(ValueError, match="exponent"):
        qc.rounding_divide_by_pot(t32([1]), -1)
    with pytest.raises(TypeError, match="exponent"):
        qc.rounding_divide_by_pot(t32([1]), 1.0)
    with pytest.raises(ValueError, match="m0"):
        qc.multiply_by_quantized_multiplier(t32([1]), 12345, 0)  # not normalized
    with pytest.raises(ValueError, match="shift"):
        qc.multiply_by_quantized_multiplier(t32([1]), 2**30, 31)
    with pytest.raises(TypeError, match="int32"):
        qc.multiply_by_quantized_multiplier(torch.tensor([1]), 2**30, 0)  # int64 codes


def test_empty_inputs_give_empty_results():
    e = torch.empty(0, dtype=torch.int32)
    assert qc.saturating_rounding_doubling_high_mul(e, 5).shape == (0,)
    assert qc.rounding_divide_by_pot(e, 3).shape == (0,)
    assert qc.multiply_by_quantized_multiplier(e, 2**30, -2).shape == (0,)
    assert qc.quantize_multiplier(torch.empty(0, dtype=torch.float64))[0].shape == (0,)


def test_multiply_by_quantized_multiplier_vectors():
    x = t32([100, -100, 101, -101, 0, 7])
    assert qc.multiply_by_quantized_multiplier(x, *qc.quantize_multiplier(0.5)).tolist() == \
        [50, -50, 51, -50, 0, 4]  # 0.5 = 2^30 * 2^-31: the high mul alone, ties up (-50.5 -> -50)
    assert qc.multiply_by_quantized_multiplier(x, *qc.quantize_multiplier(1.0)).tolist() == \
        x.tolist()
    assert qc.multiply_by_quantized_multiplier(x, *qc.quantize_multiplier(4.0)).tolist() == \
        [400, -400, 404, -404, 0, 28]
    # a left shift that overflows int32 saturates before the high multiply (C would overflow)
    assert qc.multiply_by_quantized_multiplier(t32([2**30]), 2**30, 3).tolist() == \
        [ref_srdhm(INT32_MAX, 2**30)]
    # the zero multiplier gives zeros
    assert qc.multiply_by_quantized_multiplier(x, 0, 0).tolist() == [0] * 6


# ---------------------------------------------------------------- properties


@given(a=i32, b=i32)
def test_srdhm_matches_the_reference(a, b):
    got = int(qc.saturating_rounding_doubling_high_mul(t32([a]), t32([b]))[0])
    assert got == ref_srdhm(a, b)
    exact = Fraction(2 * a * b, 2**32)
    assert abs(got - exact) <= Fraction(1, 2) or (a == b == INT32_MIN)


@given(x=i32, e=st.integers(0, 31))
def test_rounding_divide_by_pot_is_round_half_away(x, e):
    assert int(qc.rounding_divide_by_pot(t32([x]), e)[0]) == ref_rdbpot(x, e)


@given(m=st.floats(2.0**-31, 2.0**20, allow_nan=False, allow_infinity=False))
def test_quantize_multiplier_is_31_bits_accurate(m):
    m0, shift = qc.quantize_multiplier(m)
    assert 2**30 <= m0 < 2**31 and -31 <= shift <= 30
    approx = Fraction(m0) * Fraction(2) ** (shift - 31)
    assert abs(approx - Fraction(m)) <= Fraction(m) * Fraction(1, 2**31)


@given(x=st.integers(-(2**24), 2**24),
       m=st.floats(1e-6, 8.0, allow_nan=False, allow_infinity=False))
def test_multiply_by_quantized_multiplier_within_one_unit_of_float64(x, m):
    m0, shift = qc.quantize_multiplier(m)
    got = int(qc.multiply_by_quantized_multiplier(t32([x]), m0, shift)[0])
    assert abs(got - x * m) <= 1.0
    # and within one unit of the exact product with the quantized multiplier
    assert abs(got - Fraction(x * m0) * Fraction(2) ** (shift - 31)) <= 1


@given(st.data())
def test_fixed_mul_rounds_and_saturates(data):
    int_bits = data.draw(st.integers(0, 4))
    frac_bits = data.draw(st.integers(1, 10))
    qp = qc.fixed_qparams(int_bits, frac_bits)
    codes = st.integers(qp.qmin, qp.qmax)
    a, b = data.draw(codes), data.draw(codes)
    got = int(qc.fixed_mul(torch.tensor([a]), torch.tensor([b]), int_bits, frac_bits)[0])
    want = min(max(ref_rdbpot(a * b, frac_bits), qp.qmin), qp.qmax)
    assert got == want


def test_fixed_mul_hand_vectors():
    one = torch.tensor([-32768])                      # -1.0 in Q0.15
    assert qc.fixed_mul(one, one, 0, 15).tolist() == [32767]   # saturates, does not wrap
    half = qc.to_fixed(torch.tensor([0.5, -0.5]), 0, 15)
    assert qc.from_fixed(qc.fixed_mul(half, half, 0, 15), 0, 15).tolist() == [0.25, 0.25]
    # Q3.4: 1/16 * 1/2 = 1/32, half a code: away from zero
    a, b = torch.tensor([1, -1], dtype=torch.int8), torch.tensor([8, 8], dtype=torch.int8)
    out = qc.fixed_mul(a, b, 3, 4)
    assert out.tolist() == [1, -1] and out.dtype == torch.int8
    with pytest.raises(ValueError, match="range"):
        qc.fixed_mul(torch.tensor([200]), torch.tensor([1]), 3, 4)
    with pytest.raises(TypeError, match="integer codes"):
        qc.fixed_mul(torch.tensor([0.5]), torch.tensor([1]), 3, 4)


# ---------------------------------------------------------------- zero points


@given(st.data())
def test_zero_point_matmul_equals_direct_int64(data):
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**16)))
    m, k, n = (data.draw(st.integers(1, 9)) for _ in range(3))
    qa = torch.randint(-128, 128, (m, k), generator=g, dtype=torch.int8)
    qw = torch.randint(-128, 128, (k, n), generator=g, dtype=torch.int8)
    za = data.draw(st.integers(-128, 127))
    per_channel = data.draw(st.booleans())
    zw = (torch.randint(-128, 128, (n,), generator=g, dtype=torch.int32) if per_channel
          else data.draw(st.integers(-128, 127)))
    bias = torch.randint(-(2**20), 2**20, (n,), generator=g, dtype=torch.int32)
    want = (qa.long() - za) @ (qw.long() - torch.as_tensor(zw).long()) + bias.long()
    got = qc.zero_point_matmul(qa, za, qw, zw, bias)
    assert got.dtype == torch.int32 and torch.equal(got.long(), want)


def test_zero_point_matmul_validates():
    a = torch.zeros(2, 3, dtype=torch.int8)
    w = torch.zeros(3, 4, dtype=torch.int8)
    with pytest.raises(TypeError, match="int8"):
        qc.zero_point_matmul(a.int(), 0, w, 0)
    with pytest.raises(ValueError, match="inner"):
        qc.zero_point_matmul(a, 0, w.t().contiguous(), 0)
    with pytest.raises(ValueError, match="zero point"):
        qc.zero_point_matmul(a, 200, w, 0)
    with pytest.raises(ValueError, match="per output column"):
        qc.zero_point_matmul(a, 0, w, torch.zeros(3, dtype=torch.int32))
    with pytest.raises(TypeError, match="bias"):
        qc.zero_point_matmul(a, 0, w, 0, torch.zeros(4))


# ---------------------------------------------------------------- the integer digits CNN


@pytest.fixture(scope="module")
def digits_pair():
    torch.manual_seed(0)
    d = qc.digits_data()
    sim = qc.simulate_qdq(qc.digits_cnn(), d.x_train[:512])
    return sim, qc.integer_digits_cnn(sim), d.x_test, d.y_test


def test_integer_cnn_agrees_with_the_fake_quant_simulation(digits_pair):
    sim, net, x, y = digits_pair
    trace = net.forward(net.quantize_input(x), trace=True)
    ref = qc.qdq_activation_codes(sim, x)
    diffs = torch.cat([(trace[k].int() - ref[k].int()).abs().reshape(-1)
                       for k in ("conv1", "conv2", "pool", "fc1")])
    assert float((diffs <= 1).double().mean()) >= 0.99
    assert float((diffs == 0).double().mean()) >= 0.97
    with torch.no_grad():
        sim_pred = sim(x).argmax(1)
    agree = float((trace["logits"].argmax(1) == sim_pred).double().mean())
    assert agree >= 0.99
    assert float((net.predict(x) == y).double().mean()) >= 0.97
    # the logits on their int32 grid track the float logits closely
    logits = trace["logits"].double() * net.logit_scale
    with torch.no_grad():
        assert float((logits - sim(x).double()).abs().max()) < 0.2


def test_integer_cnn_uses_integers_only(digits_pair):
    from torch.overrides import TorchFunctionMode

    _, net, x, _ = digits_pair
    q = net.quantize_input(x[:16])
    seen = set()

    class Dtypes(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    seen.add(t.dtype)
            return out

    with Dtypes():
        logits = net.forward(q, matmul="int32")
    assert not any(d.is_floating_point for d in seen), seen
    assert torch.equal(logits, net.forward(q))       # int8_matmul path: the same integers
    for layer in net.layers.values():
        assert layer.weight.dtype == torch.int8 and layer.bias.dtype == torch.int32
        assert layer.m0.dtype == layer.shift.dtype == torch.int32


def test_integer_cnn_validates(digits_pair):
    sim, net, x, _ = digits_pair
    with pytest.raises(TypeError, match="int8"):
        net.forward(x)
    with pytest.raises(ValueError, match="matmul"):
        net.forward(net.quantize_input(x[:2]), matmul="float")
    with pytest.raises(TypeError, match="simulate_qdq"):
        qc.integer_digits_cnn(qc.digits_cnn())
    with pytest.raises(ValueError, match="uint8"):
        qc.integer_digits_cnn(qc.simulate_qdq(qc.digits_cnn(), x[:64], activations="int8"))
