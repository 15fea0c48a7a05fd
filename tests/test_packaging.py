"""The set-up files agree with each other and with DESIGN's layout."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

import quantcourse as qc

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject_reqs() -> dict[str, str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = data["project"]["optional-dependencies"]
    reqs = list(data["project"]["dependencies"]) + list(extras["dev"]) + list(extras["deploy"])
    return {_name(r): r.replace(" ", "") for r in reqs}


def _environment_reqs() -> dict[str, str]:
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    reqs = {}
    for line in lines[start + 1 :]:
        item = line.strip()
        if not item.startswith("- ") or item == "- -e .":
            continue
        req = item[2:].strip()
        reqs[_name(req)] = req.replace(" ", "")
    return reqs


def test_environment_yml_matches_pyproject():
    py, env = _pyproject_reqs(), _environment_reqs()
    assert set(py) == set(env), f"only in pyproject: {set(py) - set(env)}; only in environment.yml: {set(env) - set(py)}"
    differ = {k: (py[k], env[k]) for k in py if py[k] != env[k]}
    assert not differ, f"version pins differ: {differ}"


def test_required_dependencies_present():
    needed = {"torch", "numpy", "matplotlib", "jupyterlab", "nbval", "papermill", "scikit-learn",
              "tqdm", "safetensors", "pytest", "hypothesis", "ruff"}
    assert needed <= set(_pyproject_reqs())


def test_test_and_build_tools_are_not_runtime_dependencies():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    runtime = {_name(r) for r in data["project"]["dependencies"]}
    dev = {_name(r) for r in data["project"]["optional-dependencies"]["dev"]}
    tooling = {"nbval", "papermill", "pytest", "hypothesis", "ruff"}
    assert not tooling & runtime, f"test/build tools in the runtime dependencies: {tooling & runtime}"
    assert tooling <= dev, f"missing from the dev extra: {tooling - dev}"
    # what `make lab` and `make course` need besides papermill stays installable without extras
    assert {"jupyterlab", "ipykernel", "nbformat", "nbconvert"} <= runtime
    extras = re.search(r'-e "\.\[([a-z,]+)\]"', (ROOT / "Makefile").read_text()).group(1)
    assert "dev" in extras.split(","), "make setup does not install the dev extra"


def test_build_tooling_lives_outside_the_runtime_package():
    assert not (ROOT / "quantcourse" / "checks" / "student.py").exists()
    for path in sorted((ROOT / "quantcourse").rglob("*.py")):
        text = path.read_text()
        for tool in ["papermill", "nbval", "pytest", "hypothesis"]:
            assert not re.search(rf"^\s*(import|from) {tool}\b", text, re.M), \
                f"{path.relative_to(ROOT)} imports {tool}"
    make = (ROOT / "Makefile").read_text()
    for module in ["tools.run_notebooks", "tools.site", "tools.slides", "tools.student"]:
        assert f"-m {module} " in make, f"the Makefile does not run {module}"
    assert "-m tests." not in make


def test_torch_requirement_is_permissive():
    assert _pyproject_reqs()["torch"] == "torch>=2.4"


def test_parser_detects_a_mismatch(tmp_path, monkeypatch):
    text = (ROOT / "environment.yml").read_text().replace("tqdm>=4.65", "tqdm>=9.9")
    (tmp_path / "environment.yml").write_text(text)
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    assert _environment_reqs()["tqdm"] == "tqdm>=9.9"


def test_public_names_exist_and_are_documented():
    for name in qc.__all__:
        obj = getattr(qc, name)
        if callable(obj):
            assert (obj.__doc__ or "").strip(), f"{name} has no docstring"


def test_every_module_names_its_notebook():
    for path in sorted((ROOT / "quantcourse").glob("*.py")):
        if path.name.startswith("_"):
            continue
        doc = path.read_text().split('"""')[1]
        assert ".ipynb" in doc or path.name == "bench.py", f"{path.name}: docstring names no notebook"


def test_gitignore_covers_generated_paths():
    ignored = (ROOT / ".gitignore").read_text().split()
    for entry in [".venv/", "build/", ".pytest_cache/", ".hypothesis/", ".ipynb_checkpoints/"]:
        assert entry in ignored


def test_the_emulated_cpu_is_defined_the_same_in_make_and_in_the_spread_tool():
    from tools.claim_spread import CONFIGS

    make = (ROOT / "Makefile").read_text()
    line = re.search(r"^EMULATE\s*:=\s*(.+)$", make, re.M).group(1)
    assert dict(kv.split("=", 1) for kv in line.split()) == CONFIGS["avx2"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test\n" in ci and "make test-portable" in ci


def test_make_lab_starts_as_root_on_localhost_with_a_token():
    lab = re.search(r"^lab:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert "--ip=127.0.0.1" in lab and "--allow-root" in lab
    assert "token" not in lab.lower() and "password" not in lab.lower()  # auth left at its default
