"""Checkers for the exercises of ``15_energy_and_deployment.ipynb``."""

from __future__ import annotations

import math
from fractions import Fraction

import torch

from ..hardware import ENERGY_PJ, u8s8_matmul_exact, u8s8_matmul_saturating
from ..metrics import model_nbytes, quantized_model_nbytes
from ..nn import count_macs
from ._core import (
    CheckFailed,
    as_codes,
    call,
    checker,
    division_trap,
    finite_number,
    hint_for,
    passed,
    without_package,
)


def _number(value, what: str, *, integer: bool = False):
    return finite_number(value, what, integer=integer)


# ---------------------------------------------------------------- int8 energy saving by batch


def _pj(name: str) -> Fraction:
    return Fraction(str(ENERGY_PJ[name]))


_MAC_PJ = {"fp32": _pj("fp32_mult") + _pj("fp32_add"), "int8": _pj("int8_mult") + _pj("int32_add")}
_DRAM_PJ_PER_BYTE = _pj("dram_read_32bit") / 4


def _model_energy_inputs(model: torch.nn.Module, run_one) -> tuple[int, int, int]:
    """MACs of one input, fp32 and int8 weight bytes of the layers ``count_macs`` reports."""
    macs, _ = count_macs(model, run_one)
    modules = dict(model.named_modules())
    fp32 = sum(model_nbytes(modules[name]) for name in macs)
    int8 = sum(quantized_model_nbytes(modules[name], 8) for name in macs)
    return sum(macs.values()), fp32, int8


def energy_batch_reference(macs: int, fp32_bytes: int, int8_bytes: int, saving: float,
                           *, mac_pj=None, dram_pj=None) -> int | None:
    """Smallest batch B at which fp32 energy per input / int8 energy per input >= ``saving``,
    with the weights read from DRAM once per batch; None if no batch gets there."""
    mac = _MAC_PJ if mac_pj is None else mac_pj
    dram = _DRAM_PJ_PER_BYTE if dram_pj is None else dram_pj
    t = Fraction(saving)
    # macs mac_f + fp32 dram / B >= t (macs mac_i + int8 dram / B)
    # <=> B macs (mac_f - t mac_i) >= dram (t int8 - fp32)
    lhs = macs * (mac["fp32"] - t * mac["int8"])
    rhs = dram * (t * int8_bytes - fp32_bytes)
    if rhs <= 0:
        return 1
    if lhs <= 0:
        return None
    return max(1, math.ceil(rhs / lhs))


def _energy_models():
    from ..models import digits_cnn

    g = torch.Generator().manual_seed(14)
    cnn = digits_cnn()
    image = torch.rand(1, 1, 8, 8, generator=g)
    mlp = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    token = torch.randn(1, 1024, generator=g)
    layer = torch.nn.Linear(1024, 1024, bias=False)
    return [
        ("the digits CNN, one 8x8 image", cnn, lambda: cnn(image), (4, 10, 15, 16)),
        ("a 784-256-10 MLP, one input", mlp, lambda: mlp(torch.zeros(1, 784)), (10, 14)),
        ("a 1024x1024 linear layer without bias, one token", layer, lambda: layer(token),
         (8, 15.3)),
    ]


def _energy_hint(got, macs, fp32, int8, saving, want) -> str:
    h = {k: _pj(k) for k in ENERGY_PJ}
    cands = [
        ("the int8 MAC accumulates into 32 bits: int8 multiply + 32-bit integer add "
         "(0.2 + 0.1 pJ), not the 8-bit add",
         energy_batch_reference(macs, fp32, int8, saving,
                                mac_pj={"fp32": _MAC_PJ["fp32"],
                                        "int8": h["int8_mult"] + h["int8_add"]})),
        ("the DRAM figure is per 32-bit read (4 bytes): 640 / 4 pJ per byte",
         energy_batch_reference(macs, fp32, int8, saving, dram_pj=h["dram_read_32bit"])),
        ("int8 weights are not exactly a quarter of the fp32 bytes: use "
         "qc.quantized_model_nbytes(layer, 8), which counts the per-channel scales and the "
         "float biases", energy_batch_reference(macs, fp32, fp32 / 4, saving)),
        ("return the first batch that reaches the saving, not the last one below it",
         None if want is None else want - 1),
    ]
    if got is None:
        return ("this model does reach that saving at some batch: the weight traffic per input "
                "shrinks as 1/B while the MACs per input stay, so the saving grows towards "
                "mac_fp32 / mac_int8")
    if want is None:
        return (f"no batch gets there: as B grows the saving tends to mac_fp32 / mac_int8 = "
                f"{float(_MAC_PJ['fp32'] / _MAC_PJ['int8']):.4g}; return None")
    return hint_for(got, cands, want=want,
                    default="energy per input = MACs * MAC energy + weight bytes * 160 pJ / B "
                            "(the weights are read once per batch of B inputs); find the smallest "
                            "B with fp32 / int8 >= saving")


