# Two commands for a fresh clone:  make quickstart   and   make test
# Both set up .venv first (CPU machine, package registries only; about 2 minutes and 7 GB the first time).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
OUT ?= out/quickstart
export HF_HUB_OFFLINE := 1

# basicsr's setup.py imports torch (hence --no-build-isolation); pyiqa's CLIP needs pkg_resources (setuptools < 81);
# torch 2.14.1 + torchvision 0.29.1 are the pair that import together on this kind of machine.
DEPS := torch==2.14.1 torchvision==0.29.1 basicsr==1.4.2 pyiqa==0.1.16 diffusers==0.42.1 lmdb opencv-python \
	pyyaml pytest scikit-image matplotlib tqdm 'setuptools>=77.0.3,<81'

.PHONY: setup quickstart test bench clean

$(VENV)/.deps-installed: Makefile requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q 'setuptools>=77.0.3,<81'
	$(PIP) install -q --no-build-isolation $(DEPS)
	touch $@

# A regular (non-editable) install, so the wheel's gtplus_compat.pth is in site-packages.
# build/ is removed first: setuptools never deletes stale modules there, and a moved module would ship twice.
setup: $(VENV)/.deps-installed
	rm -rf build
	$(PIP) install -q --no-build-isolation --no-deps --force-reinstall .

quickstart: setup
	$(VENV)/bin/gtplus quickstart $(OUT)

test: setup
	$(VENV)/bin/pytest -q tests

# bench_ornet_quality.py reuses the quickstart's data, restorer and CFMG.
bench: quickstart
	for script in benchmarks/bench_*.py; do $(PY) $$script || exit 1; done

clean:
	rm -rf build *.egg-info out experiments results tb_logger
