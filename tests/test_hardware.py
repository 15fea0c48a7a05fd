"""The int16 saturation model of the u8*s8 path, CPU feature detection, and fbgemm predicted.

The fbgemm checks run in a subprocess with ``FBGEMM_ENABLE_INSTRUCTIONS=AVX2`` (fbgemm reads
it once, at first use) so that this machine runs the non-VNNI kernel whatever it has.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import quantcourse as qc
from quantcourse import hardware as H


def u8(rows):
    return torch.tensor(rows, dtype=torch.uint8)


def s8(rows):
    return torch.tensor(rows, dtype=torch.int8)


# ---------------------------------------------------------------- hand-computed cases


def test_a_pair_of_largest_products_saturates_to_int16_max():
    a, b = u8([[255, 255]]), s8([[127], [127]])
    # 255*127 + 255*127 = 64770 does not fit int16: vpmaddubsw returns 32767
    assert H.u8s8_matmul_saturating(a, b).item() == 32767
    assert H.u8s8_matmul_exact(a, b).item() == 64770
    assert H.u8s8_saturated_pairs(a, b) == 1


def test_negative_pair_saturates_to_int16_min():
    a, b = u8([[255, 255]]), s8([[-128], [-128]])
    # 255*(-128) * 2 = -65280 -> -32768
    assert H.u8s8_matmul_saturating(a, b).item() == -32768
    assert H.u8s8_matmul_exact(a, b).item() == -65280


def test_pairs_are_adjacent_elements_and_summed_exactly_in_int32():
    # K = 4: pairs (0, 1) and (2, 3). (0, 1) = 255*127 + 255*127 saturates to 32767;
    # (2, 3) = 255*(-128) + 0 = -32640 fits. The int32 sum is 32767 - 32640 = 127.
    a, b = u8([[255, 255, 255, 0]]), s8([[127], [127], [-128], [5]])
    assert H.u8s8_matmul_saturating(a, b).item() == 127
    # Pairing (0, 2), (1, 3) instead would fit both pairs: the model pairs adjacent K only.
    assert H.u8s8_matmul_exact(a, b).item() == 255 * 127 * 2 - 255 * 128


def test_pairs_that_fit_equal_the_exact_product():
    a = u8([[200, 100, 3, 7], [0, 255, 128, 1]])
    b = s8([[50, -60], [20, 10], [-128, 127], [127, -128]])
    # every pair sum: |200*50 + 100*20| = 12000 etc., all inside int16
    expected = (a.long() @ b.long()).to(torch.int32)
    assert torch.equal(H.u8s8_matmul_saturating(a, b), expected)
    assert H.u8s8_saturated_pairs(a, b) == 0


def test_odd_k_pads_the_last_element_alone():
    a, b = u8([[255, 255, 255]]), s8([[127], [127], [127]])
    # (0, 1) saturates to 32767; element 2 alone is 32385
    assert H.u8s8_matmul_saturating(a, b).item() == 32767 + 255 * 127


def test_empty_shapes_give_empty_results():
    out = H.u8s8_matmul_saturating(torch.zeros(0, 4, dtype=torch.uint8),
                                   torch.zeros(4, 3, dtype=torch.int8))
    assert out.shape == (0, 3) and out.dtype == torch.int32
    out = H.u8s8_matmul_saturating(torch.zeros(2, 0, dtype=torch.uint8),
                                   torch.zeros(0, 3, dtype=torch.int8))
    assert torch.equal(out, torch.zeros(2, 3, dtype=torch.int32))


@settings(max_examples=60, deadline=None)
@given(m=st.integers(1, 5), k=st.integers(1, 40), n=st.integers(1, 5),
       seed=st.integers(0, 2**31 - 1))
def test_seven_bit_activations_never_saturate(m, k, n, seed):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randint(0, 128, (m, k), generator=gen).to(torch.uint8)     # 7-bit activations
    b = torch.randint(-128, 128, (k, n), generator=gen).to(torch.int8)
    b[0, 0] = -128                                                        # the worst weight
    a[0, 0] = 127
    # 127 * 128 * 2 = 32512 <= 32767: no pair can leave int16
    assert H.u8s8_saturated_pairs(a, b) == 0
    assert torch.equal(H.u8s8_matmul_saturating(a, b), (a.long() @ b.long()).to(torch.int32))


@settings(max_examples=40, deadline=None)
@given(k=st.integers(2, 64), seed=st.integers(0, 2**31 - 1))
def test_full_range_saturation_is_predicted_by_the_count(k, seed):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randint(0, 256, (3, k), generator=gen).to(torch.uint8)
    b = torch.randint(-127, 128, (k, 4), generator=gen).to(torch.int8)
    sat, exact = H.u8s8_matmul_saturating(a, b), H.u8s8_matmul_exact(a, b)
    assert torch.equal(exact, (a.long() @ b.long()).to(torch.int32))
    assert torch.equal(sat, exact) == (H.u8s8_saturated_pairs(a, b) == 0)


@pytest.mark.parametrize("a, b, exc, match", [
    (torch.zeros(2, 3), torch.zeros(3, 2, dtype=torch.int8), TypeError, "uint8"),
    (torch.zeros(2, 3, dtype=torch.uint8), torch.zeros(3, 2, dtype=torch.uint8), TypeError,
     "int8"),
    (torch.zeros(3, dtype=torch.uint8), torch.zeros(3, 2, dtype=torch.int8), ValueError, "2-D"),
    (torch.zeros(2, 3, dtype=torch.uint8), torch.zeros(4, 2, dtype=torch.int8), ValueError,
     "inner dimensions"),
    ([[1]], torch.zeros(1, 1, dtype=torch.int8), TypeError, "torch.Tensor"),
])
def test_bad_inputs(a, b, exc, match):
    for fn in (H.u8s8_matmul_saturating, H.u8s8_matmul_exact, H.u8s8_saturated_pairs):
        with pytest.raises(exc, match=match):
            fn(a, b)


def test_too_long_k_is_refused():
    a = torch.zeros(1, H.MAX_K + 1, dtype=torch.uint8)
    b = torch.zeros(H.MAX_K + 1, 1, dtype=torch.int8)
    with pytest.raises(ValueError, match="overflow"):
        H.u8s8_matmul_saturating(a, b)


# ---------------------------------------------------------------- feature detection


def test_cpu_flags_reads_flags_and_features_lines(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_vnni\n\n"
                    "processor\t: 1\nFeatures\t: asimd asimddp\n")
    assert H.cpu_flags(info) == frozenset({"fpu", "avx2", "avx512_vnni", "asimd", "asimddp"})
    assert H.cpu_flags(tmp_path / "missing") == frozenset()


@pytest.mark.parametrize("flags, environ, engine, expected", [
    ({"avx2", "avx512_vnni"}, {}, "fbgemm", True),
    ({"avx2", "avx512_vnni"}, {"FBGEMM_ENABLE_INSTRUCTIONS": "AVX2"}, "fbgemm", False),
    ({"avx2", "avx512_vnni"}, {"FBGEMM_ENABLE_INSTRUCTIONS": "avx512"}, "fbgemm", False),
    ({"avx2", "avx512_vnni"}, {"FBGEMM_ENABLE_INSTRUCTIONS": "AVX512_E1"}, "fbgemm", True),
    ({"avx2", "avx_vnni"}, {}, "fbgemm", False),           # fbgemm has no AVX-VNNI kernels
    ({"avx2", "avx_vnni"}, {}, "onnxruntime", True),
    ({"avx2"}, {}, "onnxruntime", False),
    ({"avx2"}, {}, "cpu", False),
    ({"avx2", "avx512_vnni"}, {"FBGEMM_ENABLE_INSTRUCTIONS": "AVX2"}, "onnxruntime", True),
    ({"avx2", "avx512_vnni"}, {"ONEDNN_MAX_CPU_ISA": "AVX2"}, "onednn", False),
    ({"avx2"}, {}, "onednn", False),
])
def test_u8s8_has_vnni_per_engine(flags, environ, engine, expected):
    assert H.u8s8_has_vnni(engine, flags=frozenset(flags), environ=environ) is expected


def test_u8s8_has_vnni_rejects_unknown_engines():
    with pytest.raises(ValueError, match="engine"):
        H.u8s8_has_vnni("tensorrt")


def test_public_names_are_exported():
    for name in ("cpu_flags", "u8s8_has_vnni", "u8s8_matmul_saturating", "u8s8_matmul_exact",
                 "u8s8_saturated_pairs", "fbgemm_activation_qparams",
                 "fbgemm_dynamic_linear_model"):
        assert getattr(qc, name) is getattr(H, name) and name in qc.__all__


# ---------------------------------------------------------------- fbgemm's input grid


def test_fbgemm_activation_qparams_by_hand():
    x = torch.tensor([[-1.0, 0.5, 3.0]])
    qp = H.fbgemm_activation_qparams(x, reduce_range=False)
    assert qp.qmin == 0 and qp.qmax == 255
    assert float(qp.scale) == pytest.approx(4.0 / 255, rel=1e-7)
    assert int(qp.zero_point) == round(1.0 / (4.0 / 255))              # 63.75 -> 64
    qp7 = H.fbgemm_activation_qparams(x, reduce_range=True)
    assert qp7.qmax == 127 and int(qp7.zero_point) == 32                 # 31.75 -> 32
    positive = H.fbgemm_activation_qparams(torch.tensor([0.5, 2.0]), reduce_range=False)
    assert int(positive.zero_point) == 0 and float(positive.scale) == pytest.approx(2 / 255)


def test_fbgemm_model_bad_inputs():
    w = torch.zeros(3, 4, dtype=torch.int8)
    s = torch.ones(3)
    with pytest.raises(ValueError, match="NaN"):
        H.fbgemm_dynamic_linear_model(torch.tensor([[float("nan")] * 4]), w, s, saturate=True)
    with pytest.raises(TypeError, match="floating-point"):
        H.fbgemm_dynamic_linear_model(torch.zeros(1, 4, dtype=torch.int32), w, s, saturate=True)
    with pytest.raises(ValueError, match="last dimension"):
        H.fbgemm_dynamic_linear_model(torch.zeros(1, 5), w, s, saturate=True)
    with pytest.raises(ValueError, match="positive"):
        H.fbgemm_dynamic_linear_model(torch.zeros(1, 4), w, -s, saturate=True)
    with pytest.raises(ValueError, match="NaN"):
        H.fbgemm_activation_qparams(torch.tensor([float("inf")]))


# ---------------------------------------------------------------- fbgemm, predicted

_PROBE = textwrap.dedent("""
    import json, sys
    import torch
    import quantcourse as qc
    torch.manual_seed(0)
    lin = torch.nn.Linear(256, 64)
    # ReLU-like activations: mostly large positive uint8 codes above a small zero point
    x = torch.randn(16, 256).relu() * 3 - 0.2
    out = {"vnni": qc.u8s8_has_vnni("fbgemm")}
    for rr in (False, True):
        layer = qc.FbgemmDynamicLinear.from_float(lin, reduce_range=rr)
        y = layer(x)
        qp = qc.fbgemm_activation_qparams(x, reduce_range=rr)
        codes = torch.round(x * (1 / qp.scale) + qp.zero_point).clamp(0, qp.qmax)
        out[f"pairs_{rr}"] = qc.u8s8_saturated_pairs(codes.to(torch.uint8), layer.weight_q.t())
        for sat in (False, True):
            m = qc.fbgemm_dynamic_linear_model(x, layer.weight_q, layer.weight_scale,
                                               layer.bias, reduce_range=rr, saturate=sat)
            out[f"{rr}_{sat}"] = float((y - m).norm() / y.norm())
    print(json.dumps(out))
