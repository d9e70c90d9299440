// smartbms board: ESP32 with 4 MB flash, a charger relay and the BOOT button.

#define MICROPY_HW_BOARD_NAME "smartbms"
#define MICROPY_HW_MCU_NAME "ESP32"

// Charger relay. The seed hardware is an active-low relay module: the relay pulls in
// when GPIO33 is low. For an active-high module build with
//   make firmware RELAY_ACTIVE_LOW=0
// (mpconfigboard.cmake turns it into a compile definition) and set
// "relay_active_low": false in the settings, so C start-up and Python agree on OFF.
#define SMARTBMS_RELAY_GPIO (33)
#ifndef SMARTBMS_RELAY_ACTIVE_LOW
#define SMARTBMS_RELAY_ACTIVE_LOW (1)
#endif
#define SMARTBMS_RELAY_OFF_LEVEL (SMARTBMS_RELAY_ACTIVE_LOW ? 1 : 0)

// Runs before the MicroPython task starts: the earliest point to make the relay safe.
void smartbms_board_startup(void);
#define MICROPY_BOARD_STARTUP smartbms_board_startup
