# CAS: make test (the whole suite), make demo (the main job on a real dump),
# make install (the commands and man pages into ~/.local, or PREFIX).
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PREFIX ?= $(HOME)/.local
COMMANDS = $(notdir $(wildcard bin/*))
PAGES    = $(wildcard man/*.[157])
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: deps test demo realdump bench fuzz clean manpages install uninstall

deps:
	@sh tests/install-deps

$(VENV)/.installed: setup.cfg pyproject.toml
	@sh tests/install-deps
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e . pytest aiosmtpd python-snappy
	touch $@

# the man pages inside the venv: man finds <dir>/../share/man of every PATH entry, so
# after '. .venv/bin/activate', 'man cas-ident' works (links: they follow the checkout)
manpages: $(VENV)/.installed
	@for p in $(PAGES); do d=$(VENV)/share/man/man$${p##*.}; mkdir -p $$d; \
	  ln -sf "$(CURDIR)/$$p" $$d/; done

install: $(VENV)/.installed
	mkdir -p $(PREFIX)/bin
	for c in $(COMMANDS); do ln -sf "$(CURDIR)/$(VENV)/bin/$$c" $(PREFIX)/bin/$$c; done
	for p in $(PAGES); do d=$(PREFIX)/share/man/man$${p##*.}; mkdir -p $$d; \
	  install -m 644 $$p $$d/; done
	@echo "cas: commands linked into $(PREFIX)/bin (they run in $(CURDIR)/$(VENV)),"\
	  "man pages in $(PREFIX)/share/man; $(PREFIX)/bin must be on PATH"

uninstall:
	for c in $(COMMANDS); do rm -f $(PREFIX)/bin/$$c; done
	for p in $(PAGES); do rm -f $(PREFIX)/share/man/man$${p##*.}/$${p#man/}; done

test: deps $(VENV)/.installed manpages
	$(PY) -m pytest -q -p no:cacheprovider --durations=15 tests

realdump: $(VENV)/.installed
	$(PY) tests/realdump/build.py

demo: deps $(VENV)/.installed manpages
	$(PY) tests/demo.py

bench: $(VENV)/.installed
	for b in bench/*; do [ -x "$$b" ] && $(PY) "$$b"; done

fuzz: $(VENV)/.installed
	CAS_FUZZ_CASES=10000 $(PY) -m pytest -q -p no:cacheprovider tests/test_ident_fuzz.py tests/test_printk.py tests/test_record_fuzz.py

clean:
	rm -rf $(VENV) build lib/*.egg-info demo
