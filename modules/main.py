# Frozen entry point. The BOOT button (GPIO0) held at power-on starts setup mode.
import asyncio

from smartbms import app, board

try:
    asyncio.run(app.main(setup_mode=board.button_held_at_boot()))
finally:
    # Only reached on an error the app could not handle itself: make sure the charger is off
    # and restart, as a device that is not watched must.
    import machine

    try:
        from smartbms.settings import Settings

        s = Settings()
        s.load()
        active_low = s["relay_active_low"]
        machine.Pin(s["relay_pin"], machine.Pin.OUT, value=1 if active_low else 0)
    finally:
        machine.reset()
