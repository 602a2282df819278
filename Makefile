# CAS: make test (the whole suite), make demo (the main job on a real dump).
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: deps test demo realdump bench fuzz clean

deps:
	@sh tests/install-deps

$(VENV)/.installed: setup.cfg pyproject.toml
	@sh tests/install-deps
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e . pytest aiosmtpd python-snappy
	touch $@

test: deps $(VENV)/.installed
	$(PY) -m pytest -q -p no:cacheprovider tests

realdump: $(VENV)/.installed
	$(PY) tests/realdump/build.py

demo: deps $(VENV)/.installed
	$(PY) tests/demo.py

bench: $(VENV)/.installed
	for b in bench/*; do [ -x "$$b" ] && $(PY) "$$b"; done

fuzz: $(VENV)/.installed
	CAS_FUZZ_CASES=10000 $(PY) -m pytest -q -p no:cacheprovider tests/test_ident_fuzz.py tests/test_printk.py

clean:
	rm -rf $(VENV) build lib/*.egg-info demo