@checker
def check_int8_energy_batch(answer) -> None:
    """``answer(model, run_one, saving)`` -> smallest batch where int8 saves ``saving`` x."""
    cases = 0
    b10 = None
    for label, model, run_one, savings in _energy_models():
        macs, fp32, int8 = _model_energy_inputs(model, run_one)
        b10 = energy_batch_reference(macs, fp32, int8, 10) if b10 is None else b10
        for saving in savings:
            what = f"int8_energy_batch({label}, saving={saving})"
            got = call(answer, model, run_one, saving, what=what)
            want = energy_batch_reference(macs, fp32, int8, saving)
            if got is not None:
                got = int(_number(got, what, integer=True))
            if got != want:
                shown = "None" if want is None else f"batch {want}"
                raise CheckFailed(f"{what}: expected {shown}, got {got}. "
                                  f"Hint: {_energy_hint(got, macs, fp32, int8, saving, want)}")
            cases += 1
    passed(f"{cases} cases on three models. The digits CNN saves about 4x at batch 1 and "
           f"reaches 10x at batch {b10}; no batch reaches "
           f"{float(_MAC_PJ['fp32'] / _MAC_PJ['int8']):.4g}x, the ratio of the MACs alone")


# ---------------------------------------------------------------- int8 sums on a given CPU

VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")

_CPUS = {  # /proc/cpuinfo flags that matter here, for a few x86 server and desktop CPUs
    "AMD EPYC 7002 (Zen 2)": {"sse4_2", "avx", "avx2", "fma", "f16c"},
    "Intel Skylake-SP": {"sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl"},
    "Intel Ice Lake-SP": {"sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl",
                          "avx512_vnni"},
    "Intel Alder Lake": {"sse4_2", "avx", "avx2", "fma", "avx_vnni"},
    "Intel Sapphire Rapids": {"sse4_2", "avx", "avx2", "avx512f", "avx512bw", "avx512_vnni",
                              "amx_tile", "amx_int8", "amx_bf16"},
    "AMD EPYC 9004 (Zen 4)": {"sse4_2", "avx", "avx2", "avx512f", "avx512bw", "avx512_vnni"},
}


def _sums_cases() -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(7)
    full_a = torch.randint(0, 256, (4, 16), generator=g, dtype=torch.int64).to(torch.uint8)
    full_w = torch.randint(-128, 128, (16, 3), generator=g, dtype=torch.int64).to(torch.int8)
    full_a[0, :2] = 255                   # one pair clips upwards, one downwards
    full_w[:2, 0], full_w[:2, 1] = 127, -128
    relu_a = torch.randint(200, 256, (3, 10), generator=g, dtype=torch.int64).to(torch.uint8)
    relu_w = torch.randint(-128, 128, (10, 5), generator=g, dtype=torch.int64).to(torch.int8)
    seven = torch.randint(0, 128, (4, 16), generator=g, dtype=torch.int64).to(torch.uint8)
    return [
        ("8-bit activations, full-range weights", full_a, full_w),
        ("large (ReLU-like) activation codes", relu_a, relu_w),
        ("7-bit activations (codes <= 127)", seven, full_w),
        ("odd K = 5: the last element pairs with a zero",
         torch.tensor([[255, 255, 255, 255, 255]], dtype=torch.uint8),
         torch.tensor([[127, -128], [127, -128], [127, -128], [127, -128], [127, -128]],
                      dtype=torch.int8)),
    ]


def _pairs(a: torch.Tensor, w: torch.Tensor, first, second) -> torch.Tensor:
    """Pair sums (M, pairs, N) in int64 with the pairs given by index lists."""
    a, w = a.long(), w.long()
    return (a[:, first, None] * w[None, first, :]) + (a[:, second, None] * w[None, second, :])


