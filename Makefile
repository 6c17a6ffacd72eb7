# The two commands of the README: `make demo` (main job on the built-in data) and `make test`.
# Both set up the virtualenv on a fresh machine and are no-ops for set-up once it exists.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.cvkit-installed
# torch/torchvision from the registry (CUDA build; it runs on a CPU). --isolated skips this machine's
# pip configuration, whose local CPU-only torch wheel would break `import torchvision`.
TORCH_PINS := torch==2.13.0 torchvision==0.28.0
PIP_CERT_ARG := $(if $(wildcard /etc/ssl/certs/ca-certificates.crt),--cert /etc/ssl/certs/ca-certificates.crt,)

.PHONY: venv demo test test-all test-cuda lint bench doctor clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch, torchvision" 2>/dev/null || \
	  $(PY) -m pip install -q --isolated $(PIP_CERT_ARG) $(TORCH_PINS)
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m cvkit.cli.main doctor --check
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m cvkit.cli.main demo

test: $(STAMP)
	$(PY) -m pytest -q -n 2

test-all: $(STAMP)
	$(PY) -m pytest -q -n 2 -m "not cuda"

test-cuda: $(STAMP)
	$(PY) -m pytest -q -m cuda

lint: $(STAMP)
	$(VENV)/bin/ruff check cvkit tests benchmarks tools
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) benchmarks/bench_iou.py
	$(PY) benchmarks/bench_nms.py
	$(PY) benchmarks/bench_postprocess.py

doctor: $(STAMP)
	$(PY) -m cvkit.cli.main doctor

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
