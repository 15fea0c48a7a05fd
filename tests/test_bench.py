"""quantcourse.bench: records carry the documented fields. Nothing here asserts a timing."""

from __future__ import annotations

import json

import pytest

from quantcourse import bench, timing

FIELDS = {"case", "device", "shape", "batch", "seconds", "baseline", "baseline_seconds", "ratio"}


def _check(records):
    assert records
    for r in records:
        assert FIELDS <= set(r), r
        assert r["seconds"] > 0 and r["baseline_seconds"] > 0
        assert r["ratio"] == pytest.approx(r["baseline_seconds"] / r["seconds"])


def test_time_paired_returns_two_medians():
    calls = []
    a, b = timing.time_paired(lambda: calls.append("a"), lambda: calls.append("b"), repeat=3,
                             warmup=1)
    assert a > 0 and b > 0
    assert calls == ["a", "b"] * 4  # one warm-up each, then strictly alternating


def test_kernels_suite_records(tmp_path):
    records = bench.bench_kernels("cpu", mib=1, repeat=2, compile_=False)
    _check(records)
    names = [r["case"] for r in records]
    assert any(n.startswith("qc symmetric") for n in names)
    assert any(n.startswith("naive chain") for n in names)


def test_gemm_and_linear_suites_records():
    _check(bench.bench_gemm("cpu", shapes=((3, 40, 24),), repeat=2))
    records = bench.bench_linear("cpu", shapes=((256, 64),), batches=(1, 5), repeat=2)
    _check(records)
    assert {r["batch"] for r in records} == {1, 5}


def test_report_files(tmp_path):
    records = bench.bench_linear("cpu", shapes=((256, 64),), batches=(1, 2), repeat=1)
    records += bench.bench_kernels("cpu", mib=1, repeat=1, compile_=False)
    for r in records:
        r["suite"] = "linear" if "Linear" in r["case"] else "kernels"
    table = bench._markdown(records, "test machine")
    assert table.count("\n| ") == len(records) + 1
    paths = bench._plot(records, tmp_path, "test machine")
    assert {p.name for p in paths} == {"kernels.png", "linear_cpu.png"}
    assert all(p.stat().st_size > 1000 for p in paths)
    json.dumps(records)  # serialisable as results.json


def test_command_line_writes_results(tmp_path, capsys):
    assert bench.main(["kernels", "gemm", "linear", "--small",
                       "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "results.json").read_text())
    _check(data["records"])
    assert {r["suite"] for r in data["records"]} == {"kernels", "gemm", "linear"}
    assert (tmp_path / "results.md").read_text().startswith("Machine: ")
    assert "throughput of a plain copy" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        bench.main(["nonsense"])


def test_gptq_suite_records():
    records = bench.bench_gptq("cpu", shape=(32, 64), rows=96, group_size=32)
    _check(records)
    assert records[0]["case"].startswith("qc.gptq") and records[0]["shape"] == [32, 64]