def _sums_mistakes(a: torch.Tensor, w: torch.Tensor) -> list[tuple[str, object]]:
    exact = (a.long() @ w.long())
    k = a.shape[1]
    mistakes = [
        ("the int16 saturation applies to each pair sum a[2i] w[2i] + a[2i+1] w[2i+1], not to "
         "the whole dot product: vpmaddwd adds the clipped pairs exactly in int32",
         exact.clamp(-32768, 32767)),
    ]
    if k % 2 == 0:
        even, odd = list(range(0, k, 2)), list(range(1, k, 2))
        mistakes.append(("a pair sum can also fall below -32768 (255 * -128 * 2 = -65280): "
                         "clamp to [-32768, 32767]",
                         _pairs(a, w, even, odd).clamp(max=32767).sum(dim=1)))
        mistakes.append(("vpmaddubsw pairs ADJACENT elements (2i, 2i+1), not i and i + K/2",
                         _pairs(a, w, list(range(k // 2)), list(range(k // 2, k)))
                         .clamp(-32768, 32767).sum(dim=1)))
    else:
        mistakes.append(("with an odd K the last product is a pair of its own (padded with a "
                         "zero): do not drop it",
                         u8s8_matmul_saturating(a[:, :-1].contiguous(),
                                                w[:-1].contiguous()).long()))
    return mistakes


@checker
def check_cpu_int8_sums(answer) -> None:
    """``answer(a, w, cpu_flags)`` -> the int32 sums this CPU's u8 x s8 kernel computes."""
    for cpu, flags in _CPUS.items():
        vnni = any(f in flags for f in VNNI_FLAGS)
        for label, a, w in _sums_cases():
            what = f"cpu_int8_sums(a, w, cpu_flags of {cpu}) on {label}"
            with without_package(what):
                got = call(answer, a.clone(), w.clone(), set(flags), what=what)
            got = as_codes(got, what)
            want = (u8s8_matmul_exact if vnni else u8s8_matmul_saturating)(a, w).long()
            if got.shape != want.shape:
                raise CheckFailed(f"{what}: expected shape {tuple(want.shape)}, got "
                                  f"{tuple(got.shape)}")
            if torch.equal(got, want):
                continue
            exact = u8s8_matmul_exact(a, w).long()
            sat = u8s8_matmul_saturating(a, w).long()
            if vnni and torch.equal(got, sat):
                hint = (f"this CPU has VNNI ({', '.join(sorted(flags & set(VNNI_FLAGS)))}): "
                        "vpdpbusd adds the u8 x s8 products straight into int32, exactly")
            elif not vnni and torch.equal(got, exact) and "avx512f" in flags:
                hint = ("AVX-512 alone is not VNNI: without avx512_vnni, avx_vnni or amx_int8 "
                        "the kernel uses vpmaddubsw, whose int16 pair sums saturate")
            elif not vnni and torch.equal(got, exact):
                hint = ("no VNNI flag (avx512_vnni, avx_vnni, amx_int8) on this CPU: adjacent "
                        "pairs are summed into int16 and saturate at [-32768, 32767]")
            else:
                hint = hint_for(got, _sums_mistakes(a, w), want=want,
                                default="VNNI: exact int32 sums; otherwise add each adjacent pair "
                                        "a[2i] w[2i] + a[2i+1] w[2i+1], clamp it to int16, then "
                                        "add the pairs exactly")
            bad = (got != want).nonzero()[0].tolist()
            raise CheckFailed(f"{what}: {int((got != want).sum())} of {want.numel()} sums differ;"
                              f" at {tuple(bad)} expected {int(want[tuple(bad)])}, got "
                              f"{int(got[tuple(bad)])}. Hint: {hint}")
    passed(f"int8 sums right on {len(_CPUS)} CPUs: the three with VNNI add exactly, the three "
           "without (two of them with AVX-512) clip 8-bit pairs, and with 7-bit activations all "
           "six agree")


# ---------------------------------------------------------------- ONNX QuantizeLinear


def onnx_quantize_linear_reference(x: torch.Tensor, y_scale: torch.Tensor,
                                   y_zero_point: torch.Tensor, axis: int = 1) -> torch.Tensor:
    """ONNX ``QuantizeLinear``: saturate(round_half_even(x / y_scale) + y_zero_point), per
    tensor (0-d scale) or per slice along ``axis`` (1-D scale), in float32 as ONNX Runtime."""
    shape = [1] * x.dim()
    if y_scale.dim() == 1:
        shape[axis] = -1
    scale = y_scale.to(torch.float32).reshape(shape)
    zero = y_zero_point.to(torch.int64).reshape(shape)
    info = torch.iinfo(y_zero_point.dtype)
    q = torch.round(x.to(torch.float32) / scale).to(torch.int64) + zero
    return q.clamp(info.min, info.max)


def _qlinear_cases() -> list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor, int | None]]:
    g = torch.Generator().manual_seed(15)
    s1 = torch.tensor(0.0123, dtype=torch.float32)
    x1 = torch.cat([division_trap(float(s1), 8, lo=-100, hi=100),
                    torch.tensor([-3.0, -1.6, 1.6, 2.0]), torch.randn(20, generator=g)])
    s2 = torch.tensor(1 / 3, dtype=torch.float32)
    x2 = torch.cat([division_trap(float(s2), 8), torch.tensor([-50.0, -42.8, 42.5, 60.0]),
                    torch.randn(20, generator=g) * 20])
    halves = (torch.arange(-12, 12, dtype=torch.float32) + 0.5) * 0.25
    w = torch.randn(4, 6, generator=g) * 0.1
    ws = (w.abs().amax(dim=1) / 127).to(torch.float32)
    w[0, :4] = division_trap(float(ws[0]), 4, lo=-100, hi=100)
    act = torch.randn(2, 3, 4, 4, generator=g) * 2
    act_s = torch.tensor([0.02, 0.0371, 0.011], dtype=torch.float32)
    act[:, 1, 0, :2] = division_trap(float(act_s[1]), 2, lo=-60, hi=60)
    return [
        ("per tensor, uint8, zero point 128, inputs where x / s and x * (1/s) round apart",
         x1, s1, torch.tensor(128, dtype=torch.uint8), None),
        ("per tensor, int8, zero point 0, values beyond the range",
         x2, s2, torch.tensor(0, dtype=torch.int8), None),
        ("per tensor, uint8, scale 0.25, odd zero point 3, exact halves",
         halves, torch.tensor(0.25), torch.tensor(3, dtype=torch.uint8), None),
        ("per channel along axis 0: a (4, 6) int8 weight", w, ws,
         torch.zeros(4, dtype=torch.int8), 0),
        ("per channel along the default axis 1: (2, 3, 4, 4) uint8 activations", act, act_s,
         torch.tensor([0, 128, 255], dtype=torch.uint8), None),
    ]


def _qlinear_mistakes(x, s, z, axis) -> list[tuple[str, object]]:
    shape = [1] * x.dim()
    if s.dim() == 1:
        shape[axis] = -1
    sc, zz = s.float().reshape(shape), z.long().reshape(shape)
    info = torch.iinfo(z.dtype)
    div = x.float() / sc
    return [
        ("ONNX divides, x / y_scale; multiplying by the reciprocal (as qc.quantize does) rounds "
         "differently at these inputs", lambda: (torch.round(x.float() * (1 / sc)).long() + zz)
         .clamp(info.min, info.max)),
        ("round half to even (torch.round), not half away from zero",
         lambda: (torch.sign(div) * torch.floor(div.abs() + 0.5)).long().add(zz)
         .clamp(info.min, info.max)),
        ("round x / y_scale first, then add the zero point: rounding after adding it moves "
         "values near a half (the float32 sum rounds, and an odd zero point flips ties)",
         lambda: torch.round(div + zz).long().clamp(info.min, info.max)),
        (f"saturate to the range of the zero point's type, [{info.min}, {info.max}] for "
         f"{str(z.dtype).replace('torch.', '')}", lambda: torch.round(div).long() + zz),
        ("saturate to the range of the zero point's type: uint8 is [0, 255], int8 [-128, 127]",
         lambda: (torch.round(div).long() + zz).clamp(-128, 127)),
    ]


@checker
def check_onnx_quantize_linear(answer) -> None:
    """``answer(x, y_scale, y_zero_point[, axis])`` -> ONNX QuantizeLinear codes."""
    cases = _qlinear_cases()
    for label, x, s, z, axis in cases:
        what = f"onnx_quantize_linear on {label}"
        args = (x.clone(), s.clone(), z.clone()) + (() if axis is None else (axis,))
        with without_package(what):
            got = call(answer, *args, what=what)
        got = as_codes(got, what)
        want = onnx_quantize_linear_reference(x, s, z, 1 if axis is None else axis)
        if got.shape != want.shape:
            raise CheckFailed(f"{what}: expected shape {tuple(want.shape)}, got "
                              f"{tuple(got.shape)}. Hint: a 1-D y_scale has one value per slice "
                              "along axis; broadcast it there")
        if torch.equal(got, want):
            continue
        hint = hint_for(got, _qlinear_mistakes(x, s, z, 1 if axis is None else axis), want=want,
                        default="y = clamp(round_half_even(x / y_scale) + y_zero_point) to the "
                                "zero point's type, a 1-D scale broadcast along axis")
        bad = tuple((got != want).nonzero()[0].tolist())
        raise CheckFailed(f"{what}: {int((got != want).sum())} of {want.numel()} codes differ; at "
                          f"{bad} (x = {float(x[bad])!r}) expected {int(want[bad])}, got "
                          f"{int(got[bad])}. Hint: {hint}")
    passed(f"QuantizeLinear right on {len(cases)} cases. Dividing and multiplying by the "
           "reciprocal differ by one code, only where x / s lies within float32 rounding of a "
           "half: rare on real activations, which is why ONNX Runtime and qc.simulate_qdq agree")
