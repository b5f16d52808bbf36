# ablate: every target sets itself up (a project virtual environment with `pip install -e .[dev]`).
VENV   ?= .venv
PY     := $(VENV)/bin/python
ROOT   ?= runs
SWEEP  ?= encoder=siglip,clip resolution=224,336,448

.PHONY: install sweep test test-fast report bench slurm-up slurm-down clean

install: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

## The default sweep: SigLIP and CLIP at three resolutions, tiny scale, on this machine.
sweep: install
	ABLATE_ROOT=$(ROOT) $(PY) -m ablate -m $(SWEEP)

## Every test, with a local SLURM cluster brought up and down around the SLURM tests.
test: install
	bash scripts/test.sh

## Tests without the SLURM cluster and the slow ones.
test-fast: install
	$(PY) -m pytest -q -m "not slurm and not slow"

report: install
	$(PY) -m ablate.report --root $(ROOT)

bench: install
	$(PY) -m benchmarks

slurm-up:
	bash scripts/slurm/up.sh

slurm-down:
	bash scripts/slurm/down.sh

clean:
	rm -rf $(ROOT) outputs multirun .pytest_cache
