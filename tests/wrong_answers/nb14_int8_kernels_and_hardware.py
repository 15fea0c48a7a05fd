"""Plausible wrong answers for the checkers of 14_int8_kernels_and_hardware.ipynb."""

import math

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


# ---------------------------------------------------------------- check_accumulator_bits


def _bits(lo, hi):
    w = 1
    while not (-(2 ** (w - 1)) <= lo and hi <= 2 ** (w - 1) - 1):
        w += 1
    return w


def acc_rule_of_thumb(a_bits, a_signed, b_bits, b_signed, k):  # a + b + log2 k, always
    return a_bits + b_bits + math.ceil(math.log2(k)) if k > 1 else a_bits + b_bits


def acc_narrow_codes(a_bits, a_signed, b_bits, b_signed, k):  # forgets the code -2^(b-1)
    def rng(bits, signed):
        return (-(2 ** (bits - 1)) + 1, 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)

    c = [p * q for p in rng(a_bits, a_signed) for q in rng(b_bits, b_signed)]
    return _bits(k * min(c), k * max(c))


def acc_positive_only(a_bits, a_signed, b_bits, b_signed, k):  # sizes the largest sum only
    def rng(bits, signed):
        return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)

    c = [p * q for p in rng(a_bits, a_signed) for q in rng(b_bits, b_signed)]
    return _bits(0, k * max(c))


def acc_unsigned_as_signed(a_bits, a_signed, b_bits, b_signed, k):  # ignores signedness
    hi = 2 ** (a_bits - 1) * 2 ** (b_bits - 1)
    return _bits(-k * hi, k * hi)


# ---------------------------------------------------------------- check_predicted_speedup


def speedup_weights_only(k, n, bytes_per_weight, batch):  # 4 / bytes, nothing else
    return 4 / bytes_per_weight


def speedup_inverted(k, n, bytes_per_weight, batch):  # quantized bytes over fp32 bytes
    shared = 4 * n + 4 * batch * (k + n)
    return (bytes_per_weight * k * n + shared) / (4 * k * n + shared)


def speedup_batch_ignored(k, n, bytes_per_weight, batch):  # activations of one input only
    shared = 4 * n + 4 * (k + n)
    return (4 * k * n + shared) / (bytes_per_weight * k * n + shared)


WRONG_ANSWERS = {
    "check_compute_bound_batch": [
        (ridge_macs, "2 FLOPs"),
        (ridge_bits_as_bytes, "divide by 8"),
        (ridge_weights_only, "activation traffic"),
        (ridge_last_below, "not the last one below"),
        (ridge_never_is_huge, "return None"),
    ],
    "check_accumulator_bits": [
        (acc_rule_of_thumb, "rule of thumb"),
        (acc_narrow_codes, "not -(2^(bits-1) - 1)"),
        (acc_positive_only, "can also be negative"),
        (acc_unsigned_as_signed, "unsigned code goes up to"),
    ],
    "check_predicted_speedup": [
        (speedup_weights_only, "count the bias, input and output"),
        (speedup_inverted, "not the other way round"),
        (speedup_batch_ignored, "grow with the batch"),
    ],
}
