# What the host interpreter freezes, so code costs no heap, as on the ESP32:
# asyncio (the esp32 port freezes it too), the firmware through the very manifest the
# board includes, and the host stand-ins for the chip's C modules (bluetooth, machine,
# network, esp32), which on the device are C and cost no heap either. Paths are relative
# to this file.
include("$(MPY_DIR)/extmod/asyncio")
include("../../manifest.py")
for _shim in ("bluetooth.py", "machine.py", "network.py", "esp32.py"):
    module(_shim, base_path="../shims")
# The device process's own boot (sim_main: strapping check, bootloader, mount, provisioning)
# and the link to the simulated world.
for _mod in ("worldlink.py",):
    module(_mod, base_path="../shims")
for _mod in ("sim_main.py", "sim_boot.py"):
    module(_mod, base_path="..")
