"""Plausible wrong answers for the checkers of 15_energy_and_deployment.ipynb."""

import math

import torch

import quantcourse as qc

# ---------------------------------------------------------------- check_int8_energy_batch


def _energy_inputs(model, run_one):
    macs, _ = qc.count_macs(model, run_one)
    layers = dict(model.named_modules())
    fp32 = sum(qc.model_nbytes(layers[n]) for n in macs)
    int8 = sum(qc.quantized_model_nbytes(layers[n], 8) for n in macs)
    return sum(macs.values()), fp32, int8


def _first_saving_batch(macs, fp32, int8, saving, mac_fp32=4.6, mac_int8=0.3, dram=160.0):
    gain = macs * (mac_fp32 - saving * mac_int8)
    need = dram * (saving * int8 - fp32)
    if need <= 0:
        return 1
    return None if gain <= 0 else math.ceil(need / gain)


def energy_no_reuse(model, run_one, saving):  # weights read again for every input
    macs, fp32, int8 = _energy_inputs(model, run_one)
    ratio = (macs * 4.6 + fp32 * 160) / (macs * 0.3 + int8 * 160)
    return 1 if ratio >= saving else None


def energy_int8_add(model, run_one, saving):  # int8 MAC with an 8-bit add
    return _first_saving_batch(*_energy_inputs(model, run_one), saving, mac_int8=0.23)


def energy_dram_per_byte(model, run_one, saving):  # 640 pJ per byte
    return _first_saving_batch(*_energy_inputs(model, run_one), saving, dram=640.0)


def energy_quarter_bytes(model, run_one, saving):  # int8 weights as fp32 bytes / 4
    macs, fp32, _ = _energy_inputs(model, run_one)
    return _first_saving_batch(macs, fp32, fp32 / 4, saving)


def energy_last_below(model, run_one, saving):  # the last batch that falls short
    b = _first_saving_batch(*_energy_inputs(model, run_one), saving)
    return None if b is None else b - 1


# ---------------------------------------------------------------- check_cpu_int8_sums

VNNI = {"avx512_vnni", "avx_vnni", "amx_int8"}


def _pair_model(a, w, *, lo=-32768):
    a, w = a.long(), w.long()
    if a.shape[1] % 2:
        a = torch.nn.functional.pad(a, (0, 1))
        w = torch.nn.functional.pad(w, (0, 0, 0, 1))
    pairs = a[:, 0::2, None] * w[None, 0::2, :] + a[:, 1::2, None] * w[None, 1::2, :]
    return pairs.clamp(lo, 32767).sum(dim=1)


def sums_avx512_is_vnni(a, w, cpu_flags):  # takes any AVX-512 CPU for a VNNI one
    if cpu_flags & (VNNI | {"avx512f"}):
        return a.long() @ w.long()
    return _pair_model(a, w)


def sums_always_exact(a, w, cpu_flags):  # ignores the CPU
    return a.long() @ w.long()


def sums_always_pairs(a, w, cpu_flags):  # ignores the CPU the other way
    return _pair_model(a, w)


def sums_whole_clamp(a, w, cpu_flags):  # saturates the whole dot product
    out = a.long() @ w.long()
    return out if cpu_flags & VNNI else out.clamp(-32768, 32767)


def sums_top_clamp_only(a, w, cpu_flags):  # forgets negative saturation
    return a.long() @ w.long() if cpu_flags & VNNI else _pair_model(a, w, lo=-(2**40))


def sums_halves_paired(a, w, cpu_flags):  # pairs element i with element i + K/2
    if cpu_flags & VNNI:
        return a.long() @ w.long()
    a, w = a.long(), w.long()
    h = a.shape[1] // 2
    pairs = a[:, :h, None] * w[None, :h, :] + a[:, h:2 * h, None] * w[None, h:2 * h, :]
    return pairs.clamp(-32768, 32767).sum(dim=1)


