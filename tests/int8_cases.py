"""Cases shared by the int8 tests: the exact ``int8_matmul`` methods on this machine,
random int8 operands, float layers with outliers and the input shapes the layers take."""

from __future__ import annotations

import pytest
import torch

from quantcourse import _int8_engines as _fb


def cpu_int_mm_is_exact() -> bool:
    """Whether torch._int_mm adds int8 products exactly here (worst-case pair sums)."""
    a = torch.full((32, 64), 127, dtype=torch.int8)
    b = torch.full((64, 8), 127, dtype=torch.int8)
    return torch.equal(torch._int_mm(a, b).long(), a.long() @ b.long())


# With oneDNN capped below VNNI (ONEDNN_MAX_CPU_ISA=AVX2, the emulated CPU of CI) on a VNNI
# machine, torch._int_mm saturates int16 pair sums; the course refuses method="int_mm" there
# (tests/test_int8_path.py) and its "auto" path avoids it.
INT_MM = pytest.param("int_mm", marks=pytest.mark.skipif(
    not cpu_int_mm_is_exact(), reason="torch._int_mm is not exact with oneDNN's ISA capped"))
# fbgemm's u8 x s8 engine: exact on 8-bit codes with VNNI, on 7-bit codes without.
FBGEMM_BITS = _fb.exact_bits()
FBGEMM = pytest.param("fbgemm", marks=pytest.mark.skipif(
    FBGEMM_BITS is None, reason="no exact fbgemm engine in this PyTorch build"))
METHODS = ["auto", "float", INT_MM, FBGEMM]
METHOD_NAMES = (["auto", "float"] + (["int_mm"] if cpu_int_mm_is_exact() else [])
                + (["fbgemm"] if FBGEMM_BITS else []))


def rand_int8(shape, gen, device="cpu"):
    return torch.randint(-128, 128, shape, generator=gen, dtype=torch.int8).to(device)


def make_linear(in_f, out_f, bias=True, seed=0):
    torch.manual_seed(seed)
    lin = torch.nn.Linear(in_f, out_f, bias=bias)
    with torch.no_grad():
        # a few outlier weights, as in real layers
        lin.weight[0, :3] *= 8
    return lin


INPUT_SHAPES = [(1, 256), (7, 256), (2, 5, 256), (256,)]


def rel_err(a, b):
    return float((a - b).norm() / b.norm())
