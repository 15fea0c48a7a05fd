"""Plausible wrong answers for the checkers of 14_int8_kernels_and_hardware.ipynb."""

import math

# ---------------------------------------------------------------- check_int8_accumulator_bits


def acc_no_sign_bit(k, bits_x, bits_w):  # the magnitude's bits, no room for the sign
    return (k * 2 ** (bits_x + bits_w - 2)).bit_length()


def acc_narrow_products(k, bits_x, bits_w):  # 127 * 127 as the largest product
    return (k * (2 ** (bits_x - 1) - 1) * (2 ** (bits_w - 1) - 1)).bit_length() + 1


def acc_log2_shortcut(k, bits_x, bits_w):  # bits_x + bits_w + ceil(log2 k): a loose bound
    return bits_x + bits_w + math.ceil(math.log2(k))


def acc_floor_log2(k, bits_x, bits_w):  # floor instead of ceil
    return bits_x + bits_w - 1 + math.floor(math.log2(k))


def acc_float_log(k, bits_x, bits_w):  # ceil(log2(max sum)) + 1: wrong at exact powers of two
    return math.ceil(math.log2(k * 2 ** (bits_x + bits_w - 2))) + 1


# ---------------------------------------------------------------- check_compute_bound_batch


def _first_batch(intensity, ridge, limit=1 << 20):
    for b in range(1, limit):
        if intensity(b) >= ridge:
            return b
    return None


def ridge_macs(k, n, weight_bits, act_bytes, ridge):  # MACs instead of FLOPs
    return _first_batch(lambda b: b * k * n / (k * n * weight_bits / 8 + b * (k + n) * act_bytes),
                        ridge)


def ridge_bits_as_bytes(k, n, weight_bits, act_bytes, ridge):  # weight bits used as bytes
    return _first_batch(lambda b: 2 * b * k * n / (k * n * weight_bits + b * (k + n) * act_bytes),
                        ridge)


def ridge_weights_only(k, n, weight_bits, act_bytes, ridge):  # ignores activation traffic
    return max(1, math.ceil(ridge * weight_bits / 8 / 2))


def ridge_last_below(k, n, weight_bits, act_bytes, ridge):  # the last memory-bound batch
    b = _first_batch(lambda b: 2 * b * k * n / (k * n * weight_bits / 8 + b * (k + n) * act_bytes),
                     ridge)
    return None if b is None else b - 1


def ridge_never_is_huge(k, n, weight_bits, act_bytes, ridge):  # a cap instead of None
    b = _first_batch(lambda b: 2 * b * k * n / (k * n * weight_bits / 8 + b * (k + n) * act_bytes),
                     ridge, limit=1 << 16)
    return (1 << 16) if b is None else b


# ---------------------------------------------------------------- check_energy_estimate

PJ = {"fp32_mult": 3.7, "fp32_add": 0.9, "int8_mult": 0.2, "int8_add": 0.03, "int32_add": 0.1,
      "dram": 640.0, "sram": 5.0}


def _mac(fmt, add="int32_add"):
    return PJ["fp32_mult"] + PJ["fp32_add"] if fmt == "fp32" else PJ["int8_mult"] + PJ[add]


def energy_in_pj(macs, weight_bytes, fmt):  # forgot the unit conversion
    return macs * _mac(fmt) + weight_bytes * PJ["dram"] / 4


def energy_dram_per_byte(macs, weight_bytes, fmt):  # 640 pJ per byte instead of per 4 bytes
    return (macs * _mac(fmt) + weight_bytes * PJ["dram"]) * 1e-6


def energy_int8_add(macs, weight_bytes, fmt):  # 8-bit accumulation
    return (macs * _mac(fmt, "int8_add") + weight_bytes * PJ["dram"] / 4) * 1e-6


def energy_compute_only(macs, weight_bytes, fmt):  # forgot the weight traffic
    return macs * _mac(fmt) * 1e-6


def energy_sram(macs, weight_bytes, fmt):  # weights from on-chip SRAM
    return (macs * _mac(fmt) + weight_bytes * PJ["sram"] / 4) * 1e-6


def energy_mult_only(macs, weight_bytes, fmt):  # a MAC counted as its multiply only
    mult = PJ["fp32_mult"] if fmt == "fp32" else PJ["int8_mult"]
    return (macs * mult + weight_bytes * PJ["dram"] / 4) * 1e-6


WRONG_ANSWERS = {
    "check_int8_accumulator_bits": [
        (acc_no_sign_bit, "sign bit"),
        (acc_narrow_products, "-128"),
        (acc_log2_shortcut, "not the smallest"),
        (acc_floor_log2, "expected"),
        (acc_float_log, "exact power of two"),
    ],
    "check_compute_bound_batch": [
        (ridge_macs, "2 FLOPs"),
        (ridge_bits_as_bytes, "divide by 8"),
        (ridge_weights_only, "activation traffic"),
        (ridge_last_below, "not the last one below"),
        (ridge_never_is_huge, "return None"),
    ],
    "check_energy_estimate": [
        (energy_in_pj, "microjoules"),
        (energy_dram_per_byte, "32-bit read"),
        (energy_int8_add, "accumulates into 32 bits"),
        (energy_compute_only, "weight traffic"),
        (energy_sram, "SRAM"),
        (energy_mult_only, "only the multiply"),
    ],
}