def sums_drop_odd(a, w, cpu_flags):  # an odd K loses its last product
    if cpu_flags & VNNI:
        return a.long() @ w.long()
    k = a.shape[1] // 2 * 2
    return _pair_model(a[:, :k], w[:k])


def sums_with_qc(a, w, cpu_flags):  # calls the package
    if cpu_flags & VNNI:
        return qc.u8s8_matmul_exact(a, w)
    return qc.u8s8_matmul_saturating(a, w)


# ---------------------------------------------------------------- check_onnx_quantize_linear


def _broadcast(x, y_scale, y_zero_point, axis):
    shape = [1] * x.dim()
    if y_scale.dim() == 1:
        shape[axis] = -1
    info = torch.iinfo(y_zero_point.dtype)
    return (y_scale.float().reshape(shape), y_zero_point.long().reshape(shape),
            info.min, info.max)


def qlinear_reciprocal(x, y_scale, y_zero_point, axis=1):  # qc's x * (1/s), not ONNX's x / s
    s, z, lo, hi = _broadcast(x, y_scale, y_zero_point, axis)
    return (torch.round(x * (1 / s)) + z).clamp(lo, hi)


def qlinear_half_away(x, y_scale, y_zero_point, axis=1):  # rounds halves away from zero
    s, z, lo, hi = _broadcast(x, y_scale, y_zero_point, axis)
    d = x / s
    return (torch.sign(d) * torch.floor(d.abs() + 0.5) + z).clamp(lo, hi)


def qlinear_zero_point_first(x, y_scale, y_zero_point, axis=1):  # rounds after adding z
    s, z, lo, hi = _broadcast(x, y_scale, y_zero_point, axis)
    return torch.round(x / s + z).clamp(lo, hi)


def qlinear_no_saturation(x, y_scale, y_zero_point, axis=1):  # forgets to saturate
    s, z, _lo, _hi = _broadcast(x, y_scale, y_zero_point, axis)
    return torch.round(x / s) + z


def qlinear_axis_last(x, y_scale, y_zero_point, axis=1):  # broadcasts scales on the last axis
    info = torch.iinfo(y_zero_point.dtype)
    return (torch.round(x / y_scale.float()) + y_zero_point.long()).clamp(info.min, info.max)


def qlinear_with_qc(x, y_scale, y_zero_point, axis=1):  # calls the package
    s, z, lo, hi = _broadcast(x, y_scale, y_zero_point, axis)
    qp = qc.QParams(scale=y_scale.float(), zero_point=y_zero_point.long(), qmin=lo, qmax=hi,
                    axis=axis if y_scale.dim() else None)
    return qc.quantize(x, qp)


WRONG_ANSWERS = {
    "check_int8_energy_batch": [
        (energy_no_reuse, "does reach that saving"),
        (energy_int8_add, "accumulates into 32 bits"),
        (energy_dram_per_byte, "32-bit read"),
        (energy_quarter_bytes, "quantized_model_nbytes"),
        (energy_last_below, "not the last one below"),
    ],
    "check_cpu_int8_sums": [
        (sums_avx512_is_vnni, "AVX-512 alone is not VNNI"),
        (sums_always_exact, "no VNNI flag"),
        (sums_always_pairs, "this CPU has VNNI"),
        (sums_whole_clamp, "not to the whole dot product"),
        (sums_top_clamp_only, "below -32768"),
        (sums_halves_paired, "ADJACENT"),
        (sums_drop_odd, "do not drop it"),
        (sums_with_qc, "without the package"),
    ],
    "check_onnx_quantize_linear": [
        (qlinear_reciprocal, "ONNX divides"),
        (qlinear_half_away, "half to even"),
        (qlinear_zero_point_first, "first, then add the zero point"),
        (qlinear_no_saturation, "saturate to the range"),
        (qlinear_axis_last, "raised"),
        (qlinear_with_qc, "without the package"),
    ],
}
