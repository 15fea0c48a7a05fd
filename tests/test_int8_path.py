"""`int8_matmul_path()` reports what runs, also where oneDNN's ISA is capped below VNNI.

PyTorch sends CPU `_int_mm` to oneDNN whenever the CPU flags show VNNI; with
ONEDNN_MAX_CPU_ISA=AVX2 (the emulated second CPU of CI) oneDNN then runs an AVX2 kernel whose
int16 pair sums saturate. The course must notice and take its exact float path instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from quantcourse import kernels as K

PROBE = """
import json, torch
from quantcourse import kernels as K
g = torch.Generator().manual_seed(0)
a = torch.randint(-128, 128, (64, 1024), dtype=torch.int8, generator=g)
b = torch.randint(-128, 128, (1024, 256), dtype=torch.int8, generator=g)
exact = (a.long() @ b.long()).to(torch.int32)
print(json.dumps({"path": K.int8_matmul_path(),
                  "int_mm_exact": torch.equal(torch._int_mm(a, b), exact),
                  "qc_exact": torch.equal(K.int8_matmul(a, b), exact)}))
"""


def _run(env_extra: dict) -> dict:
    env = {**os.environ, **env_extra}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                         text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="no oneDNN in this build")
@pytest.mark.parametrize("isa", ["AVX2", "AVX512_CORE"])
def test_capped_onednn_is_detected_and_the_result_stays_exact(isa):
    got = _run({"ONEDNN_MAX_CPU_ISA": isa})
    assert got["qc_exact"], got
    # Where _int_mm is wrong the path must not be int_mm; where it is right, either is fine.
    assert got["int_mm_exact"] or got["path"] in ("fbgemm", "float"), got


def test_the_path_named_is_exact_here():
    got = _run({})
    assert got["qc_exact"], got
    if got["path"] == "int_mm":
        assert got["int_mm_exact"], got


def test_the_probe_is_remembered_per_isa_setting(monkeypatch):
    monkeypatch.setattr(K, "_INT_MM_PROBE", {"": False, "AVX2": True})
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert K._cpu_int_mm_is_exact() is False
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert K._cpu_int_mm_is_exact() is True


def test_forcing_int_mm_where_it_is_wrong_raises():
    code = ("import torch\nfrom quantcourse import kernels as K\n"
            "a = torch.full((32, 64), 127, dtype=torch.int8)\n"
            "exact = torch.equal(torch._int_mm(a, a.t().contiguous()).long(),"
            " a.long() @ a.long().t())\n"
            "try:\n    K.int8_matmul(a, a.t(), method='int_mm')\n    print('ran', exact)\n"
            "except RuntimeError as err:\n    print('raised', exact, err)\n")
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    # Wherever _int_mm is wrong, forcing it raises a clear error instead of returning it.
    assert out.startswith("ran True") or out.startswith("raised False"), out
    if out.startswith("raised"):
        assert "ONEDNN_MAX_CPU_ISA" in out and "method='auto'" in out


EMULATED = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
            "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2", "MKL_CBWR": "COMPATIBLE"}

LAYER_PROBE = """
import json, torch
from quantcourse import kernels as K, qlinear as Q, _int8_engines as E
from tests.oracles import w8a8_simulation
torch.manual_seed(0)
lin = torch.nn.Linear(300, 40)
x = torch.randn(2, 7, 300) * 3
res = {"bits": E.exact_bits(), "path": K.int8_matmul_path(),
       "layer_path": K.int8_matmul_path(prepacked=True), "act_bits": K.int8_activation_bits()}
with torch.no_grad():
    for bits in (7, 8):
        layer = Q.W8A8Linear.from_float(lin, act_bits=bits)
        sim, bound = w8a8_simulation(lin, x, bits)
        out = layer(x)
        ref = Q.W8A8Linear.from_float(lin, method="float", act_bits=bits)(x)
        res[f"sim{bits}"] = bool(((out.double() - sim).abs() <= bound).all())
        res[f"same{bits}"] = torch.equal(out, ref)
    res["auto_bits"] = Q.W8A8Linear.from_float(lin).act_bits
g = torch.Generator().manual_seed(1)
a = torch.randint(-128, 128, (5, 3000), dtype=torch.int8, generator=g)
b = torch.randint(-128, 128, (3000, 9), dtype=torch.int8, generator=g)
res["matmul_exact"] = torch.equal(K.int8_matmul(a, b).long(), a.long() @ b.long())
if res["bits"] == 7:   # the 8-bit grid saturates int16 pairs there: the reason for 7 bits
    w = torch.full((4, 64), 127, dtype=torch.int8)
    full = torch.full((2, 64), 127.0)
    res["eight_bit_codes_wrong"] = not torch.equal(
        E.matmul_codes(full, E.prepack(w), 8).double(), full.double() @ w.double().T)
print(json.dumps(res))
"""


def _run_layer(env_extra: dict) -> dict:
    env = {**os.environ, **env_extra}
    out = subprocess.run([sys.executable, "-c", LAYER_PROBE], env=env, capture_output=True,
                         text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_each_path_is_exact_against_its_simulation_under_the_emulated_cpu():
    # In-process tests cover this machine's paths; this one runs the non-VNNI CPU of CI.
    got = _run_layer(EMULATED)
    assert got["matmul_exact"] and got["sim7"] and got["sim8"], got
    assert got["same7"] and got["same8"], got          # bit-identical to the float path
    assert got["auto_bits"] == got["act_bits"], got
    if got["bits"] == 7:
        # fbgemm without VNNI: 7-bit activations, and 8-bit codes really do saturate.
        assert got["layer_path"] == "fbgemm" and got["act_bits"] == 7, got
        assert got["eight_bit_codes_wrong"], got
    if got["bits"] is not None:
        assert got["bits"] == 7 and got["path"] == "fbgemm", got
