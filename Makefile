# CAS: make test (the whole suite), make demo (the main job on a real dump).
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: test demo realdump bench fuzz clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e . pytest aiosmtpd
	touch $@

test: $(VENV)/.installed
	$(PY) -m pytest -q -p no:cacheprovider tests

realdump: $(VENV)/.installed
	$(PY) tests/realdump/build.py

demo: $(VENV)/.installed
	$(PY) tests/realdump/demo.py

bench: $(VENV)/.installed
	for b in bench/*; do [ -x "$$b" ] && $(PY) "$$b"; done

clean:
	rm -rf $(VENV) build lib/*.egg-info demo
