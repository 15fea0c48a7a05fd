"""The shared input checks of quantcourse._validate: what they accept, what they raise."""

import math

import pytest
import torch

from quantcourse._validate import (
    check_bits_in,
    check_choice,
    check_int,
    check_int_in,
    check_optional_axis,
    check_real_in,
    require_finite,
)


def test_check_int_bounds_and_types():
    assert check_int(3, "n", "f", minimum=0, maximum=3) == 3
    with pytest.raises(TypeError, match=r"f: n must be an int, got True"):
        check_int(True, "n", "f")
    with pytest.raises(ValueError, match=r"f: n must be between 2 and 4, got 5"):
        check_int(5, "n", "f", minimum=2, maximum=4)
    with pytest.raises(ValueError, match=r"n must be non-negative, got -1"):
        check_int(-1, "n", "f", minimum=0)
    with pytest.raises(ValueError, match=r"n must be positive, got 0"):
        check_int(0, "n", "f")


@pytest.mark.parametrize("value", [0, -3, 2.0, True, "2", None])
def test_check_int_in_raises_value_error_for_anything_else(value):
    with pytest.raises(ValueError, match=rf"f: k must be a positive int, got {value!r}"):
        check_int_in(value, "k", "f")


def test_check_int_in_range_and_reason():
    assert check_int_in(4, "k", "f", 0, 4) == 4
    with pytest.raises(ValueError, match=r"k must be an int between 0 and 4 \(why\), got 5"):
        check_int_in(5, "k", "f", 0, 4, why=" (why)")


@pytest.mark.parametrize("value", [0.0, -1, math.nan, math.inf, "1", True, None])
def test_check_real_in_positive(value):
    with pytest.raises(ValueError, match="f: t must be a positive finite number"):
        check_real_in(value, "t", "f", lo=0, lo_open=True)


def test_check_real_in_closed_interval():
    assert check_real_in(1, "a", "f", lo=0, hi=1) == 1.0
    with pytest.raises(ValueError, match=r"a must be a finite number in \[0, 1\], got 1.5"):
        check_real_in(1.5, "a", "f", lo=0, hi=1)
    with pytest.raises(ValueError, match=r"a must be a finite number >= 0, got -0.5"):
        check_real_in(-0.5, "a", "f", lo=0)


@pytest.mark.parametrize("bits", [3, True, 4.0, "4", None])
def test_check_bits_in(bits):
    assert check_bits_in(4, (1, 2, 4, 8), "f") == 4
    with pytest.raises(ValueError, match=r"f: bits must be one of 1, 2, 4, 8 \(x\), got"):
        check_bits_in(bits, (1, 2, 4, 8), "f", why=" (x)")


def test_check_choice_lists_the_choices():
    with pytest.raises(ValueError, match=r"f: kind must be one of 'a', 'b', got 'c'"):
        check_choice("c", "kind", iter(("a", "b")), "f")


def test_check_optional_axis():
    assert check_optional_axis(None, 0, "f") is None
    assert check_optional_axis(-1, 3, "f") == 2
    with pytest.raises(ValueError, match=r"f: per-channel quantization \(axis=0\) needs a tensor "
                                         "with at least one dimension"):
        check_optional_axis(0, 0, "f")
    with pytest.raises(TypeError, match="axis must be an int"):
        check_optional_axis(0.0, 0, "f")


def test_require_finite_wording():
    require_finite(torch.ones(3), "f")
    require_finite(torch.empty(0), "f")
    x = torch.tensor([[1.0, math.nan], [math.inf, -math.inf]])
    with pytest.raises(ValueError, match=r"^f: the input holds 1 NaN and 2 infinite value\(s\) "
                                         r"out of 4; quantize only finite data$"):
        require_finite(x, "f")
    with pytest.raises(ValueError, match=r"^f: the weights hold 1 NaN and 2 infinite value\(s\) "
                                         r"out of 4 \(first at index \(0, 1\)\); stop$"):
        require_finite(x, "f", what="the weights hold", advice="stop", first_index=True)
