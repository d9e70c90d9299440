// smartbms board start-up: put the charger relay in its OFF state before any Python
// runs, so the relay never clicks on while the firmware boots, updates or crashes.

#include "py/mpconfig.h"
#include "driver/gpio.h"

// From build/gen/board_config.py through mpconfigboard.cmake: the same values the frozen
// Python settings accept, so there is no default to drift from them.
#if !defined(SMARTBMS_RELAY_GPIO) || !defined(SMARTBMS_RELAY_ACTIVE_LOW)
#error "SMARTBMS_RELAY_GPIO/SMARTBMS_RELAY_ACTIVE_LOW come from build/gen/board_config.py (make vendor)"
#endif

void smartbms_board_startup(void) {
    // Latch the OFF level into the output register first, then enable the output driver,
    // so the pin goes from high-impedance straight to OFF with no glitch to ON.
    gpio_reset_pin(SMARTBMS_RELAY_GPIO);
    gpio_set_level(SMARTBMS_RELAY_GPIO, SMARTBMS_RELAY_OFF_LEVEL);
    gpio_config_t relay = {
        .pin_bit_mask = 1ULL << SMARTBMS_RELAY_GPIO,
        .mode = GPIO_MODE_OUTPUT,
        .pull_up_en = SMARTBMS_RELAY_ACTIVE_LOW ? GPIO_PULLUP_ENABLE : GPIO_PULLUP_DISABLE,
        .pull_down_en = SMARTBMS_RELAY_ACTIVE_LOW ? GPIO_PULLDOWN_DISABLE : GPIO_PULLDOWN_ENABLE,
        .intr_type = GPIO_INTR_DISABLE,
    };
    gpio_config(&relay);
    gpio_set_level(SMARTBMS_RELAY_GPIO, SMARTBMS_RELAY_OFF_LEVEL);

    boardctrl_startup();
}
