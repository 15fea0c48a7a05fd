"""Gradient compressors (QSGD, sign with error feedback) and the DDP communication hook.

The multi-process tests launch 2 processes with gloo on 127.0.0.1 (a free port, a timeout on
every wait, processes always reaped); they stay in the unit-test run and take about 20-40 s.
Select them with ``-k ddp``.
"""

from __future__ import annotations

import json
import math
import socket
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import quantcourse as qc
from quantcourse.ddp_train import run_torchrun, train

# ----------------------------------------------------------------------- QSGD


def _qsgd_exact_variance(g: torch.Tensor, s: int, chunk: int) -> float:
    """E||Q(g) - g||^2 from the definition: each element is a two-point variable at
    (norm/s) * floor(r) and (norm/s) * (floor(r) + 1) with r = s|g|/norm."""
    total = 0.0
    for block in g.double().split(chunk):
        norm = block.norm()
        r = s * block.abs() / norm
        p = r - r.floor()
        total += float(((norm / s) ** 2 * p * (1 - p)).sum())
    return total


def test_qsgd_is_unbiased_and_its_variance_matches_the_definition():
    g = torch.randn(300, generator=torch.Generator().manual_seed(1)) * torch.linspace(0.1, 3, 300)
    s, chunk, n = 4, 64, 4000
    gen = torch.Generator().manual_seed(2)
    draws = torch.stack([qc.decode_gradient(qc.qsgd_encode(g, s, chunk=chunk, generator=gen))
                         for _ in range(n)]).double()
    var = _qsgd_exact_variance(g, s, chunk)
    # the mean of n draws: each coordinate's error has std <= sqrt(total variance / n)
    assert float((draws.mean(0) - g).abs().max()) < 5 * math.sqrt(var / n)
    measured = float(((draws - g.double()) ** 2).sum(1).mean())
    assert measured == pytest.approx(var, rel=0.06)


@pytest.mark.parametrize("s", [1, 2, 4, 16])
@pytest.mark.parametrize("chunk", [4, 16, 128])
def test_qsgd_variance_bound_holds_and_is_reached_by_flat_gradients(s, chunk):
    bound = min(chunk / s**2, math.sqrt(chunk) / s)
    assert qc.qsgd_variance_bound(chunk, s) == pytest.approx(bound)
    gens = torch.Generator().manual_seed(s * 100 + chunk)
    for g in (torch.randn(chunk, generator=gens), torch.randn(chunk, generator=gens) ** 3,
              torch.ones(chunk), torch.full((chunk,), 0.3)):
        assert _qsgd_exact_variance(g, s, chunk) <= bound * float(g.double().norm() ** 2) * (1 + 1e-9)


def test_qsgd_codes_land_on_the_levels_and_exact_values_survive():
    g = torch.tensor([3.0, -4.0, 0.0])  # norm 5: with s = 5 every |g_i| s / norm is an integer
    c = qc.qsgd_encode(g, 5)
    assert torch.equal(qc.decode_gradient(c), g)
    codes = qc.unpack_bits(c.codes, c.bits, 3, signed=True)
    assert codes.tolist() == [3, -4, 0]
    assert c.scales.tolist() == [5.0]


@pytest.mark.parametrize(("levels", "bits"), [(1, 2), (2, 4), (7, 4), (8, 8), (16, 8), (127, 8)])
def test_bytes_on_the_wire_are_counted_exactly(levels, bits):
    g = torch.randn(1000)
    c = qc.qsgd_encode(g, levels, chunk=128)
    assert c.bits == bits
    assert c.nbytes == math.ceil(1000 * bits / 8) + 4 * 8  # 8 chunks of 128 (the last partial)
    assert c.to_wire().numel() == c.nbytes
    back = c.from_wire(c.to_wire())
    assert torch.equal(qc.decode_gradient(back), qc.decode_gradient(c))
    s = qc.sign_encode(g, chunk=128)
    assert s.nbytes == 125 + 32


def test_sign_uses_the_mean_magnitude_of_each_chunk():
    g = torch.tensor([1.0, -3.0, 0.0, 2.0, -6.0])
    out = qc.decode_gradient(qc.sign_encode(g, chunk=3))
    # chunk [1, -3, 0]: mean |g| = 4/3, zero goes to +; chunk [2, -6]: mean 4
    want = torch.tensor([4 / 3, -4 / 3, 4 / 3, 4.0, -4.0])
    assert torch.allclose(out, want)


def test_error_feedback_carries_what_the_signs_lost():
    gen = torch.Generator().manual_seed(3)
    grads = [torch.randn(200, generator=gen) for _ in range(50)]
    residual, sent = None, torch.zeros(200)
    for g in grads:
        c, residual = qc.sign_ef_encode(g, residual, chunk=32)
        sent += qc.decode_gradient(c)
    # telescoping: everything sent plus what is still held equals everything computed
    assert torch.allclose(sent + residual, torch.stack(grads).sum(0), atol=1e-4)
    # the residual stays of the order of one gradient, not of the sum of 50
    assert float(residual.norm()) < 3 * float(grads[0].norm())


def test_bad_input_is_rejected_before_any_work():
    g = torch.randn(10)
    for levels in (0, -1, 128, 2.0, True):
        with pytest.raises(ValueError, match="levels"):
            qc.qsgd_encode(g, levels)
    with pytest.raises(ValueError, match="chunk"):
        qc.sign_encode(g, chunk=0)
    with pytest.raises(TypeError, match="floating-point"):
        qc.qsgd_encode(torch.arange(10), 4)
    with pytest.raises(ValueError, match="1 NaN or Inf"):
        qc.sign_encode(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="levels"):
        qc.CompressionState(compressor="qsgd", levels=0)
    with pytest.raises(ValueError, match="compressor"):
        qc.CompressionState(compressor="topk")
    with pytest.raises(ValueError, match="residual"):
        qc.sign_ef_encode(g, torch.zeros(3))


