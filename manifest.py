# The project's frozen code, shared by the ESP32 board (boards/SMARTBMS/manifest.py) and the
# host interpreter (sim/unix_variant/manifest.py).
# aioble from micropython-lib (the commit MicroPython pins): only the central role and the
# GATT client, which the BMS link and the scan use (core comes with them).
require("aioble-central")
require("aioble-client")
# The project: the smartbms package, the frozen main.py, microdot
# (vendored from its pinned PyPI release into build/vendor by `make vendor`) and the web UI.
package("smartbms", base_path="modules")
module("main.py", base_path="modules")
# Only the core of microdot: the web layer uses nothing else (no sessions, templates, ...).
package("microdot", files=("__init__.py", "microdot.py"), base_path="build/vendor")
# The web UI, gzipped into bytes literals by scripts/build_assets.py (`make vendor`).
module("webassets.py", base_path="build/gen")
# The relay pin and polarity the C start-up hook latches (scripts/gen_board_config.py).
module("board_config.py", base_path="build/gen")
