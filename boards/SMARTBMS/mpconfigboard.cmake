# smartbms: a plain 4 MB ESP32 with BLE (NimBLE), two OTA slots and the project frozen in.
set(IDF_TARGET esp32)

# Read the firmware version from its single source (modules/smartbms/version.py) and
# generate the sdkconfig fragment that writes it into the image's app descriptor. The
# partition table needs an absolute path because relative names resolve against the port.
get_filename_component(SMARTBMS_ROOT ${MICROPY_BOARD_DIR}/../.. ABSOLUTE)
file(STRINGS ${SMARTBMS_ROOT}/modules/smartbms/version.py SMARTBMS_VERSION_LINE REGEX "^VERSION = ")
string(REGEX REPLACE "^VERSION = \"([^\"]+)\".*$" "\\1" SMARTBMS_VERSION "${SMARTBMS_VERSION_LINE}")
if(NOT SMARTBMS_VERSION MATCHES "^[0-9]+\\.[0-9]+\\.[0-9]+")
    message(FATAL_ERROR "smartbms: cannot read VERSION from modules/smartbms/version.py")
endif()
file(WRITE ${CMAKE_BINARY_DIR}/sdkconfig.smartbms_generated
    "CONFIG_APP_PROJECT_VER_FROM_CONFIG=y\n"
    "CONFIG_APP_PROJECT_VER=\"${SMARTBMS_VERSION}\"\n"
    "CONFIG_PARTITION_TABLE_CUSTOM_FILENAME=\"${MICROPY_BOARD_DIR}/partitions.csv\"\n"
)
message(STATUS "smartbms version ${SMARTBMS_VERSION}")

set(SDKCONFIG_DEFAULTS
    boards/sdkconfig.base
    ${SDKCONFIG_IDF_VERSION_SPECIFIC}
    boards/sdkconfig.ble
    ${MICROPY_BOARD_DIR}/sdkconfig.board
    ${CMAKE_BINARY_DIR}/sdkconfig.smartbms_generated
)

# Relay polarity for the C start-up hook (mpconfigboard.h defaults to active-low).
if(DEFINED ENV{SMARTBMS_RELAY_ACTIVE_LOW})
    list(APPEND MICROPY_DEF_BOARD SMARTBMS_RELAY_ACTIVE_LOW=$ENV{SMARTBMS_RELAY_ACTIVE_LOW})
endif()

# Drives the relay GPIO to OFF before any Python runs (see board_init.c).
set(MICROPY_SOURCE_BOARD ${MICROPY_BOARD_DIR}/board_init.c)

set(MICROPY_FROZEN_MANIFEST ${MICROPY_BOARD_DIR}/manifest.py)
