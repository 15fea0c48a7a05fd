# quantcourse: every entry point. `make course` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
JUPYTER := $(VENV)/bin/jupyter
# The CPU build of PyTorch; pyproject.toml only asks for torch>=2.4 so learners elsewhere
# can keep the build they have.
TORCH_PIN ?= torch==2.13.0
STAMP  := $(VENV)/.installed
PIP_QUIET := --quiet --disable-pip-version-check
NB     ?= notebooks/[0-9][0-9]_*.ipynb
NBVAL  := --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout=600 -p tests.nbval_claims
# The second CPU family, emulated (DESIGN section 9): AVX2 kernels in ATen and oneDNN, fbgemm's
# AVX2 int8 path (no VNNI, no AVX-512), and MKL's reproducible float32 GEMM.
EMULATE := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 FBGEMM_ENABLE_INSTRUCTIONS=AVX2 MKL_CBWR=COMPATIBLE

.PHONY: help setup course site slides test test-portable test-unit test-nbval claims-spread lab student bench retrain lint execute clean

help:
	@echo "make course   set up, execute every notebook into build/executed/, build the site and slides"
	@echo "make site     render the notebooks' stored outputs as a static site in build/site/"
	@echo "make slides   every notebook as an offline reveal.js deck in build/slides/"
	@echo "make test     set up, run unit tests, the quick papermill pass and strict nbval"
	@echo "make test-portable  the unit tests and strict nbval again, under the emulated second CPU"
	@echo "make claims-spread  run notebooks on 3 CPU configurations, tabulate each claim's spread"
	@echo "make lab      open JupyterLab on the notebooks (kernel: quantcourse)"
	@echo "make student  write the student copy (solutions stubbed) to build/student/"
	@echo "make bench    measure this machine: python -m quantcourse.bench"
	@echo "make retrain  retrain the shipped digits CNN weights (seeded; prints test accuracy)"
	@echo "make lint     ruff on the package, tests and notebooks"
	@echo "make execute  re-execute notebooks in place (maintainers; NB=notebooks/03_*.ipynb for one)"
	@echo "make clean    remove build/ and caches (keeps .venv)"

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install $(PIP_QUIET) --upgrade "pip>=23.1" 2>&1 | grep -v "^WARNING: Location" || true
	$(PIP) install $(PIP_QUIET) "$(TORCH_PIN)" 2>&1 | grep -v "^WARNING: Location" || true
	$(PIP) install $(PIP_QUIET) -e ".[dev,deploy]" 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import torch, quantcourse, nbval, papermill, hypothesis" 
	$(PY) -m ipykernel install --sys-prefix --name quantcourse --display-name "Python (quantcourse)" >/dev/null
	@touch $(STAMP)

setup: $(STAMP)

course: $(STAMP)
	$(PY) -m tools.run_notebooks --mode full --out build/executed
	$(MAKE) --no-print-directory site slides
	@echo "executed notebooks: build/executed/   site: build/site/index.html   slides: build/slides/"

site: $(STAMP)
	$(PY) -m tools.site build/site

slides: $(STAMP)
	$(PY) -m tools.slides build/slides

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests
	$(PY) -m pytest -q -p no:cacheprovider $(NBVAL) $(NB)

test-portable: $(STAMP)
	env $(EMULATE) $(PY) -m pytest -q -p no:cacheprovider tests -m "not notebook and not site"
	env $(EMULATE) $(PY) -m pytest -q -p no:cacheprovider $(NBVAL) $(NB)

claims-spread: $(STAMP)
	$(PY) -m tools.claim_spread $(wildcard $(NB))

test-unit: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests -m "not notebook"

test-nbval: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider $(NBVAL) $(NB)

lab: $(STAMP)
	$(JUPYTER) lab --ip=127.0.0.1 --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

student: $(STAMP)
	$(PY) -m tools.student notebooks build/student

bench: $(STAMP)
	$(PY) -m quantcourse.bench

retrain: $(STAMP)
	$(PY) -W ignore::RuntimeWarning -m quantcourse.models retrain

lint: $(STAMP)
	$(VENV)/bin/ruff check quantcourse tests tools notebooks

execute: $(STAMP)
	cd notebooks && for nb in $(patsubst notebooks/%,%,$(wildcard $(NB))); do \
	  echo "executing $$nb"; \
	  ../$(JUPYTER) nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.kernel_name=quantcourse --ExecutePreprocessor.timeout=600 $$nb || exit 1; \
	done

clean:
	rm -rf build .pytest_cache .hypothesis .ruff_cache
	find . -name __pycache__ -not -path "./$(VENV)/*" -prune -exec rm -rf {} +
