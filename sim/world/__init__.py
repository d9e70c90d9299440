"""The simulated world around the device, in a CPython process of its own (see world.py,
radio.py, server.py). Never imported by the device process."""
