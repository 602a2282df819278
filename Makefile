# CAS: make test (the whole suite), make demo (the main job on a real dump),
# make install (the commands and man pages into ~/.local, or PREFIX).
PYTHON ?= python3
VENV   ?= .venv
PYTEST_ARGS ?=
PY      = $(VENV)/bin/python
PREFIX ?= $(HOME)/.local
COMMANDS = $(notdir $(wildcard bin/*))
PAGES    = $(wildcard man/*.[157])
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: deps test demo realdump bench fuzz screenshots clean manpages install uninstall install-system install-data rpm deb

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
	$(PY) -m pytest -q -p no:cacheprovider --durations=15 $(PYTEST_ARGS) tests

realdump: $(VENV)/.installed
	$(PY) tests/realdump/build.py

demo: deps $(VENV)/.installed manpages
	$(PY) tests/demo.py

bench: $(VENV)/.installed
	for b in bench/*; do [ -x "$$b" ] && $(PY) "$$b"; done

# cas-web's job list and a report, from the browser tests over real jobs (needs the real
# dump, chromium and chromedriver): doc/screenshots/jobs.png and report.png
screenshots: deps $(VENV)/.installed
	mkdir -p doc/screenshots
	CAS_SCREENSHOTS=$(CURDIR)/doc/screenshots $(PY) -m pytest -q -p no:cacheprovider \
	    tests/test_web.py -k "test_list_shows_the_three_states or test_report_page"

fuzz: $(VENV)/.installed
	CAS_FUZZ_CASES=10000 $(PY) -m pytest -q -p no:cacheprovider tests/test_ident_fuzz.py tests/test_printk.py tests/test_record_fuzz.py

# Packaging: the RPM installs everything with "make install-system", the Debian package
# installs the Python part with pybuild and the rest with "make install-data".
DESTDIR  ?=
SITELIB  ?= $(PREFIX)/lib/python3/dist-packages
UNITDIR  ?= /lib/systemd/system
ZSHDIR   ?= $(PREFIX)/share/zsh/vendor-completions
VERSION   = $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' lib/caslib/__init__.py)

# PREFIX is given by cas.spec and debian/rules (its default above is ~/.local)
install-system: install-data
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(SITELIB) $(DESTDIR)$(PREFIX)/share/man/man1 \
	    $(DESTDIR)$(PREFIX)/share/man/man5 $(DESTDIR)$(PREFIX)/share/man/man7 $(DESTDIR)$(PREFIX)/share/doc/cas/examples
	for c in $(COMMANDS); do \
	    sed '1s|^#!.*python3.*|#!/usr/bin/python3|' bin/$$c > $(DESTDIR)$(PREFIX)/bin/$$c; \
	    chmod 755 $(DESTDIR)$(PREFIX)/bin/$$c; done
	cd lib && find caslib -name __pycache__ -prune -o -type f ! -name '*.pyc' -print \
	    | while read f; do install -D -m 644 "$$f" "$(DESTDIR)$(SITELIB)/$$f"; done
	install -m 644 man/*.1 $(DESTDIR)$(PREFIX)/share/man/man1/
	install -m 644 man/*.5 $(DESTDIR)$(PREFIX)/share/man/man5/
	install -m 644 man/*.7 $(DESTDIR)$(PREFIX)/share/man/man7/
	install -m 644 etc/cas.conf.example etc/cas.conf.minimal $(DESTDIR)$(PREFIX)/share/doc/cas/examples/
	# as setup.cfg's data_files (the .deb gets them from pybuild): the units as examples too
	for u in etc/systemd/*.service etc/systemd/*.timer; do \
	    [ ! -e "$$u" ] || install -D -m 644 "$$u" $(DESTDIR)$(PREFIX)/share/doc/cas/examples/systemd/$${u##*/}; done

install-data:
	install -D -m 644 etc/cas.conf $(DESTDIR)/etc/cas.conf
	install -d $(DESTDIR)/etc/cas/snippets.d $(DESTDIR)$(PREFIX)/share/cas/snippets
	install -m 644 lib/caslib/crashrun/snippets/[0-9]* $(DESTDIR)$(PREFIX)/share/cas/snippets/
	install -D -m 644 completion/cas.bash $(DESTDIR)$(PREFIX)/share/bash-completion/completions/cas
	for c in $(filter-out cas,$(COMMANDS)); do \
	    ln -sf cas $(DESTDIR)$(PREFIX)/share/bash-completion/completions/$$c; done
	install -D -m 644 completion/_cas $(DESTDIR)$(ZSHDIR)/_cas
	for u in etc/systemd/*.service etc/systemd/*.timer; do \
	    [ ! -e "$$u" ] || install -D -m 644 "$$u" $(DESTDIR)$(UNITDIR)/$${u##*/}; done

# On a Debian host the RPM database is empty: build requirements are checked by apt.
RPMDEPS = $(shell rpm -q rpm >/dev/null 2>&1 || echo --nodeps)

# cas-<version>.tar.gz of this tree for rpmbuild, then the noarch RPM into dist/
rpm:
	rm -rf build/rpm && mkdir -p build/rpm/SOURCES dist
	tar -czf build/rpm/SOURCES/cas-$(VERSION).tar.gz --transform 's|^\.|cas-$(VERSION)|' \
	    --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./dist --exclude=./debian \
	    --exclude=./demo --exclude=./.pybuild --exclude=__pycache__ --exclude=.pytest_cache .
	env PATH=$(SYSPATH) rpmbuild -bb $(RPMDEPS) --define "_topdir $(CURDIR)/build/rpm" --define "version $(VERSION)" cas.spec
	cp build/rpm/RPMS/noarch/cas-$(VERSION)-*.noarch.rpm dist/

# Packages are built with the system's Python, not the test venv's.
SYSPATH = /usr/sbin:/usr/bin:/sbin:/bin

# dpkg-buildpackage writes to ..; move the results into dist/
deb:
	mkdir -p dist
	env PATH=$(SYSPATH) dpkg-buildpackage -us -uc -b
	mv ../cas_$(VERSION)_all.deb ../cas_$(VERSION)_*.buildinfo ../cas_$(VERSION)_*.changes dist/

clean:
	rm -rf $(VENV) build lib/*.egg-info demo dist .pybuild debian/cas debian/.debhelper \
	    debian/*.debhelper debian/*.debhelper.log debian/*.substvars debian/debhelper-build-stamp \
	    debian/files
