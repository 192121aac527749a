# flashcache: `make run` starts the main job on config/default.toml, `make test` runs the tests.
# Both set up .venv (Debian packages via apt when missing, the cffi build) on first use.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CONFIG ?= config/default.toml
SRC    := pyproject.toml setup.py $(filter-out %_c.c,$(wildcard flashcache/*.c flashcache/*.h flashcache/*/_build.py flashcache/*/*.c flashcache/*/*.h engines/*.c engines/*.h engines/*/*_build.py engines/*/*.c engines/*/*.h))

.PHONY: run test lint test-slow test-vm test-all bench bench-server clean setup

setup: $(STAMP)

$(STAMP): $(SRC) tools/bootstrap.sh
	@tools/bootstrap.sh

# The server on the config's [server] address (127.0.0.1:11211, metrics :9150); Ctrl-C stops it
# cleanly. `flashcache check` is the old device + cache self-check.
# netcat-openbsd: for the README's first exchange with the server (`nc -q1`); the server needs nothing more
run: $(STAMP)
	@tools/bootstrap.sh netcat-openbsd
	$(VENV)/bin/flashcache serve --config $(CONFIG)

# nvme-cli: the nvme-cli JSON/text golden tests re-run Debian's nvme-cli against captures;
# memcached, libmemcached-tools, nutcracker: the server's compatibility and scale-out tests
test: $(STAMP)
	@tools/bootstrap.sh nvme-cli memcached libmemcached-tools nutcracker
	$(PY) -m pytest -q

# ruff (rules in pyproject.toml) over the repo and mypy over engines/ and flashcache/; both
# come with the test extra. .ci/run fails on any finding.
lint: $(STAMP)
	$(VENV)/bin/ruff check --no-cache .
	$(VENV)/bin/mypy

# Experiments and long property runs (marked slow).
test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# NVMe passthrough tests inside a throwaway VM with an emulated FDP SSD (tools/nvme-vm).
test-vm: $(STAMP)
	tools/run-vm-tests

test-all: test test-slow test-vm

bench: $(STAMP)
	@tools/bootstrap.sh fio
	$(PY) tools/bench_io.py

# flashcache serve against memcached, memaslap driving both in the same run
bench-server: $(STAMP)
	@tools/bootstrap.sh memcached libmemcached-tools
	$(PY) tools/bench_server.py

clean:
	rm -rf $(VENV) build *.egg-info flashcache/_*_c.*.so flashcache/*/_*_c.*.so flashcache/*/_*_c.c engines/_*_c.*.so engines/_*_c.c engines/*/_*_c.*.so engines/*/_*_c.c var