class _Bucket:
    def __init__(self, t):
        self.t = t

    def buffer(self):
        return self.t

    def index(self):
        return 0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_hook_rejects_buckets_it_cannot_compress(dtype):
    with pytest.raises(TypeError, match="not supported"):
        qc.compressed_allreduce_hook(qc.CompressionState(), _Bucket(torch.zeros(4, dtype=dtype)))


# ----------------------------------------------------------------------- 2 processes, gloo

TIMEOUT_S = 150


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _grads(model) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()]).clone()


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=timedelta(seconds=60))
    try:
        x, y, _, _ = qc.digits_data()
        grads, local = {}, []
        for mode in ("default", "torch_allreduce_hook", "none", "qsgd127", "sign_ef"):
            torch.manual_seed(0)
            model = DDP(qc.DigitsCNN())
            if mode == "torch_allreduce_hook":
                model.register_comm_hook(None, default_hooks.allreduce_hook)
            elif mode == "none":
                model.register_comm_hook(qc.CompressionState(compressor=None), qc.compressed_allreduce_hook)
            elif mode == "qsgd127":
                model.register_comm_hook(qc.CompressionState(levels=127, chunk=16), qc.compressed_allreduce_hook)
            elif mode == "sign_ef":
                model.register_comm_hook(qc.CompressionState(compressor="sign_ef"), qc.compressed_allreduce_hook)
            opt = torch.optim.SGD(model.parameters(), lr=0.05)
            steps = []
            for step in range(3):
                idx = slice(step * 64 + rank * 32, step * 64 + rank * 32 + 32)
                loss = F.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                steps.append(_grads(model))
                if mode == "default":  # this rank's own gradient, without DDP, for the mean
                    plain = qc.DigitsCNN()
                    plain.load_state_dict(model.module.state_dict())
                    F.cross_entropy(plain(x[idx]), y[idx]).backward()
                    local.append(_grads(plain))
                opt.step()
            grads[mode] = torch.stack(steps)
        local = torch.stack(local)
        everyone = [torch.empty_like(local) for _ in range(world)]
        dist.all_gather(everyone, local)
        mean = torch.stack(everyone).mean(0)

        runs = {str(c): train(c) for c in (None, "qsgd", "sign_ef")}
        if rank == 0:
            d = grads["default"]
            result = {
                "none_equals_default": torch.equal(grads["none"], d),
                "torch_hook_equals_default": torch.equal(grads["torch_allreduce_hook"], d),
                "default_rel_err_to_mean": float((d[0] - mean[0]).norm() / mean[0].norm()),
                "qsgd127_rel_err": float((grads["qsgd127"][0] - mean[0]).norm() / mean[0].norm()),
                "sign_ef_cos": float(F.cosine_similarity(grads["sign_ef"][0], mean[0], dim=0)),
                "runs": runs,
            }
            Path(out_dir, "result.json").write_text(json.dumps(result))
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_result(tmp_path_factory):
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("ddp")
    ctx = mp.start_processes(_ddp_worker, args=(2, _free_port(), str(out)), nprocs=2,
                             join=False, start_method="spawn")
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not ctx.join(timeout=max(1.0, deadline - time.monotonic())):
            if time.monotonic() > deadline:
                pytest.fail(f"the 2-process DDP job ran past {TIMEOUT_S} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
            p.join(timeout=10)
    return json.loads((out / "result.json").read_text())


def test_ddp_hook_without_compression_matches_the_default_allreduce_exactly(ddp_result):
    assert ddp_result["none_equals_default"]
    assert ddp_result["torch_hook_equals_default"]
    assert ddp_result["default_rel_err_to_mean"] < 1e-6  # DDP averages the two ranks' gradients


def test_ddp_compressed_hooks_average_the_ranks(ddp_result):
    # QSGD at 127 levels on chunks of 16: variance bound 16/127^2 ~ 0.001 of ||g||^2 per rank
    assert ddp_result["qsgd127_rel_err"] < 0.1
    assert ddp_result["sign_ef_cos"] > 0.5  # one bit per element, first step (no residual yet)


@pytest.mark.parametrize("name", ["qsgd", "sign_ef"])
def test_ddp_compressed_training_matches_uncompressed(ddp_result, name):
    runs = ddp_result["runs"]
    base, run = runs["None"], runs[name]
    assert run["steps"] == base["steps"] == 440
    assert run["replicas_identical"] and base["replicas_identical"]
    assert base["accuracy"] > 0.96
    assert run["accuracy"] >= base["accuracy"] - 0.01
    assert run["agreement"] >= base["agreement"] - 0.01
    ratio = base["bytes_dense"] / run["bytes_sent"]
    assert ratio > (3.8 if name == "qsgd" else 25)


def test_run_torchrun_fails_clearly_and_never_hangs(tmp_path):
    with pytest.raises(TimeoutError, match="killed"):
        run_torchrun(["--out", str(tmp_path / "r.json")], timeout=0.5)
    with pytest.raises(RuntimeError, match="failed with exit code"):
        run_torchrun(["--compressors", "topk", "--out", str(tmp_path / "r.json")], timeout=120)
    with pytest.raises(ValueError, match="nproc_per_node"):
        run_torchrun([], nproc_per_node=0)
