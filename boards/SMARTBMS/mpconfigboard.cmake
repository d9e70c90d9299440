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
    boards/sdkconfig.ble
    ${MICROPY_BOARD_DIR}/sdkconfig.board
    ${CMAKE_BINARY_DIR}/sdkconfig.smartbms_generated
)

# The relay GPIO and polarity for the C start-up hook, read from the very module that is
# frozen for Python (build/gen/board_config.py, written by `make vendor` from RELAY_GPIO and
# RELAY_ACTIVE_LOW), so the hook and the settings cannot disagree.
set(SMARTBMS_BOARD_CONFIG ${SMARTBMS_ROOT}/build/gen/board_config.py)
if(NOT EXISTS ${SMARTBMS_BOARD_CONFIG})
    message(FATAL_ERROR "smartbms: ${SMARTBMS_BOARD_CONFIG} is missing; run 'make vendor' (make firmware does it)")
endif()
file(STRINGS ${SMARTBMS_BOARD_CONFIG} SMARTBMS_RELAY_GPIO_LINE REGEX "^RELAY_GPIO = ")
file(STRINGS ${SMARTBMS_BOARD_CONFIG} SMARTBMS_RELAY_AL_LINE REGEX "^RELAY_ACTIVE_LOW = ")
string(REGEX REPLACE "^RELAY_GPIO = ([0-9]+)$" "\\1" SMARTBMS_RELAY_GPIO "${SMARTBMS_RELAY_GPIO_LINE}")
if(SMARTBMS_RELAY_AL_LINE STREQUAL "RELAY_ACTIVE_LOW = True")
    set(SMARTBMS_RELAY_ACTIVE_LOW 1)
elseif(SMARTBMS_RELAY_AL_LINE STREQUAL "RELAY_ACTIVE_LOW = False")
    set(SMARTBMS_RELAY_ACTIVE_LOW 0)
endif()
if(NOT SMARTBMS_RELAY_GPIO MATCHES "^[0-9]+$" OR NOT DEFINED SMARTBMS_RELAY_ACTIVE_LOW)
    message(FATAL_ERROR "smartbms: cannot read RELAY_GPIO/RELAY_ACTIVE_LOW from ${SMARTBMS_BOARD_CONFIG}")
endif()
list(APPEND MICROPY_DEF_BOARD
    SMARTBMS_RELAY_GPIO=${SMARTBMS_RELAY_GPIO}
    SMARTBMS_RELAY_ACTIVE_LOW=${SMARTBMS_RELAY_ACTIVE_LOW}
)
message(STATUS "smartbms relay: GPIO${SMARTBMS_RELAY_GPIO}, active-low=${SMARTBMS_RELAY_ACTIVE_LOW}")

# Drives the relay GPIO to OFF before any Python runs (see board_init.c).
set(MICROPY_SOURCE_BOARD ${MICROPY_BOARD_DIR}/board_init.c)

set(MICROPY_FROZEN_MANIFEST ${MICROPY_BOARD_DIR}/manifest.py)
