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

// The Python heap budget. The ESP32 port starts the GC heap at 56 KB and adds areas on
// demand (MICROPY_GC_SPLIT_HEAP_AUTO: 56 -> 112 KB, then the largest free ESP-IDF block) out
// of the same internal RAM that WiFi, NimBLE and lwIP allocate from; past about 112 KB
// NimBLE's next connect can fail to allocate and panic outside Python (see README, "Memory").
// smartbms takes its whole budget at boot, in one area, so it never needs to grow: 96 KB,
// 16 KB short of the stock port's one planned doubling (56 -> 112 KB), which leaves WiFi,
// NimBLE and lwIP more than the stock firmware does. It is the heap the simulator gives the
// firmware and the heap-budget test holds it to under the worst-case workload
// (tests/host/test_heap_budget.py); the firmware collects every 8 KB allocated to keep it in
// large pieces (smartbms/app.py, GC_THRESHOLD). README, "Memory".
#define MICROPY_GC_INITIAL_HEAP_SIZE (96 * 1024)

// Runs before the MicroPython task starts: the earliest point to make the relay safe.
void smartbms_board_startup(void);
#define MICROPY_BOARD_STARTUP smartbms_board_startup