""")


def _probe(env_extra):
    env = {k: v for k, v in os.environ.items() if k != "FBGEMM_ENABLE_INSTRUCTIONS"}
    env.update(env_extra)
    res = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True,
                         text=True, timeout=300, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


needs_fbgemm = pytest.mark.skipif(not qc.fbgemm_available(),
                                  reason="this PyTorch build has no fbgemm/x86 quantized engine")


@needs_fbgemm
def test_fbgemm_without_vnni_is_the_saturating_pair_model():
    r = _probe({"FBGEMM_ENABLE_INSTRUCTIONS": "AVX2"})
    assert r["vnni"] is False
    assert r["pairs_False"] > 0            # the input does saturate with 8-bit activations
    assert r["False_True"] < 1e-6, r       # fbgemm = saturating model, to float rounding
    assert r["False_False"] > 1e-3, r      # and visibly not the exact product
    assert r["pairs_True"] == 0            # 7-bit activations never saturate
    assert r["True_True"] < 1e-6 and r["True_False"] < 1e-6, r


@needs_fbgemm
def test_fbgemm_on_this_machine_matches_the_model_that_applies():
    r = _probe({})
    sat = not r["vnni"]
    assert r[f"False_{sat}"] < 1e-6, r
    assert r[f"False_{not sat}"] > 1e-3, r
    assert r["True_False"] < 1e-6, r


# ---------------------------------------------------------------- cost models


def test_energy_table_is_horowitz_45nm_and_int8_macs_are_cheaper():
    pj = qc.ENERGY_PJ
    assert pj["dram_read_32bit"] == 640.0 and pj["fp32_mult"] == 3.7 and pj["int8_add"] == 0.03
    assert len(pj) == 10 and all(v > 0 for v in pj.values())
    int8_mac, fp32_mac = pj["int8_mult"] + pj["int32_add"], pj["fp32_mult"] + pj["fp32_add"]
    assert fp32_mac / int8_mac == pytest.approx(4.6 / 0.3)
    assert pj["dram_read_32bit"] / fp32_mac > 100      # memory traffic dominates


def test_arithmetic_intensity_formula_and_limits():
    ai = qc.arithmetic_intensity
    assert ai(1, 2, 3, 8, 1) == 2 * 1 * 2 * 3 / (2 * 3 + 1 * 5 * 1)
    assert ai(1, 4096, 4096, 32) == pytest.approx(0.5, rel=1e-3)   # fp32 at batch 1
    assert ai(1, 4096, 4096, 4) / ai(1, 4096, 4096, 32) > 7.8
    limit = 2 * 384 * 1536 / ((384 + 1536) * 4)                     # batch -> infinity
    assert ai(10**9, 384, 1536, 32) == pytest.approx(limit, rel=1e-5)
    assert ai(2, 8, 8, 8, act_bytes=0) == 2 * ai(1, 8, 8, 8, act_bytes=0)


@pytest.mark.parametrize("args, exc, match", [
    ((0, 8, 8, 8), ValueError, "batch must be positive"),
    ((1.5, 8, 8, 8), TypeError, "batch must be an int"),
    ((True, 8, 8, 8), TypeError, "batch must be an int"),
    ((1, 0, 8, 8), ValueError, "in_features must be positive"),
    ((1, 8, -1, 8), ValueError, "out_features must be positive"),
    ((1, 8, 8, 0), ValueError, "weight_bits must be > 0"),
    ((1, 8, 8, 8, -1), ValueError, "act_bytes must be >= 0"),
    ((1, 8, 8, 8, float("nan")), ValueError, "act_bytes must be finite"),
])
def test_arithmetic_intensity_rejects_bad_input(args, exc, match):
    with pytest.raises(exc, match=match):
        qc.arithmetic_intensity(*args)


def test_compute_bound_batch_checker_agrees_with_arithmetic_intensity():
    from quantcourse.checks.nb14_int8_kernels_and_hardware import (
        _RIDGE_CASES,
        compute_bound_batch_reference,
    )

    for k, n, wb, ab, ridge in _RIDGE_CASES:
        b = compute_bound_batch_reference(k, n, wb, ab, ridge)
        if b is None:
            assert qc.arithmetic_intensity(10**12, k, n, wb, ab) < ridge
            continue
        assert qc.arithmetic_intensity(b, k, n, wb, ab) >= ridge * (1 - 1e-12)
        assert b == 1 or qc.arithmetic_intensity(b - 1, k, n, wb, ab) < ridge


def test_accumulator_bits_checker_agrees_with_the_kernels_and_the_pair_model():
    from quantcourse.checks.nb14_int8_kernels_and_hardware import (
        _code_range,
        _product_range,
        accumulator_bits_reference,
    )

    # int32 takes 131071 int8 x int8 products and not one more: the limit qc.int8_matmul keeps
    assert accumulator_bits_reference(8, True, 8, True, 131071) == 32
    assert accumulator_bits_reference(8, True, 8, True, 131072) == 33
    # a u8 x s8 pair overflows int16 (what the saturation model clips), a u7 x s8 pair fits
    assert accumulator_bits_reference(8, False, 8, True, 2) == 17
    assert accumulator_bits_reference(7, False, 8, True, 2) == 16
    a, b = u8([[255, 255]]), s8([[-128], [-128]])
    assert H.u8s8_matmul_exact(a, b).item() < -(2**15)
    # the brute-force range over every code pair equals the corners of the two ranges
    for bits_a, sa, bits_b, sb in [(8, False, 8, True), (4, True, 4, True), (2, True, 8, False)]:
        corners = [p * q for p in _code_range(bits_a, sa) for q in _code_range(bits_b, sb)]
        assert _product_range(bits_a, sa, bits_b, sb) == (min(corners), max(corners))
