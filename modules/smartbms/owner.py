# What the owner asks of the device, through the web API or MQTT (the ctx API of
# docs/design.md): an override, a timeout reset, clearing alarms, new settings (and the parts
# they re-configure: relay pin, LED, BMS link, WiFi, MQTT and alerts), setup mode, a reboot,
# a BMS scan and pausing the link for a capture. App (smartbms.app) builds on it and owns
# every part these reach.
import asyncio

from smartbms import clock

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

REBOOT_DELAY_MS = const(1500)  # real time for the answer to leave before a requested reboot
SETUP_MODE_S = const(900)  # setup mode (password reset allowed) ends after 15 min
_SETUP_CHECK_MS = const(1000)


class Owner:
    def set_override(self, mode, minutes):
        self.controller.set_override(mode, minutes, clock.now())
        self.events.add("override", "override ended: automatic control" if mode == "auto"
                        else "manual %s for %s min" % (mode, minutes))
        self.control_step()

    def reset_timeout(self):
        """Ends a timeout hold; False (nothing logged) when none is active."""
        if not self.controller.timeout_active():
            return False
        self.controller.reset_timeout(clock.now())
        self.events.add("charge", "charge timeout reset by the user")
        self.control_step()
        return True

    def clear_alarms(self):
        """The owner cleared the alarms (after fixing the cause): latched ones end and the BMS
        charge MOSFET is switched back on; a cause still there raises its alarm again."""
        names = [a["name"] for a in self.controller.alarms_info(clock.now())]
        self.controller.clear_alarms(clock.now())
        self.events.add("fault", "alarms cleared by the user: %s" % (", ".join(names) or "none"))
        self.control_step()
        return names

    def set_allow(self, allow, minutes=None):
        self.controller.set_allow(allow, minutes, clock.now())
        self.events.add("charge", "charging %s%s" % ("allowed" if allow else "not allowed",
                                                    " for %s min" % minutes if minutes else ""))
        self.control_step()

    def apply_settings(self, partial):
        """Validate and store (SettingsError changes nothing), then re-configure the parts."""
        changed = self.settings.update(partial)
        if not changed:
            return changed
        if "relay_pin" in changed or "relay_active_low" in changed:
            on = self.controller.relay and not self.safe_mode
            self.relay_set(False, "relay pin settings changed")
            self.relay = self._make_relay()
            self.relay_set(on, self.controller.reason)
        if "led_pin" in changed:
            self.board.set_led_pin(self.settings["led_pin"])
        if self.link is not None and hasattr(self.link, "reconfigure") and any(
                k.startswith("bms_") or k == "poll_interval_s" for k in changed):
            self.link.reconfigure()
        if "wifi_ssid" in changed or "wifi_password" in changed or "hostname" in changed:
            self.wifi.reconnect()
        mq = al = False
        for k in changed:
            mq = mq or k.startswith("mqtt_") or k == "hostname"
            al = al or k.startswith("alert_")
        if mq or al:
            self._integrations(mq)
        return changed

    def _integrations(self, mqtt_changed=True):
        """MQTT and alerts start (or restart with new settings, or stop) here. Imported only
        when turned on: with both off they take no heap (docs/design.md)."""
        if self.safe_mode or not self._tasks:
            return
        s = self.settings
        mq = self.mqtt
        if mq is not None and mq.done:
            mq = self.mqtt = None
        if mq is not None:
            if mqtt_changed:
                mq.reconfigure()
        elif s["mqtt_enabled"]:
            from smartbms.mqtt.client import Mqtt

            self.mqtt = Mqtt(self)
            self._spawn("mqtt", self.mqtt.run(), forever=False)
        if self.alerts is None and s["alert_url"]:
            from smartbms.alerts import Alerts

            self.alerts = Alerts(self)  # picks the alerts, posts them and hands them to MQTT
        if self.alerts is not None:
            self.events.listener = self.alerts.listener
        else:  # MQTT alone picks them for its events topic (none when it is off)
            self.events.listener = self.mqtt.listener if self.mqtt is not None else None

    async def pause_link(self, timeout_ms=20000):
        """Close the BMS link and wait until it let go of the radio (for a capture); charge
        control sees no BMS data until resume_link()."""
        self.link_paused = True
        link = self.link
        if link is None:
            return
        await link.close()
        t0 = clock.ticks_real_ms()
        while not self._link_idle:
            if clock.real_ms_since(t0) > timeout_ms:
                raise RuntimeError("the BMS link did not stop")
            await clock.sleep_real_ms(50)

    def resume_link(self):
        self.link_paused = False

    async def scan_bms(self):
        if self.link is None:
            return []
        return await self.link.scan()

    def request_reboot(self, reason):
        if self._reboot_pending is None:
            self.events.add("reboot", "reboot requested: %s" % reason)
            self._reboot_pending = asyncio.create_task(self._reboot_later())

    async def _reboot_later(self):
        await clock.sleep_real_ms(REBOOT_DELAY_MS)  # real time: let the answer leave
        self.shutdown()
        self._machine.reset()

    def enter_setup_mode(self):
        if self.setup_mode:
            return
        self.setup_mode = True
        self.events.add("setup", "setup mode: access point %s" % self.wifi.ap_ssid())
        self.wifi.enter_setup_mode()
        if self._tasks:
            self._spawn("setup", self.setup_window(), forever=False)

    def end_setup_mode(self, why):
        """Setup mode lets anyone on the access point set a new admin password: it ends once
        a password is set or after SETUP_MODE_S."""
        if not self.setup_mode:
            return
        self.setup_mode = False
        self.wifi.setup_mode = False
        self.events.add("setup", "setup mode ended: %s" % why)

    async def setup_window(self):
        until = clock.now() + SETUP_MODE_S
        while self.setup_mode:
            if clock.now() >= until:
                self.end_setup_mode("%d min passed" % (SETUP_MODE_S // 60))
                return
            await clock.sleep_ms(_SETUP_CHECK_MS)
