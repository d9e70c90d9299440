# Frozen into the smartbms firmware: the port's standard modules (_boot.py mounts the
# "vfs" partition as littlefs, asyncio, network helpers) and the project itself through
# the top-level manifest (which also requires the parts of aioble the firmware uses).
include("$(PORT_DIR)/boards/manifest.py")
include("$(BOARD_DIR)/../../manifest.py")
