# Frozen entry point. Setup mode: hold BOOT (GPIO0) for 3 s any time after start (board.py);
# held at power-on it starts the chip's ROM download mode instead, and this never runs.
import asyncio

from smartbms import overrides

overrides.install()  # modules `make deploy` put on the filesystem, before anything imports them
# The firmware's modules live as long as the device: imported into a collected heap they
# settle at its bottom, together, instead of around the garbage of the boot (fragments).
import gc  # noqa: E402

gc.collect()
from smartbms import app  # noqa: E402

# Ctrl-C on the serial console (`make console`, mpremote before every deploy/run) stops the
# firmware into the REPL, relay off. The watchdog is already running and cannot be stopped:
# it gets CONSOLE_WDT_MS, so a forgotten session ends in a reset back into the firmware.
CONSOLE_WDT_MS = 30 * 60 * 1000
console = False
try:
    asyncio.run(app.main())
except KeyboardInterrupt:
    console = True
finally:
    # Only reached on an error the app could not handle itself or on Ctrl-C: make sure the
    # charger is off, then restart, as a device that is not watched must.
    import machine

    off = False
    try:
        from smartbms.settings import Settings

        s = Settings()
        s.load()
        active_low = s["relay_active_low"]
        machine.Pin(s["relay_pin"], machine.Pin.OUT, value=1 if active_low else 0)
        off = True
    finally:
        if console and off:
            machine.WDT(timeout=CONSOLE_WDT_MS)
            print("smartbms stopped from the console, relay off; machine.reset() restarts it "
                  "(the watchdog does in %d min)" % (CONSOLE_WDT_MS // 60000))
        else:
            machine.reset()
