# Frozen into the smartbms firmware: the port's standard modules (_boot.py mounts the
# "vfs" partition as littlefs, asyncio, network helpers), aioble from micropython-lib,
# and the project itself through the top-level manifest.
include("$(PORT_DIR)/boards/manifest.py")
require("aioble")
include("$(BOARD_DIR)/../../manifest.py")
