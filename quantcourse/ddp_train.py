"""Data-parallel training of the digits CNN with compressed gradients (notebook 18's job).

Introduced in ``18_gradient_quantization.ipynb``. Launch it as a real multi-process job::

    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node=2 -m quantcourse.ddp_train \
        --compressors none,qsgd,sign_ef --out results.json

Each process trains a ``DigitsCNN`` from the same seeded initialization on its own half of
every mini-batch, wrapped in ``DistributedDataParallel`` with
``qc.compressed_allreduce_hook``; rank 0 writes one JSON file with, per compressor, the loss
of every step (averaged over ranks), the bytes each rank sent, test accuracy, agreement and
KL against the shipped float32 model, and whether the replicas ended bit-identical.
The backend is gloo on CPUs; on GPUs across machines the same script runs with
``--backend nccl`` and torchrun's ``--nnodes``/``--rdzv-endpoint`` (not exercised here).

``run_torchrun(args, nproc_per_node=2, timeout=...)`` launches the job from Python (a
notebook) with a timeout, killing every process of the job if it expires, and raises a
``RuntimeError`` with the end of the log if any process fails.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import torch
import torch.nn.functional as F

from ._validate import check_int_in

__all__ = ["main", "run_torchrun", "train"]

NAMES = {"none": None, "qsgd": "qsgd", "sign_ef": "sign_ef"}


def train(
    compressor: str | None,
    *,
    epochs: int = 10,
    batch: int = 16,
    lr: float = 3e-3,
    seed: int = 0,
    levels: int = 16,
    chunk: int = 128,
    optimizer: str = "adam",
) -> dict:
    """Train one DigitsCNN with DDP on the initialized default process group; return its record.

    ``batch`` is per rank (the global batch is ``batch * world_size``). Every rank returns the
    same record (losses averaged over ranks); only rank 0 evaluates (the others get ``None``
    for the measures).
    """
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from .data import digits_data
    from .gradients import CompressionState, compressed_allreduce_hook
    from .models import DigitsCNN, digits_cnn, evaluate_digits

    rank, world = dist.get_rank(), dist.get_world_size()
    x_train, y_train, x_test, y_test = digits_data()
    torch.manual_seed(seed)
    model = DDP(DigitsCNN())
    state = CompressionState(compressor=compressor, levels=levels, chunk=chunk, seed=seed)
    model.register_comm_hook(state, compressed_allreduce_hook)
    if optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)  # the same shuffle on every rank
    n_steps = len(x_train) // (batch * world)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * n_steps)
    losses, bytes_per_step = [], []
    start = time.perf_counter()
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x_train), generator=gen)
        for step in range(n_steps):
            idx = perm[step * batch * world:(step + 1) * batch * world][rank::world]
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx], label_smoothing=0.1)
            opt.zero_grad()
            sent = state.bytes_sent
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            bytes_per_step.append(state.bytes_sent - sent)
    seconds = time.perf_counter() - start

    loss_avg = torch.tensor(losses, dtype=torch.float64)
    dist.all_reduce(loss_avg)
    flat = torch.cat([p.detach().reshape(-1) for p in model.module.parameters()])
    replicas = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(replicas, flat)
    record = {
        "compressor": compressor,
        "steps": len(losses),
        "loss": (loss_avg / world).tolist(),
        "bytes_sent_per_step": bytes_per_step,
        "bytes_sent": state.bytes_sent,
        "bytes_dense": state.bytes_dense,
        "replicas_identical": all(torch.equal(r, replicas[0]) for r in replicas),
        "seconds": seconds,
        "accuracy": None,
        "agreement": None,
        "kl": None,
    }
    if rank == 0:
        net = model.module.eval()
        reference = digits_cnn()
        x_all = torch.cat([x_train, x_test])
        with torch.no_grad():
            logits, ref = net(x_all), reference(x_all)
        record["accuracy"] = evaluate_digits(net)
        record["agreement"] = float((logits.argmax(1) == ref.argmax(1)).double().mean())
        record["kl"] = float(F.kl_div(F.log_softmax(logits, 1), F.log_softmax(ref, 1),
                                      log_target=True, reduction="batchmean"))
    return record


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m quantcourse.ddp_train",
                                description=__doc__.split("\n")[0])
    p.add_argument("--compressors", default="none,qsgd,sign_ef",
                   help="comma-separated, from: none, qsgd, sign_ef")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=16, help="images per rank per step")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--levels", type=int, default=16)
    p.add_argument("--chunk", type=int, default=128)
    p.add_argument("--optimizer", default="adam", choices=("adam", "sgd"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default="gloo")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds any collective may wait")
    p.add_argument("--out", required=True, help="JSON file that rank 0 writes")
    args = p.parse_args(argv)
    bad = [c for c in args.compressors.split(",") if c not in NAMES]
    if bad:
        p.error(f"unknown compressor(s) {bad}; choose from {sorted(NAMES)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of each process: reads RANK, WORLD_SIZE, MASTER_ADDR/PORT (torchrun sets
    them), trains once per compressor, and rank 0 writes the JSON file."""
    import torch.distributed as dist

    args = _parse(argv)
    torch.set_num_threads(1)
    dist.init_process_group(args.backend, timeout=timedelta(seconds=args.timeout))
    try:
        runs = {}
        for name in args.compressors.split(","):
            runs[name] = train(NAMES[name], epochs=args.epochs, batch=args.batch, lr=args.lr,
                               seed=args.seed, levels=args.levels, chunk=args.chunk,
                               optimizer=args.optimizer)
        if dist.get_rank() == 0:
            result = {"world_size": dist.get_world_size(), "backend": args.backend,
                      "epochs": args.epochs, "batch_per_rank": args.batch, "runs": runs}
            tmp = Path(args.out).with_suffix(".tmp")
            tmp.write_text(json.dumps(result))
            tmp.replace(args.out)  # the file appears whole or not at all
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return 0


def _torchrun() -> str:
    path = Path(sys.executable).parent / "torchrun"
    if not path.is_file():
        raise FileNotFoundError(f"run_torchrun: no torchrun next to {sys.executable}")
    return str(path)


def run_torchrun(
    args: Sequence[str],
    *,
    nproc_per_node: int = 2,
    timeout: float = 120.0,
    module: str = "quantcourse.ddp_train",
) -> subprocess.CompletedProcess:
    """Run ``torchrun --standalone --nproc_per_node=N -m module *args`` with a time limit.

    One thread per process (``OMP_NUM_THREADS=1``). On timeout the whole job (torchrun and its
    workers, one process group) is killed and ``TimeoutError`` raised; a non-zero exit raises
    ``RuntimeError`` with the last lines of the log. Returns the completed process.
    """
    check_int_in(nproc_per_node, "nproc_per_node", "run_torchrun")
    if not timeout > 0:
        raise ValueError(f"run_torchrun: timeout must be positive, got {timeout!r}")
    cmd = [_torchrun(), "--standalone", f"--nproc_per_node={nproc_per_node}", "--max-restarts=0",
           "-m", module, *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        tail = "\n".join(out.splitlines()[-15:])
        raise TimeoutError(f"run_torchrun: the job ran past {timeout:g} s and was killed; "
                           f"last output:\n{tail}") from None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if proc.returncode != 0:
        tail = "\n".join(out.splitlines()[-15:])
        raise RuntimeError(f"run_torchrun: the job failed with exit code {proc.returncode}; "
                           f"last output:\n{tail}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, None)


if __name__ == "__main__":
    sys.exit(main())
