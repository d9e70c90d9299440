// smartbms board: ESP32 with 4 MB flash, a charger relay and the BOOT button.

#define MICROPY_HW_BOARD_NAME "smartbms"
#define MICROPY_HW_MCU_NAME "ESP32"

// Charger relay. The seed hardware is an active-low relay module on GPIO33 (the relay pulls
// in when the pin is low). Other wiring: `make firmware RELAY_GPIO=N RELAY_ACTIVE_LOW=0|1`.
// Both values come from build/gen/board_config.py (mpconfigboard.cmake turns them into
// compile definitions), the module frozen for Python too: the settings accept only them, so
// C start-up and Python always agree on the pin and on OFF. No default here on purpose
// (board_init.c refuses to build without them).
#define SMARTBMS_RELAY_OFF_LEVEL (SMARTBMS_RELAY_ACTIVE_LOW ? 1 : 0)

// Runs before the MicroPython task starts: the earliest point to make the relay safe.
void smartbms_board_startup(void);
#define MICROPY_BOARD_STARTUP smartbms_board_startup
